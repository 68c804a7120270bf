"""Ingest benchmark: webhooks/s and latency of the REAL service versus a bare Starlette endpoint.

    .venv/bin/python bench/ingest.py            # about 3 minutes; writes bench/results/ingest.json
    .venv/bin/python bench/ingest.py --no-worker  # writes bench/results/ingest-no-worker.json

One run, same load generator, side by side:
  * bare: bench/bare_app.py (parses the JSON body, answers 200) under uvicorn, served like `run.py serve`;
  * service: `run.py serve` on a fresh PostgreSQL database with the Redis broker (db 14), LUMINAI_ADMIN_TOKEN
    set, an agent on the instance the webhooks name, rate limits off (LUMINAI_RATE_LIMIT_PER_INSTANCE=0,
    LUMINAI_RATE_LIMIT_PER_IP=0), LUMINAI_SEND_RATE_PER_INSTANCE=0, the AI debounce at the service's default
    (2 s; `--debounce 0` makes every message request its own AI turn), plus one `run.py worker --threads 4`
    doing the AI turns and sends against an in-process FakeEvolutionApi.

Phases: (1) wrk closed loop `-t2 -c32 -d15s --latency` (bench/webhook.lua: unique data.key.id per request,
500 lead numbers), after a 3 s warm-up that creates the 500 contacts/talks, against bare then service;
(1b) the same with `wrk -t1 -cN -d4s` for N in 1,2,4,8,16,64 on both: the max rate of each is the best of
all these runs (the service's peaks at low concurrency); (2) the worker drains what the service runs
enqueued (bounded, 60 s); (3) bench/loadgen.py, open loop at HALF the service's max rate for 15 s, first
against bare (proves the generator holds that rate), then against the service, then against the service
with the worker stopped; (4) PostgreSQL check, per service phase: every 200-answered message (its
X-Luminai-Message-Id) is a stored row, no data.key.id is stored twice, and rows stored without a 200 seen
are at most the connections cut while in flight when wrk stopped. `--no-worker` runs everything without
the worker. CPU seconds per process (/proc/<pid>/stat) and what PostgreSQL's backends were doing
(pg_stat_activity, sampled every 0.1 s) are recorded per phase.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BENCH,
    INSTANCE,
    PYTHON,
    WEBHOOK,
    Bench,
    CpuMeter,
    PgActivitySampler,
    PgSessions,
    ensure_tools,
    unique_tag,
    write_results,
)

from luminai_actors.testing import FakeEvolutionApi

SERVICE_ENV = {
    "LUMINAI_RATE_LIMIT_PER_INSTANCE": "0",
    "LUMINAI_RATE_LIMIT_PER_IP": "0",
    "LUMINAI_SEND_RATE_PER_INSTANCE": "0",
}


def run_wrk(
    bench: Bench, url: str, tag: str, seconds: int, threads: int, connections: int, phones: int, base: int = 0
) -> dict[str, Any]:
    out = bench.tmp / f"wrk-{tag}"
    out.mkdir()
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
        "-s", str(BENCH / "webhook.lua"), url + WEBHOOK,
        "--", INSTANCE, tag, str(phones), str(out), str(base),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    ids: list[str] = []
    for f in sorted(out.glob("ids-*.txt")):
        ids += [line.strip() for line in f.read_text().splitlines() if line.strip()]
    secs = summary["duration_us"] / 1e6
    lat = summary["latency_us"]
    return {
        "command": " ".join(
            [
                *cmd[:-7],
                "http://127.0.0.1:PORT" + WEBHOOK,
                "--",
                INSTANCE,
                tag,
                str(phones),
                "OUTDIR",
                str(base),
            ]
        ),
        "requests": summary["requests"],
        "seconds": round(secs, 2),
        "rps": round(summary["requests"] / secs, 1),
        "codes": summary["codes"],
        "errors": summary["errors"],
        "duplicates_answered": summary["duplicates"],
        "latency_ms": {
            k: round(v / 1000, 2) for k, v in lat.items() if k in ("p50", "p90", "p99", "max", "mean")
        },
        "wrk_stdout": proc.stdout.strip().splitlines(),
        "_ids": ids,
    }


def run_loadgen(
    bench: Bench, url: str, rate: float, seconds: float, tag: str, phones: int, base: int = 0
) -> dict[str, Any]:
    out = bench.tmp / f"loadgen-{tag}.json"
    cmd = [
        PYTHON, str(BENCH / "loadgen.py"), "--url", url + WEBHOOK, "--rate", f"{rate:.0f}",
        "--duration", str(seconds), "--instance", INSTANCE, "--phones", str(phones), "--tag", tag,
        "--connections", "64", "--phone-base", str(base), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True)
    doc = json.loads(out.read_text())
    summary: dict[str, Any] = doc["summary"]
    summary["command"] = " ".join(["bench/loadgen.py", *cmd[2:-2]]).replace(url, "URL")
    summary["_ids"] = [r["message_id"] for r in doc["records"] if r["status"] == 200 and r["message_id"]]
    return summary


def verify_stored(bench: Bench, prefix: str, ids_200: list[str], in_flight_bound: int) -> dict[str, Any]:
    """Rows whose data.key.id starts with `prefix` versus the X-Luminai-Message-Id of every 200."""
    rows = bench.sql(
        "SELECT id::text AS id, whatsapp_message_id FROM talk_message "
        "WHERE direction = 'inbound' AND whatsapp_message_id LIKE :p",
        p=prefix + "%",
    )
    dup_rows = bench.sql(
        "SELECT whatsapp_message_id, count(*) AS n FROM talk_message WHERE whatsapp_message_id LIKE :p "
        "GROUP BY agent_id, whatsapp_message_id HAVING count(*) > 1",
        p=prefix + "%",
    )
    stored = {r["id"] for r in rows}
    answered = set(ids_200)
    missing = answered - stored
    extra = stored - answered
    return {
        "answered_200": len(ids_200),
        "distinct_ids_in_200s": len(answered),
        "rows_stored": len(rows),
        "answered_but_not_stored": len(missing),
        "duplicate_rows": len(dup_rows),
        "stored_without_a_seen_200": len(extra),
        "stored_without_a_seen_200_bound": in_flight_bound,
        "ok": not missing
        and not dup_rows
        and len(answered) == len(ids_200)
        and len(extra) <= in_flight_bound,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--phones", type=int, default=500)
    parser.add_argument("--sweep", default="1,2,4,8,16,64", help="extra wrk -t1 connection counts (4 s each)")
    parser.add_argument("--no-worker", action="store_true", help="measure ingest with no worker running")
    parser.add_argument(
        "--pool-size", type=int, help="LUMINAI_DB_POOL_SIZE for serve and worker (default: 10)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="seconds of wrk before each measured run")
    parser.add_argument(
        "--open-rates", default="", help="extra open-loop rates (req/s, comma separated) against the service"
    )
    parser.add_argument(
        "--debounce", help="LUMINAI_AI_DEBOUNCE_SECONDS for serve and worker (default: the service's, 2 s)"
    )
    args = parser.parse_args()
    if args.debounce is not None:
        SERVICE_ENV["LUMINAI_AI_DEBOUNCE_SECONDS"] = args.debounce
    if args.pool_size:
        SERVICE_ENV["LUMINAI_DB_POOL_SIZE"] = str(args.pool_size)
    ensure_tools(need_wrk=True)
    tag = unique_tag()
    figures: dict[str, Any] = {}
    checks: list[
        tuple[str, str, list[str], int]
    ] = []  # (phase, data.key.id prefix, ids of 200s, in-flight bound)
    with Bench("ingest", time_limit=420) as bench, FakeEvolutionApi() as evolution:
        bench.create_database()
        bench.flush_redis()
        bare_url, bare = bench.start_bare()
        service_url, serve = bench.start_serve(SERVICE_ENV)
        worker = None if args.no_worker else bench.start_worker(SERVICE_ENV, threads=4)
        bench.setup_agent(service_url, evolution)
        pids = {"serve": serve.pid, "bare": bare.pid} | ({"worker": worker.pid} if worker else {})
        meter = CpuMeter(pids, bench.db_name)
        pg = PgActivitySampler(bench.db_url or "", bench.db_name)
        sessions = PgSessions(bench.db_url or "", bench.db_name)
        bench.cleanups.append(sessions.close)
        urls = {"bare": bare_url, "service": service_url}
        print(f"bare {bare_url} (pid {bare.pid}); service {service_url} (pid {serve.pid}); tag {tag}")

        # (1) wrk, closed loop, side by side, -t2 -c32 after a warm-up (which creates the 500 contacts)
        results: dict[str, Any] = {}
        for label in ("bare", "service"):
            prefix = f"{tag}{label[0].upper()}"
            warm = run_wrk(
                bench, urls[label], prefix + "W", args.warmup, args.threads, args.connections, args.phones
            )
            known_before = bench.sql(
                "SELECT (SELECT count(*) FROM contact) AS contacts, (SELECT count(*) FROM talk) AS talks"
            )[0]
            s0 = sessions.read()
            meter.start()
            pg.start()
            measured = run_wrk(
                bench, urls[label], prefix + "M", args.seconds, args.threads, args.connections, args.phones
            )
            measured["postgres_activity"] = pg.stop()
            opened = sessions.read() - s0 - 1  # minus the sampler's own connection
            measured["postgres_connections_opened"] = opened
            measured["postgres_connections_opened_per_request"] = round(
                opened / max(measured["requests"], 1), 3
            )
            measured["cpu"] = meter.stop()
            measured["warmup"] = {k: warm[k] for k in ("requests", "rps", "codes", "latency_ms")}
            if label == "service":
                measured["warmup"]["contacts_and_talks_before_measuring"] = known_before
            results[label] = measured
            if label == "service":
                checks += [
                    ("wrk warm-up", f"W{prefix}W", warm["_ids"], args.connections),
                    (f"wrk -c{args.connections}", f"W{prefix}M", measured["_ids"], args.connections),
                ]
            print(
                f"wrk {label} -c{args.connections}: {measured['rps']} req/s, "
                f"p50 {measured['latency_ms']['p50']} ms, "
                f"p99 {measured['latency_ms']['p99']} ms, codes {measured['codes']}, "
                f"new PostgreSQL connections {measured['postgres_connections_opened']}"
            )

        # (1b) the same with other connection counts (wrk -t1 -cN -d4s): where is each one's maximum?
        sweep: dict[str, dict[str, Any]] = {"bare": {}, "service": {}}
        for label in ("bare", "service"):
            for n, conns in enumerate(int(c) for c in args.sweep.split(",") if c.strip()):
                prefix = f"W{tag}{label[0].upper()}S{n}"
                s0 = sessions.read()
                meter.start()
                r = run_wrk(bench, urls[label], prefix[1:], 4, 1, conns, args.phones)
                cpu = meter.stop()
                opened = sessions.read() - s0
                sweep[label][f"c{conns}"] = {
                    "rps": r["rps"], "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                    "codes": r["codes"], "cpu_cores_busy": cpu["cores_busy"],
                    "postgres_connections_opened": opened,
                }  # fmt: skip
                if label == "service":
                    checks.append((f"wrk -t1 -c{conns}", prefix, r["_ids"], conns))
                print(
                    f"sweep {label} -c{conns}: {r['rps']} req/s p50 {r['latency_ms']['p50']} ms "
                    f"p99 {r['latency_ms']['p99']} ms, new PostgreSQL connections {opened}"
                )
            sweep[label][f"c{args.connections} (-t{args.threads}, above)"] = {"rps": results[label]["rps"]}
        max_rate = {label: max(v["rps"] for v in sweep[label].values()) for label in ("bare", "service")}
        ratio_c32 = results["service"]["rps"] / results["bare"]["rps"]
        ratio_max = max_rate["service"] / max_rate["bare"]
        figures["wrk"] = {
            "bare": {k: v for k, v in results["bare"].items() if not k.startswith("_")},
            "service": {k: v for k, v in results["service"].items() if not k.startswith("_")},
            "connection_sweep": sweep,
            "max_rate_rps": max_rate,
            "ratio_service_over_bare_same_c": round(ratio_c32, 3),
            "ratio_service_over_bare_max_vs_max": round(ratio_max, 3),
            "target_ratio": 0.35,
            "ratio_target_met": ratio_max >= 0.35,
        }
        print(
            f"max rate: {max_rate}; ratio (max vs max) = {ratio_max:.3f}, at -c{args.connections} = "
            f"{ratio_c32:.3f} (target >= 0.35)"
        )

        # (2) let the worker finish the AI turns and sends the wrk runs caused (bounded)
        if worker is not None:
            t0 = time.monotonic()
            backlog0 = bench.redis_queue_backlog()
            while bench.redis_queue_backlog() > 0 and time.monotonic() - t0 < 60:
                time.sleep(0.5)
            figures["worker_drain_after_wrk"] = {
                "backlog_at_end_of_wrk": backlog0,
                "seconds_to_drain": round(time.monotonic() - t0, 1),
                "backlog_left": bench.redis_queue_backlog(),
                "sendtext_received_by_fake_evolution_so_far": len(evolution.sendtext_attempts()),
            }
            print(f"worker drain: {figures['worker_drain_after_wrk']}")

        # (3) open loop at HALF the service's max rate: bare first (generator check), then the service
        half = max_rate["service"] / 2
        lg: dict[str, Any] = {}
        phases = [("bare", "bare"), ("service", "service")]
        if worker is not None:
            phases.append(("service, worker stopped", "service"))
        for n, (label, target) in enumerate(phases):
            if label == "service, worker stopped" and worker is not None:
                bench.stop_process(worker)
            s0 = sessions.read()
            meter.start()
            pg.start()
            prefix = f"{tag}L{n}"
            lg[label] = run_loadgen(bench, urls[target], half, args.seconds, prefix, args.phones)
            lg[label]["postgres_activity"] = pg.stop()
            lg[label]["postgres_connections_opened"] = sessions.read() - s0 - 1
            lg[label]["cpu"] = meter.stop()
            if target == "service":
                checks.append((f"loadgen ({label})", "L" + prefix, lg[label]["_ids"], 0))
            s = lg[label]["latency_from_schedule"]
            print(
                f"loadgen {label} @ {half:.0f}/s: achieved {lg[label]['achieved_start_rate']}/s, "
                f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, codes {lg[label]['codes']}"
            )
        # (3b) open loop at fixed rates against the service (the knee below the closed-loop maximum)
        fixed: dict[str, Any] = {}
        for n, rate in enumerate(float(r) for r in args.open_rates.split(",") if r.strip()):
            meter.start()
            prefix = f"{tag}R{n}"
            fixed[f"{rate:.0f}/s"] = run_loadgen(
                bench, urls["service"], rate, args.seconds, prefix, args.phones
            )
            fixed[f"{rate:.0f}/s"]["cpu"] = meter.stop()
            checks.append(
                (f"loadgen service @ {rate:.0f}/s", "L" + prefix, fixed[f"{rate:.0f}/s"]["_ids"], 0)
            )
            s = fixed[f"{rate:.0f}/s"]["latency_from_schedule"]
            print(
                f"loadgen service @ {rate:.0f}/s: "
                f"achieved {fixed[f'{rate:.0f}/s']['achieved_start_rate']}/s, "
                f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, generator lateness p99 "
                f"{fixed[f'{rate:.0f}/s']['generator_lateness']['p99_ms']} ms"
            )
        if fixed:
            figures["open_loop_fixed_rates"] = {
                k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in fixed.items()
            }
        p99 = lg["service"]["latency_from_schedule"]["p99_ms"]
        figures["open_loop_half_rate"] = {
            "rate": round(half, 1),
            **{label: {k: v for k, v in r.items() if not k.startswith("_")} for label, r in lg.items()},
            "target_p99_ms": 50,
            "p99_target_met": p99 is not None and p99 <= 50,
            "generator_sustained_rate_on_bare": (
                (lg["bare"]["achieved_start_rate"] or 0) >= 0.98 * half
                and lg["bare"]["generator_lateness"]["p99_ms"] < 10
            ),
        }

        # (4) PostgreSQL: every 200-answered message stored exactly once
        figures["stored_exactly_once"] = {
            phase: verify_stored(bench, prefix, ids, bound) for phase, prefix, ids, bound in checks
        }
        figures["stored_exactly_once_all_ok"] = all(v["ok"] for v in figures["stored_exactly_once"].values())
        totals = bench.sql(
            "SELECT count(*) AS messages, count(DISTINCT whatsapp_message_id) AS distinct_ids, "
            "(SELECT count(*) FROM contact) AS contacts, (SELECT count(*) FROM talk) AS talks, "
            "(SELECT count(*) FROM talk_message WHERE direction = 'outbound') AS replies "
            "FROM talk_message WHERE direction = 'inbound'"
        )[0]
        figures["database_totals"] = totals
        figures["sendtext_received_by_fake_evolution"] = len(evolution.sendtext_attempts())
        for phase, v in figures["stored_exactly_once"].items():
            print(f"stored exactly once [{phase}]: {v}")
        print(f"database: {totals}")
        figures["settings"] = {
            **SERVICE_ENV,
            "worker": "none" if worker is None else "run.py worker --threads 4 (Redis db 14)",
            "LUMINAI_AI_DEBOUNCE_SECONDS": SERVICE_ENV.get("LUMINAI_AI_DEBOUNCE_SECONDS", "2 (default)"),
            "warmup_seconds": args.warmup,
            "logging": "serve: LUMINAI_LOG_LEVEL default (INFO, JSON lines); "
            "uvicorn access log on both servers",
            "phones": args.phones,
            "LUMINAI_DB_POOL_SIZE": SERVICE_ENV.get("LUMINAI_DB_POOL_SIZE", "10 (default)"),
        }
        write_results("ingest-no-worker" if args.no_worker else "ingest", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
