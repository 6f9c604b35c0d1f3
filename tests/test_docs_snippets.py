"""Every code block of README.md and docs/*.md runs as written.

The convention (also in docs/testing.md):

* a fenced ```python block runs as a script file (``python snippet.py``, so ``__main__`` and the multiprocessing
  start methods behave as for a user), or under pytest when it defines a ``test_`` function (which must pass),
  a ```bash or ```sh block with ``bash -e``; each in a fresh process whose
  working directory is a temporary copy of the repository's tracked files (commands may name ``collector/...``
  or write ``grafana/...``), with ``PYTHONPATH`` pointing at this checkout;
* the Prometheus endpoint of a snippet binds a free loopback port: ``OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1`` and
  ``OTEL_EXPORTER_PROMETHEUS_PORT=0`` are set (a config that names a port wins, so a snippet that does must be
  marked), and nothing else ``OTEL_*`` leaks in from the environment of the test run;
* a block that cannot run here as written (it needs a remote collector, docker, a package index, GPUs, your own
  ``train.py``, or it is a fragment of a larger program) has ``<!-- not-run: <why> -->`` on the line right before
  its fence; blocks in any other language (```yaml, ```text, ```promql, no language) are never run;
* a block marked ``<!-- run-with: collector -->`` on the line right before its fence runs with a real collector
  (the tests' build, remote-writing into a real Prometheus): ``http://collector:4317`` in the block becomes the
  collector's OTLP/gRPC address and ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set to it; the block must exit with 0 and
  deliver at least one non-zero ``rl_training_*`` sample to Prometheus.

A failure names the file, the line of the fence and the block, with the end of its output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from procs import ROOT, push_stack, wait_until

RUN = {"python", "bash", "sh"}
TIMEOUT_S = 240  # the longest block trains SB3 for a few seconds; a loaded 2-core machine is slower
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
_TEST_FUNCTION = re.compile(r"^def test_", re.MULTILINE)
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(?P<why>.*?)-->\s*$")
_RUN_WITH = re.compile(r"^\s*<!--\s*run-with:(?P<what>.*?)-->\s*$")
#: What a run-with marker can ask for.
RUN_WITH = {"collector"}
#: The address the docs give their collector, replaced by the real one in a run-with: collector block.
DOCS_COLLECTOR = "http://collector:4317"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: str | None  # the reason, when marked
    run_with: str | None = None  # what the block runs with (``collector``), when marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, with the not-run marker on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent = len(opening["indent"])
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: a code fence that is never closed"
        marker = _NOT_RUN.match(lines[i - 1]) if i else None
        with_marker = _RUN_WITH.match(lines[i - 1]) if i else None
        code = "\n".join(line[indent:] for line in lines[i + 1:end]) + "\n"
        found.append(Block(path, i + 1, opening["lang"], code, marker["why"].strip() if marker else None,
                           with_marker["what"].strip() if with_marker else None))
        i = end + 1
    return found


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL = [block for path in DOCS for block in blocks(path)]
RUNNABLE = [block for block in ALL if block.lang in RUN and block.not_run is None]


def _workdir(tmp_path: Path) -> Path:
    """A copy of the repository's tracked files, so commands find ``collector/...`` and write nothing here."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    work = tmp_path / "repo"
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return work


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    bin_dir = str(Path(sys.executable).parent)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": os.pathsep.join([bin_dir, env.get("PATH", "")]),
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
        "OMP_NUM_THREADS": "1",  # small networks train faster on one thread, and the test machine is shared
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",  # nothing is downloaded: a block that would, fails at once instead of hanging
    })
    if os.environ.get("OTEL_RL_COLLECTOR"):
        env["OTEL_RL_COLLECTOR"] = os.environ["OTEL_RL_COLLECTOR"]
    return env


def run_block(block: Block, workdir: Path, collector: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the block; with ``collector`` (an OTLP/gRPC address) it pushes there instead of the docs' collector."""
    code, env = block.code, _env()
    if collector is not None:
        code = code.replace(DOCS_COLLECTOR, collector)
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector
    if block.lang == "python" and _TEST_FUNCTION.search(code):
        script = workdir / "test_snippet.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    elif block.lang == "python":
        script = workdir / "snippet.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    # A session of its own: what the block leaves running (Ray, pool workers) is ended with it, by its group id.
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        _end_group(proc.pid)
        out, err = proc.communicate()
        code, err = -9, err + f"\n(killed after {TIMEOUT_S} s)"
    _end_group(proc.pid)
    return subprocess.CompletedProcess(command, code, out, err)


def _end_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def failure(block: Block, result: subprocess.CompletedProcess[str]) -> str:
    tail = (result.stdout[-2000:] + "\n" + result.stderr[-4000:]).strip()
    return (f"{block.where}: this ```{block.lang} block exited with {result.returncode}; fix it, or mark it with "
            f"<!-- not-run: <why> --> on the line before its fence if it truly cannot run here:\n"
            f"{block.code}\n--- end of its output ---\n{tail}")


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.where for block in RUNNABLE])
def test_doc_block_runs(block, tmp_path):
    """The block exits with 0 as written; a run-with: collector block also delivers its values."""
    if block.run_with != "collector":
        result = run_block(block, _workdir(tmp_path))
        assert result.returncode == 0, failure(block, result)
        return
    with push_stack() as (_, prometheus, collector):
        result = run_block(block, _workdir(tmp_path), collector.grpc_endpoint)
        assert result.returncode == 0, failure(block, result)
        wait_until(lambda: prometheus.query('count({__name__=~"rl_training_.+"} > 0)'), 60,
                   what=f"{block.where}: a non-zero rl_training_* sample from the block in Prometheus")


def test_every_marker_precedes_a_block_and_says_why():
    """A not-run marker stands right before a fence and gives a reason; a stray one would hide nothing."""
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            marker = _NOT_RUN.match(line)
            if marker:
                where = f"{path.relative_to(ROOT)}:{i + 1}"
                assert marker["why"].strip(), f"{where}: a not-run marker without a reason"
                assert i + 1 < len(lines) and _FENCE.match(lines[i + 1]), f"{where}: a not-run marker with no fence"
                assert _FENCE.match(lines[i + 1])["lang"] in RUN, f"{where}: marks a block that is never run"
            with_marker = _RUN_WITH.match(line)
            if with_marker:
                where = f"{path.relative_to(ROOT)}:{i + 1}"
                assert with_marker["what"].strip() in RUN_WITH, f"{where}: run-with names none of {RUN_WITH}"
                assert i + 1 < len(lines) and _FENCE.match(lines[i + 1]), f"{where}: a run-with marker with no fence"
                assert _FENCE.match(lines[i + 1])["lang"] in RUN, f"{where}: marks a block that is never run"


def test_the_docs_have_runnable_blocks_of_each_kind():
    """The collection is not empty by accident (a parser that finds nothing would pass every file)."""
    kinds = {block.lang for block in RUNNABLE}
    assert "python" in kinds and kinds & {"bash", "sh"} and len(RUNNABLE) >= 15, [b.where for b in RUNNABLE]


def test_an_unmarked_failing_block_fails_with_its_place(tmp_path):
    """The runner reports a failing block with its file and line, the exit status and its output."""
    doc = tmp_path / "doc.md"
    doc.write_text("Text\n\n```python\nimport sys\nprint('before')\nsys.exit(3)\n```\n\n"
                   "<!-- not-run: needs docker -->\n```bash\ndocker run x\n```\n", encoding="utf-8")
    found = blocks(doc)
    assert [(b.line, b.lang, b.not_run) for b in found] == [(3, "python", None), (10, "bash", "needs docker")]
    work = tmp_path / "work"
    work.mkdir()
    result = run_block(found[0], work)
    assert result.returncode == 3 and "before" in result.stdout
    message = failure(Block(ROOT / "docs" / "x.md", 3, "python", found[0].code, None), result)
    assert message.startswith("docs/x.md:3: this ```python block exited with 3") and "sys.exit(3)" in message
    failing_test = Block(doc, 1, "python", "def test_doc():\n    assert 1 + 1 == 3\n", None)
    result = run_block(failing_test, work)
    assert result.returncode == 1 and "1 failed" in result.stdout
