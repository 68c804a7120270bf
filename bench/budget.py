"""The performance budget of inbound messages, side by side in one run (issue 18):

    .venv/bin/python bench/budget.py       # about 4 minutes; writes bench/results/budget.json

Against one bare Starlette JSON endpoint (bench/bare_app.py) and one `run.py serve` on a fresh PostgreSQL
database (Redis broker db 14, no worker, rate limits off, the service's default 2 s AI debounce):

  * max rate (best of wrk `-t2 -c32` and `-c64`, 6 s each, 2xx only counted) of the bare endpoint, of known
    conversations (500 leads whose contacts and talks exist) and of new leads (every request a number of its
    own: the first message of a contact); the budget: known >= 0.30x bare, new leads >= 0.10x bare;
  * open loop (bench/loadgen.py) at half of each maximum, 10 s: p99 ack <= 100 ms;
  * the curve of known-conversation ingest when 500 / 2,000 / 10,000 conversations are live against the
    actor bound (`LUMINAI_MAX_CONVERSATION_ACTORS`, 2,000 here as by default): each pool of leads is
    created first (all of its contacts and talks), then measured with wrk `-t2 -c32` for 6 s;
  * the database is ANALYZEd after each pool of leads is created (autovacuum's statistics of a running
    deployment; a freshly migrated database planned the lookups by organization instead of by phone);
  * every 200 of every service phase is checked to be stored exactly once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Bench, CpuMeter, ensure_tools, unique_tag, write_results
from ingest import run_loadgen, run_wrk, verify_stored

from luminai_actors.testing import FakeEvolutionApi

BOUND = 2000
SERVICE_ENV = {
    "LUMINAI_RATE_LIMIT_PER_INSTANCE": "0",
    "LUMINAI_RATE_LIMIT_PER_IP": "0",
    "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
    "LUMINAI_MAX_CONVERSATION_ACTORS": str(BOUND),
}
NEW_LEADS = 0  # webhook.lua's PHONES = 0: a number of its own per request


def ok_rate(run: dict[str, Any]) -> float:
    """Requests per second that were answered 2xx."""
    ok = sum(n for code, n in run["codes"].items() if code.startswith("2"))
    return round(ok / run["seconds"], 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--curve", default="500,2000,10000", help="live conversations per curve point")
    args = parser.parse_args()
    ensure_tools(need_wrk=True)
    tag = unique_tag()
    checks: list[tuple[str, str, list[str], int]] = []
    figures: dict[str, Any] = {}
    base = iter(range(1_000_000, 9_000_000, 500_000))  # a fresh range of numbers per phase

    with Bench("budget", time_limit=900) as bench, FakeEvolutionApi() as evolution:
        bench.create_database()
        bench.flush_redis()
        bare_url, bare = bench.start_bare()
        url, serve = bench.start_serve(SERVICE_ENV)
        bench.setup_agent(url, evolution)
        meter = CpuMeter({"serve": serve.pid, "bare": bare.pid}, bench.db_name)
        n = iter(range(100))

        def wrk(target: str, label: str, phones: int, start: int, connections: int, seconds: int) -> dict:
            prefix = f"{tag}{next(n):02d}"
            meter.start()
            run = run_wrk(bench, target, prefix, seconds, 2, connections, phones, start)
            run["cpu"] = meter.stop()
            run["seconds"] = seconds
            if target == url:
                checks.append((label, f"W{prefix}", run.pop("_ids"), connections))
            else:
                run.pop("_ids")
            run.pop("wrk_stdout", None)
            print(f"{label}: {ok_rate(run)} 2xx/s, p50 {run['latency_ms']['p50']} ms, codes {run['codes']}")
            return run

        def best(target: str, label: str, phones: int, start: int | None = None) -> dict[str, Any]:
            runs = {
                f"c{c}": wrk(target, f"{label} -c{c}", phones, next(base) if start is None else start, c,
                             args.seconds)
                for c in (32, 64)
            }  # fmt: skip
            return {"max_2xx_per_s": max(ok_rate(r) for r in runs.values()), "runs": runs}

        # (1) maximum rates, side by side
        known_base = next(base)
        wrk(bare_url, "bare warm-up", 500, known_base, 32, 2)
        bare_max = best(bare_url, "bare", 500, known_base)
        wrk(url, "known leads warm-up (creates 500 contacts)", 500, known_base, 32, 5)
        bench.analyze()
        known = best(url, "known leads", 500, known_base)
        new = best(url, "new leads", NEW_LEADS)
        ratio_known = known["max_2xx_per_s"] / bare_max["max_2xx_per_s"]
        ratio_new = new["max_2xx_per_s"] / bare_max["max_2xx_per_s"]
        figures["max_rate"] = {
            "bare": bare_max,
            "known_leads": known,
            "new_leads": new,
            "ratio_known_over_bare": round(ratio_known, 3),
            "ratio_new_over_bare": round(ratio_new, 3),
            "targets": {"known": 0.30, "new": 0.10},
            "met": ratio_known >= 0.30 and ratio_new >= 0.10,
        }
        print(f"ratios: known {ratio_known:.3f} (>= 0.30), new leads {ratio_new:.3f} (>= 0.10)")

        # (2) open loop at half of each maximum
        open_loop: dict[str, Any] = {}
        for label, rate, phones, start in (
            ("known_leads", known["max_2xx_per_s"] / 2, 500, known_base),
            ("new_leads", new["max_2xx_per_s"] / 2, 400_000, next(base)),
        ):
            prefix = f"{tag}O{label[0]}"
            meter.start()
            run = run_loadgen(bench, url, rate, 10, prefix, phones, start)
            run["cpu"] = meter.stop()
            checks.append((f"open loop {label}", "L" + prefix, run.pop("_ids"), 0))
            s = run["latency_from_schedule"]
            open_loop[label] = {"rate": round(rate, 1), **run}
            print(f"open loop {label} @ {rate:.0f}/s: p50 {s['p50_ms']} p99 {s['p99_ms']} ms, {run['codes']}")
        p99s = [v["latency_from_schedule"]["p99_ms"] for v in open_loop.values()]
        figures["open_loop_half_max"] = {
            **open_loop,
            "target_p99_ms": 100,
            "met": all(p is not None and p <= 100 for p in p99s),
        }

        # (3) known-conversation ingest against the actor bound: 500 / 2,000 / 10,000 live conversations
        curve: dict[str, Any] = {}
        for live in (int(c) for c in args.curve.split(",") if c.strip()):
            start = next(base)
            t0 = time.monotonic()
            # every lead of the pool writes once (they become known conversations), as fast as it goes
            run_loadgen(bench, url, 400, live / 400 + 0.5, f"{tag}C{live}", live, start)
            bench.analyze()
            created = bench.sql("SELECT count(*) AS n FROM contact")[0]["n"]
            point = wrk(url, f"{live} live conversations", live, start, 32, args.seconds)
            actors = bench.ops_actors(url)
            curve[str(live)] = {
                "2xx_per_s": ok_rate(point),
                "p50_ms": point["latency_ms"]["p50"],
                "p99_ms": point["latency_ms"]["p99"],
                "codes": point["codes"],
                "live_actors_after": actors["conversations"]["live"],
                "actors_started_total": actors["conversations"]["startedTotal"],
                "contacts_in_database": created,
                "seconds_to_create_the_pool": round(time.monotonic() - t0, 1),
            }
        figures["live_conversations_curve"] = {"bound": BOUND, "points": curve}

        figures["stored_exactly_once"] = {p: verify_stored(bench, pre, ids, b) for p, pre, ids, b in checks}
        figures["stored_exactly_once_all_ok"] = all(v["ok"] for v in figures["stored_exactly_once"].values())
        figures["settings"] = {**SERVICE_ENV, "worker": "none", "LUMINAI_AI_DEBOUNCE_SECONDS": "2 (default)"}
        write_results("budget", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
