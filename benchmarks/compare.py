"""Compare two checkouts of otel-rl on run.py: python benchmarks/compare.py BASE_DIR [CANDIDATE_DIR] [--rounds N].

A refactor must not cost speed. This runs ``run.py`` (this checkout's benchmark code) alternately against the
otel_rl package of BASE_DIR and of CANDIDATE_DIR (default: this checkout), in ABBA order over ``--rounds`` rounds,
and prints, per measure, the candidate's median over the base's median. Where a row has an in-run ratio (otel_rl
against prometheus_client or the plain SDK, measured in the same process) that ratio is compared too: it cancels
most of the machine's load, so it is the figure to judge. ``git worktree add --detach /tmp/base <rev>`` gives a base.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once(tree: Path, args: list[str]) -> dict[str, dict]:
    """One run.py run with ``tree``'s otel_rl first on the path; its rows keyed by measure."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "run.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, str(HERE / "run.py"), "--output", str(output), *args], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(output.read_text())["results"]
    return {f"{row['bench']}: {row['measure']}": row for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="checkout whose otel_rl is the reference")
    parser.add_argument("candidate", type=Path, nargs="?", default=HERE.parent, help="checkout to judge")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each runs both twice)")
    parser.add_argument("--full", action="store_true", help="run.py's full sizes instead of --quick")
    parser.add_argument("--only", nargs="+", help="run.py families to run (default: all)")
    parser.add_argument("--json", type=Path, help="write the comparison here as JSON")
    args = parser.parse_args(argv)
    run_args = ([] if args.full else ["--quick"]) + (["--only", *args.only] if args.only else [])
    runs: dict[str, list[dict[str, dict]]] = {"base": [], "candidate": []}
    trees = {"base": args.base.resolve(), "candidate": args.candidate.resolve()}
    for round_ in range(args.rounds):
        for side in ("base", "candidate", "candidate", "base"):
            print(f"round {round_ + 1}: {side}", flush=True)
            runs[side].append(run_once(trees[side], run_args))
    table = []

    def values(measure: str, side: str, field: str) -> list[float]:
        return [r[measure][field] for r in runs[side] if measure in r and r[measure][field] is not None]

    for measure in runs["base"][0]:
        base, cand = values(measure, "base", "value"), values(measure, "candidate", "value")
        if not base or not cand or statistics.median(base) == 0:
            continue
        row = {"measure": measure, "unit": runs["base"][0][measure]["unit"],
               "base": statistics.median(base), "candidate": statistics.median(cand),
               "value_ratio": statistics.median(cand) / statistics.median(base)}
        base_r, cand_r = values(measure, "base", "ratio"), values(measure, "candidate", "ratio")
        if base_r and cand_r and statistics.median(base_r):
            row["in_run_ratio_change"] = statistics.median(cand_r) / statistics.median(base_r)
        table.append(row)
    print(f"{'measure':<80} {'unit':<8} {'base':>10} {'cand':>10} {'cand/base':>9} {'in-run':>7}")
    for row in table:
        in_run = row.get("in_run_ratio_change")
        print(f"{row['measure'][:80]:<80} {row['unit']:<8} {row['base']:>10.4g} {row['candidate']:>10.4g} "
              f"{row['value_ratio']:>9.3f} {'' if in_run is None else f'{in_run:.3f}':>7}")
    if args.json:
        args.json.write_text(json.dumps({"base": str(trees["base"]), "candidate": str(trees["candidate"]),
                                         "rounds": args.rounds, "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
