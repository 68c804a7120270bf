"""Two builds side by side: end-to-end latency of a git revision against the working tree, run by turns.

    .venv/bin/python bench/compare.py                          # HEAD vs the working tree, 3 rounds, new leads
    .venv/bin/python bench/compare.py --base 28eed2f --rounds 4 -- --known-leads
    # about 45 s per run and side; writes bench/results/compare.json (BENCH_RESULTS_SUFFIX applies)

This machine's speed drifts by more between two runs minutes apart than most single changes are worth, so a
before/after pair of runs says little. Here the base revision is checked out into a temporary git worktree
(sharing this checkout's `.venv`; `run.py` puts the worktree's own `src` first), and
`bench/end_to_end.py --poll-ms 100 [extra arguments]` runs from each tree in turn, base first, for
`--rounds` rounds. Each run is a complete, independent benchmark (its own database, processes and machine
check). The results file keeps every run's p50/p90/p99 and per-stage p50 for both sides, the median of each
side, and the per-round differences (working tree - base), so drift shows as rounds moving together and a
change as a difference of constant sign. The worktree and the runs' own results files are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, git, revision_worktree, working_tree_state, write_results


def run_side(tree: Path, suffix: str, extra: list[str]) -> dict[str, Any]:
    """One end-to-end run from `tree`; its figures for poll 100 (the run's own results file is removed)."""
    known = "--known-leads" in extra
    name = "end_to_end_known_leads" if known else "end_to_end"
    env = {**os.environ, "BENCH_RESULTS_SUFFIX": suffix}
    command = [str(ROOT / ".venv" / "bin" / "python"), "bench/end_to_end.py", "--poll-ms", "100", *extra]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"end_to_end.py failed in {tree}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    path = tree / "bench" / "results" / f"{name}{suffix}.json"
    document = json.loads(path.read_text())
    path.unlink()
    phase = document["figures"]["worker_poll_ms_100"]
    latency = phase["latency_webhook_start_to_sendtext"]
    return {
        "p50_ms": latency["p50_ms"],
        "p90_ms": latency["p90_ms"],
        "p99_ms": latency["p99_ms"],
        "stages_p50_ms": [stage["p50_ms"] for stage in phase["stages"].values()],
        "stalls_share_of_wall": phase["cpu"].get("stalls_share_of_wall"),
        "disturbed": document["other_processes"]["phases_disturbed"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="HEAD", help="the revision to compare the working tree against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more arguments for end_to_end.py (after --)")
    args = parser.parse_args()
    base_commit = git("rev-parse", args.base)
    working_tree = working_tree_state()
    with revision_worktree(base_commit) as tree:
        rounds: list[dict[str, Any]] = []
        for n in range(1, args.rounds + 1):
            tag = f"-compare-{os.getpid()}-{n}"
            base = run_side(tree, tag + "-base", args.extra)
            work = run_side(ROOT, tag + "-work", args.extra)
            difference = round(work["p50_ms"] - base["p50_ms"], 2)
            rounds.append({"round": n, "base": base, "work": work, "p50_difference_ms": difference})
            print(
                f"round {n}: base p50 {base['p50_ms']} ms, "
                f"working tree p50 {work['p50_ms']} ms ({difference:+})"
            )
    figures = {
        "base_revision": base_commit,
        "working_tree": working_tree,
        "end_to_end_arguments": ["--poll-ms", "100", *args.extra],
        "rounds": rounds,
        "median_p50_ms": {
            side: statistics.median(r[side]["p50_ms"] for r in rounds) for side in ("base", "work")
        },
        "median_p99_ms": {
            side: statistics.median(r[side]["p99_ms"] for r in rounds) for side in ("base", "work")
        },
        "p50_differences_ms": [r["p50_difference_ms"] for r in rounds],
    }
    print(json.dumps({k: figures[k] for k in ("median_p50_ms", "median_p99_ms", "p50_differences_ms")}))
    write_results("compare", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
