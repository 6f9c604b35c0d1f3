"""The package's shape: no import cycle among otel-rl's modules, lower modules never import higher ones, no module
reaches into another through ``sys.modules`` or writes another module's private attributes, no module over 450 lines.

Every module of ``otel_rl`` is parsed with :mod:`ast` (imports inside functions count: a lazy import is still an
import), so the checks hold for code paths no test runs. The last test runs the same checks on a small made-up
package that breaks each rule, to show they can fail.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "otel_rl"
MAX_LINES = 450

#: Modules that must not import lifecycle, directly or through another module: lifecycle drives them.
BELOW_LIFECYCLE = (
    "otel_rl._internal.errors",
    "otel_rl._internal.identity",
    "otel_rl._internal.worker_settings",
    "otel_rl._internal.store",
    "otel_rl._internal.telemetry",
    "otel_rl._internal.exporters",
    "otel_rl._internal.sigterm",
    "otel_rl._internal.provider",
    "otel_rl._internal.metric",
    "otel_rl._internal.histogram",
    "otel_rl._internal.producer",
    "otel_rl._internal.readers",
    "otel_rl._internal.render",
    "otel_rl._internal.scrape",
    "otel_rl._internal.families",
    "otel_rl._internal.http_server",
    "otel_rl._internal.http_handler",
    "otel_rl._internal.config",
    "otel_rl._internal.webconfig",
    "otel_rl._internal.runs",
)

#: Plain modules and the only modules of ours each may import (directly or not).
PLAIN = {
    "otel_rl._internal.errors": set(),
    "otel_rl._internal.worker_settings": set(),
    "otel_rl._internal.identity": {"otel_rl._internal.worker_settings"},
    "otel_rl._internal.sigterm": set(),  # the final export is a callable handed to install()
    "otel_rl._internal.patching": set(),  # post-import hooks know nothing of what they patch in
    "otel_rl._internal.runs": set(),  # which run is this: a context variable and the latest run per algorithm
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The deepest module of ours that importing ``name`` runs (``a.b.c`` where ``c`` is a name: ``a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that ``name`` imports anywhere in its code (also inside functions)."""
    top = next(iter(known)).split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from a.b import c": module a.b.c when c is one, else a name in a.b
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] != top:
                continue
            resolved = _resolve(target, known)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def reachable(graph_: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph_.get(start, ()))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph_.get(name, ()))
    return seen


def cycles(graph_: dict[str, set[str]]) -> dict[frozenset[str], list[str]]:
    """Each strongly connected component of more than one module, with one cycle in it (a path a -> ... -> a)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph_.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph_):
        if node not in index:
            visit(node)
    return {frozenset(component): _cycle_in(graph_, component) for component in components}


def _cycle_in(graph_: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for succ in sorted(graph_[node] & component):
            if succ == start:
                return paths[node] + [start]
            if succ not in paths:
                paths[succ] = paths[node] + [succ]
                todo.append(succ)
    raise AssertionError(f"no cycle in {component}")  # pragma: no cover (Tarjan's components have one)


def _names_of_our_modules(tree: ast.AST, top: str) -> dict[str, str]:
    """Local names bound to modules of ours by imports (``from otel_rl._internal import store as s``: s)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == top):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{'.' * node.level}{node.module or ''}.{alias.name}"
    return bound


def reach_ins(path: Path, top: str = "otel_rl") -> list[str]:
    """``sys.modules`` lookups of our modules, and writes to private attributes of another module of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        # sys.modules["otel_rl..."], sys.modules.get("otel_rl..."), and the same with an f-string
        looked_up = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "sys.modules":
            looked_up = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.modules.get", "sys.modules.pop") \
                and node.args:
            looked_up = node.args[0]
        if looked_up is not None and top in ast.unparse(looked_up):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    modules_here = _names_of_our_modules(tree, top)
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr.startswith("_") \
                    and isinstance(target.value, ast.Name) and target.value.id in modules_here:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(target)} = ...")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in modules_here \
                and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith("_"):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def too_long(root: Path = PACKAGE) -> dict[str, int]:
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules(root).items()}
    return {name: n for name, n in lengths.items() if n > MAX_LINES}


def _each_module() -> Iterator[tuple[str, Path]]:
    yield from modules().items()


# -- the package --------------------------------------------------------------------------------------------------


def test_the_graph_sees_the_package() -> None:
    """A parse that found nothing would pass every check below: the graph has the modules and edges it must."""
    imports_ = graph()
    assert "otel_rl._internal.telemetry" in imports_["otel_rl._internal.lifecycle"]
    assert "otel_rl._internal.lifecycle" in imports_["otel_rl"]
    assert "otel_rl._internal.store" in imports_["otel_rl._internal.recording"]
    assert len(imports_) > 40


def test_no_import_cycle() -> None:
    found = cycles(graph())
    assert not found, "import cycles among otel-rl's modules:\n" + "\n".join(" -> ".join(c) for c in found.values())


@pytest.mark.parametrize("lower", BELOW_LIFECYCLE)
def test_lower_modules_never_import_lifecycle(lower: str) -> None:
    imports_ = graph()
    assert lower in imports_
    assert "otel_rl._internal.lifecycle" not in reachable(imports_, lower), \
        f"{lower} imports otel_rl._internal.lifecycle (directly or through another module), which drives it"


def test_telemetry_imports_nothing_above_it() -> None:
    above = {"otel_rl", "otel_rl._internal.lifecycle", "otel_rl._internal.decorators", "otel_rl.instrumentation",
             "otel_rl._internal.instrumentors"}
    assert not reachable(graph(), "otel_rl._internal.telemetry") & above


@pytest.mark.parametrize("plain", sorted(PLAIN))
def test_plain_modules_import_only_what_they_may(plain: str) -> None:
    got = reachable(graph(), plain)
    assert got <= PLAIN[plain], f"{plain} imports {sorted(got - PLAIN[plain])}; it may import {sorted(PLAIN[plain])}"


@pytest.mark.parametrize("name,path", list(_each_module()), ids=[name for name, _ in _each_module()])
def test_no_reach_in_through_sys_modules_or_private_attributes(name: str, path: Path) -> None:
    assert not reach_ins(path), f"{name} reaches into another module of ours:\n" + "\n".join(reach_ins(path))


def test_no_module_over_450_lines() -> None:
    found = too_long()
    assert not found, f"modules over {MAX_LINES} lines: {found}"


# -- the checks themselves -------------------------------------------------------------------------------------------


def test_the_checks_fail_on_a_package_that_breaks_each_rule(tmp_path: Path) -> None:
    """A made-up ``otel_rl`` with a cycle through a lazy import, a sys.modules reach-in, a write to another
    module's private attribute and a long module: each check finds its case."""
    root = tmp_path / "otel_rl"
    (root / "_internal").mkdir(parents=True)
    (root / "__init__.py").write_text("from otel_rl._internal.lifecycle import start\n")
    (root / "_internal" / "__init__.py").write_text("")
    (root / "_internal" / "telemetry.py").write_text(
        "import sys\n\n"
        "def running():\n"
        "    from otel_rl._internal import lifecycle  # lazy, still an import\n"
        "    return lifecycle.start\n\n"
        "def reach():\n"
        "    return sys.modules.get('otel_rl._internal.lifecycle')\n")
    (root / "_internal" / "lifecycle.py").write_text(
        "from otel_rl._internal import telemetry\n"
        "from . import store\n\n"
        "def start():\n"
        "    telemetry._automatic = True\n"
        "    setattr(store, '_armed', True)\n")
    (root / "_internal" / "store.py").write_text("x = 1\n" * (MAX_LINES + 1))
    imports_ = graph(root)
    assert imports_["otel_rl._internal.lifecycle"] == {"otel_rl._internal.telemetry", "otel_rl._internal.store"}
    assert cycles(imports_) == {frozenset({"otel_rl._internal.lifecycle", "otel_rl._internal.telemetry"}): [
        "otel_rl._internal.lifecycle", "otel_rl._internal.telemetry", "otel_rl._internal.lifecycle"]}
    assert "otel_rl._internal.lifecycle" in reachable(imports_, "otel_rl._internal.telemetry")
    assert len(reach_ins(root / "_internal" / "telemetry.py")) == 1
    assert len(reach_ins(root / "_internal" / "lifecycle.py")) == 2
    assert too_long(root) == {"otel_rl._internal.store": MAX_LINES + 1}


# -- docs/architecture.md names what exists ---------------------------------------------------------------------------

ARCHITECTURE_DOC = PACKAGE.parent / "docs" / "architecture.md"


def _classes() -> dict[str, dict[str, set[str]]]:
    """Class name -> {module file stem -> names defined in the class body}, over the whole package."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
                names |= {t.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                          for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
                names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)  # self.x = ... in a method
                          and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) and n.value.id == "self"}
                found.setdefault(node.name, {})[path.stem] = names
    return found


def stale_names(text: str, root: Path = PACKAGE) -> list[str]:
    """Module files (``name.py``) and ``[module.]Class.member`` names in ``text`` that the package does not have."""
    files = {path.name for path in [*root.rglob("*.py"), *(root.parent / "tests").glob("*.py")]}
    classes = _classes() if root == PACKAGE else {}
    stale = [name for name in sorted(set(re.findall(r"\b(\w+\.py)\b", text))) if name not in files]
    for module, cls, member in set(re.findall(r"`(?:(\w+)\.)?([A-Z]\w+)\.(\w+)`", text)):
        if cls not in classes:
            continue  # not ours (an SDK or prometheus_client name)
        defined = classes[cls]
        if module and module not in defined:
            stale.append(f"{module}.{cls}")
        elif not any(member in names for stem, names in defined.items() if not module or stem == module):
            stale.append(f"{cls}.{member}")
    return sorted(stale)


def test_the_architecture_doc_names_only_modules_and_methods_that_exist() -> None:
    assert not stale_names(ARCHITECTURE_DOC.read_text()), stale_names(ARCHITECTURE_DOC.read_text())


def test_stale_names_finds_a_removed_module_and_method() -> None:
    text = "`bridge.py` and `scrape.Scrape.render_all` and `Scrape.render` and `store.Scrape.render` and `Foo.bar`"
    assert stale_names(text) == ["Scrape.render_all", "bridge.py", "store.Scrape"]
