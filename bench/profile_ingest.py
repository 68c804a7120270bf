"""Profile of the serve process under the ingest load (py-spy), before any optimisation.

    .venv/bin/python bench/profile_ingest.py      # about 1.5 minutes

Same set-up as bench/ingest.py (real `run.py serve` + one `run.py worker`, PostgreSQL, Redis db 14, rate
limits off, debounce 0), a 3 s wrk warm-up, then `wrk -t2 -c32 -d50s` while, one after the other,
  * `py-spy record --rate 20 --format speedscope --duration 15 --nonblocking --pid <serve>` samples the
    threads that are not idle (bench/results/profile-serve-active-threads.speedscope.json),
  * `py-spy dump --nonblocking --pid <serve>` snapshots every thread's stack twice
    (bench/results/profile-serve-dump.txt),
  * the same record with `--gil`: only the thread holding the GIL in each sample, i.e. what the single
    interpreter lock is busy with (bench/results/profile-serve-gil-holder.speedscope.json),
(open the .speedscope.json files at https://www.speedscope.app)
and the speedscope samples are aggregated into bench/results/profile.json: the share of samples in which
each function (and each library: SQLAlchemy, psycopg, uvicorn/h11, pykka, json, logging, ...) is on the stack
(inclusive) or at the top (self). py-spy is installed into .venv if missing.
"""

from __future__ import annotations

import collections
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
    RESULTS,
    ROOT,
    WEBHOOK,
    Bench,
    CpuMeter,
    ensure_tools,
    unique_tag,
    write_results,
)
from ingest import SERVICE_ENV, run_wrk

from luminai_actors.testing import FakeEvolutionApi

PYSPY = str(ROOT / ".venv" / "bin" / "py-spy")

# Library buckets, matched against the frame's file path (first match wins).
BUCKETS = [
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("uvicorn", "/uvicorn/"),
    ("h11", "/h11/"),
    ("starlette", "/starlette/"),
    ("anyio", "/anyio/"),
    ("asyncio", "/asyncio/"),
    ("pykka", "/pykka/"),
    ("dramatiq", "/dramatiq/"),
    ("redis", "/redis/"),
    ("prometheus_client", "/prometheus_client/"),
    ("logging", "/logging/"),
    ("json", "/json/"),
    ("phonenumbers", "/phonenumbers/"),
    ("threading", "/threading.py"),
    ("queue", "/queue.py"),
    ("luminai_actors", "/luminai_actors/"),
]


def bucket_of(path: str) -> str:
    for name, needle in BUCKETS:
        if needle in path:
            return name
    return "other"


def aggregate(speedscope: dict[str, Any]) -> dict[str, Any]:
    frames = speedscope["shared"]["frames"]
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    incl_bucket: collections.Counter[str] = collections.Counter()
    self_bucket: collections.Counter[str] = collections.Counter()
    per_thread: collections.Counter[str] = collections.Counter()
    total = 0
    for profile in speedscope["profiles"]:
        thread = profile.get("name", "?")
        weights = profile.get("weights") or [1] * len(profile["samples"])
        for stack, weight in zip(profile["samples"], weights, strict=False):
            total += weight
            per_thread[_thread_kind(thread)] += weight
            names = []
            for index in stack:
                f = frames[index]
                names.append(
                    (
                        f"{f['name']} ({_short(f.get('file', ''))}:{f.get('line', '')})",
                        bucket_of(f.get("file", "")),
                    )
                )
            if not names:
                continue
            top_name, top_bucket = names[-1]
            self_fn[top_name] += weight
            self_bucket[top_bucket] += weight
            for name in {n for n, _ in names}:
                incl_fn[name] += weight
            for b in {b for _, b in names}:
                incl_bucket[b] += weight

    def pct(counter: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "by_thread_kind_pct": pct(per_thread, 20),
        "library_inclusive_pct": pct(incl_bucket, 20),
        "library_self_pct": pct(self_bucket, 20),
        "functions_inclusive_pct": pct(incl_fn, 45),
        "functions_self_pct": pct(self_fn, 30),
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _thread_kind(name: str) -> str:
    low = name.lower()
    for kind in ("conversationactor", "anyio", "asyncio", "mainthread", "reaper", "recovery", "threadpool"):
        if kind in low:
            return kind
    return name.split("(")[0].strip()[:40]


def main() -> int:
    ensure_tools(need_wrk=True, need_pyspy=True)
    tag = unique_tag()
    figures: dict[str, Any] = {}
    with Bench("profile", time_limit=300) as bench, FakeEvolutionApi() as evolution:
        bench.create_database()
        bench.flush_redis()
        url, serve = bench.start_serve(SERVICE_ENV)
        worker = bench.start_worker(SERVICE_ENV, threads=4)
        bench.setup_agent(url, evolution)
        run_wrk(bench, url, f"{tag}PW", 3, 2, 32, 500)  # warm-up: contacts and talks exist
        out_dir = bench.tmp / "wrk-profile"
        out_dir.mkdir()
        wrk_cmd = [
            "wrk", "-t2", "-c32", "-d50s", "--latency", "--timeout", "10s", "-s", str(BENCH / "webhook.lua"),
            url + WEBHOOK, "--", INSTANCE, f"{tag}PM", "500", str(out_dir),
        ]  # fmt: skip
        meter = CpuMeter({"serve": serve.pid, "worker": worker.pid}, bench.db_name)
        meter.start()
        wrk = bench.spawn("wrk", wrk_cmd)
        time.sleep(3)
        RESULTS.mkdir(exist_ok=True)
        profiles: dict[str, Any] = {}
        commands: dict[str, str] = {}
        dumps: list[str] = []
        for name, extra in (("active-threads", []), ("gil-holder", ["--gil"])):
            path = RESULTS / f"profile-serve-{name}.speedscope.json"
            record_cmd = [
                PYSPY, "record", "--rate", "20", "--format", "speedscope", "--duration", "15",
                "--nonblocking", *extra, "--pid", str(serve.pid), "--output", str(path),
            ]  # fmt: skip
            recorder = bench.spawn(f"py-spy-record-{name}", record_cmd)
            recorder.wait(120)
            commands[name] = " ".join(record_cmd).replace(str(ROOT) + "/", "")
            profiles[name] = aggregate(json.loads(path.read_text()))
            if not dumps:  # between the two recordings: every thread's stack, twice
                for moment in range(2):
                    dump = subprocess.run(
                        [PYSPY, "dump", "--nonblocking", "--pid", str(serve.pid)],
                        capture_output=True, text=True, timeout=60, check=False,
                    )  # fmt: skip
                    dumps.append(
                        f"===== py-spy dump --nonblocking --pid SERVE (#{moment + 1}) =====\n"
                        f"{dump.stdout}{dump.stderr}"
                    )
                    time.sleep(1)
        wrk.wait(90)
        cpu = meter.stop()
        (RESULTS / "profile-serve-dump.txt").write_text("\n".join(dumps))
        summary = json.loads((out_dir / "summary.json").read_text())
        figures["load"] = {
            "command": " ".join(wrk_cmd[:-6])
            + " http://127.0.0.1:PORT"
            + WEBHOOK
            + " -- "
            + " ".join(wrk_cmd[-4:-1])
            + " OUTDIR",
            "requests": summary["requests"],
            "rps": round(summary["requests"] / (summary["duration_us"] / 1e6), 1),
            "p50_ms": summary["latency_us"]["p50"] / 1000,
            "p99_ms": summary["latency_us"]["p99"] / 1000,
            "codes": summary["codes"],
            "cpu": cpu,
        }
        figures["py_spy_record_commands"] = commands
        figures["profile"] = profiles
        figures["thread_states_in_dumps"] = _dump_states(dumps)
        figures["py_spy_warnings"] = [
            line
            for label, log in bench.logs.items()
            if label.startswith("py-spy")
            for line in log.read_text(errors="replace").splitlines()
            if "behind" in line or "Samples" in line
        ][-6:]
        print(json.dumps(figures, indent=1)[:6000])
        write_results("profile", figures)
    return 0


def _dump_states(dumps: list[str]) -> list[dict[str, int]]:
    """Per dump: how many threads of each kind were idle / active, and what the waiting actors wait on."""
    out = []
    for dump in dumps:
        counts: collections.Counter[str] = collections.Counter()
        blocks = dump.split("\nThread ")
        for block in blocks[1:]:
            head, _, body = block.partition("\n")
            state = "idle" if "(idle)" in head else "active"
            first = body.strip().splitlines()[0].strip() if body.strip() else "?"
            kind = "actor" if "ConversationActor" in head or "_actor_loop" in body else "other"
            counts[f"{kind}:{state}:{first.split(' (')[0]}"] += 1
        out.append(dict(counts.most_common(15)))
    return out


if __name__ == "__main__":
    sys.exit(main())
