"""No dead code: every private module-level name in the package is used, every phony Makefile target has a rule."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_private_module_level_name_is_used():
    """A module-level ``_name`` (constant, function or class) is referenced somewhere in the package."""
    sources = {path: path.read_text(encoding="utf-8") for path in (ROOT / "otel_rl").rglob("*.py")}
    everything = "\n".join(sources.values())
    unused = []
    for path, source in sources.items():
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [] if node.decorator_list else [node.name]  # a decorator (atexit.register) uses it
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    if len(re.findall(rf"\b{re.escape(name)}\b", everything)) < 2:
                        unused.append(f"{path.relative_to(ROOT)}: {name}")
    assert not unused, unused


def test_every_phony_make_target_has_a_rule():
    """Each target listed in .PHONY is defined (a missing one fails only when someone runs it)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M)
    assert phony
    rules = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    assert set(phony.group(1).split()) - rules == set()
