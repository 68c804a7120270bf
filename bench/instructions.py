"""Instructions per new lead and per AI turn, counted by valgrind (callgrind): a cost that does not drift.

    .venv/bin/python bench/instructions.py                      # the working tree; about 5 minutes
    .venv/bin/python bench/instructions.py --base HEAD~1        # and a revision, side by side; about 10
    # writes bench/results/instructions.json (BENCH_RESULTS_SUFFIX applies)

The end-to-end p50 of this 2-core machine moves by 1-3 ms between runs minutes apart, more than most single
changes are worth, and even a thread's CPU time moved by half between identical runs. Callgrind counts the
instructions a process executes, which do not depend on what else the machine is doing. Each workload runs
in a process of its own under `valgrind --tool=callgrind`, with collection switched on only inside
`sys.call_tracing` (which nothing else calls): imports, set-up and warm-up are not counted.

- `new_lead`: `Container.handle_inbound` for a lead's first message, what `serve`'s conversation actor
  runs for it (the lead path's transaction, then the AI turn's enqueue on Redis);
- `ai_turn`: the `ai_turn` Dramatiq actor called directly for a new talk, what a worker thread runs
  (claim, brain, the reply's transaction and, inline, its first sendText to a FakeEvolutionApi in this
  benchmark's process, whose own work is not counted).

Only the Python side is counted: PostgreSQL's and Redis's work, and the waits, are not (the SQL statements
per operation are listed beside it). Each side runs from its own tree (`--base`: a temporary
git worktree, its `src` first on PYTHONPATH) on a fresh database migrated by that tree, with
PYTHONHASHSEED=0. Two runs of one build in one invocation agree to 0.001 % (`--repeat 2`); two invocations
(another database name, port and time of day) differed by up to 0.45 %, so differences under about 1 % are
not a change's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    PYTHON,
    REDIS_URL,
    ROOT,
    Bench,
    create_agent_in_process,
    git,
    revision_worktree,
    set_fake_evolution_nodelay,
    webhook_body,
    working_tree_state,
    write_results,
)

WORKLOADS = ("new_lead", "ai_turn")
INSTANCE = "bench-instructions"
COLLECTED = re.compile(r"Collected : (\d+)")


# ------------------------------------------------------------------------------ inside valgrind (--inner)
def inner(workload: str, count: int, warmup: int) -> dict[str, Any]:
    from sqlalchemy import event

    import luminai_actors
    from luminai_actors import bootstrap
    from luminai_actors.config import Settings
    from luminai_actors.evolution.webhook import parse_webhook

    container = bootstrap.build(Settings.from_env(dict(os.environ)))
    create_agent_in_process(container.uow, INSTANCE, os.environ["BENCH_FAKE_URL"], "Instructions")
    statements: list[str] = []
    event.listen(
        container.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: statements.append(statement.split()[0].upper()),
    )

    def new_leads(first: int, n: int) -> list[Any]:
        talks = []
        for i in range(first, first + n):
            body = webhook_body(INSTANCE, f"551197{i:07d}", "Oi, quero saber mais", f"I{i:08d}")
            outcome = container.handle_inbound(parse_webhook(body))
            assert outcome.status == "stored", outcome
            talks.append(outcome.talk_id)
        return talks

    try:
        if workload == "new_lead":
            new_leads(0, warmup)
            statements.clear()
            sys.call_tracing(new_leads, (warmup, count))
        else:
            talks = new_leads(0, warmup + count)
            turn = container.dispatcher.ai_actor
            for talk_id in talks[:warmup]:
                turn(str(talk_id))
            statements.clear()

            def turns() -> None:
                for talk_id in talks[warmup:]:
                    turn(str(talk_id))

            sys.call_tracing(turns, ())
        counted = list(statements)
    finally:
        container.close()
    return {
        "operations": count,
        "statements_per_operation": round(len(counted) / count, 2),
        "statement_kinds": sorted(set(counted)),
        "luminai_actors_from": str(Path(luminai_actors.__file__).resolve().parents[1]),
    }


# ------------------------------------------------------------------------------------------- the driver
def measure(bench: Bench, tree: Path, workload: str, fake_url: str, count: int, tag: str) -> dict[str, Any]:
    url = bench.create_database(tree, tag)
    bench.flush_redis()
    env = {
        **bench.service_env({}),
        "LUMINAI_DATABASE_URL": url,
        "LUMINAI_BROKER_URL": REDIS_URL,
        "LUMINAI_AI_DEBOUNCE_SECONDS": "0",
        "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
        "BENCH_FAKE_URL": fake_url,
        "PYTHONPATH": str(tree / "src"),
        "PYTHONHASHSEED": "0",
    }
    out = bench.tmp / f"callgrind-{tag}.out"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--collect-atstart=no",
        "--toggle-collect=sys_call_tracing",
        PYTHON,
        str(Path(__file__).resolve()),
        "--inner",
        workload,
        "--count",
        str(count),
    ]
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, timeout=1800)
    found = COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        failure = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        raise RuntimeError(f"{workload} under callgrind failed:\n{failure}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["luminai_actors_from"]) != (tree / "src").resolve():
        raise RuntimeError(f"the code came from {result['luminai_actors_from']}, not {tree}")
    instructions = int(found[-1])
    result["instructions"] = instructions
    result["instructions_per_operation"] = instructions // count
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="a revision to count side by side with the working tree")
    parser.add_argument("--count", type=int, default=40, help="operations counted per workload")
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload and tree")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--inner", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.count, warmup=20)))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is missing (apt-get install valgrind)", file=sys.stderr)
        return 2
    from luminai_actors.testing import FakeEvolutionApi

    workloads = [w for w in args.workloads.split(",") if w]
    base_commit = git("rev-parse", args.base) if args.base else None
    figures: dict[str, Any] = {
        "base_revision": base_commit,
        "working_tree": working_tree_state(),
        "count": args.count,
        "warmup": 20,
        "runs": {},
    }
    with contextlib.ExitStack() as stack:
        trees: dict[str, Path] = {"work": ROOT}
        if base_commit:
            trees = {"base": stack.enter_context(revision_worktree(base_commit)), "work": ROOT}
        bench = stack.enter_context(Bench("instr", time_limit=7200))
        set_fake_evolution_nodelay(True)
        fake = FakeEvolutionApi().start()
        bench.cleanups.append(fake.stop)
        fake.add_instance(INSTANCE, "k")
        for workload in workloads:
            for repeat in range(1, args.repeat + 1):
                for side, tree in trees.items():
                    tag = f"{workload}_{side}_{repeat}"
                    result = measure(bench, tree, workload, fake.url, args.count, tag)
                    figures["runs"].setdefault(workload, {}).setdefault(side, []).append(result)
                    per_operation = result["instructions_per_operation"]
                    print(
                        f"{workload:9s} {side:4s} run {repeat}: {per_operation:>12,} instructions "
                        f"per operation, {result['statements_per_operation']} statements"
                    )
        if base_commit:
            figures["work_vs_base"] = {
                workload: round(
                    min(r["instructions_per_operation"] for r in sides["work"])
                    / min(r["instructions_per_operation"] for r in sides["base"]),
                    4,
                )
                for workload, sides in figures["runs"].items()
            }
            print(json.dumps(figures["work_vs_base"]))
        write_results("instructions", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
