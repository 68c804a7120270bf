#!/usr/bin/env bash
# Every benchmark, one after the other (about 15 minutes on 2 cores). Usage: bench/run_all.sh
# Each script bounds its own run time, stops what it started, drops its database and flushes Redis db 14.
# Each run overwrites its benchmark's file in bench/results/ (one file per benchmark; older runs are in git history).
# Not run here: compare.py (needs --base REV) and instructions.py (valgrind); see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt)"; apt-get update -qq && apt-get install -y -qq wrk
fi
# py-spy is a requirement of the benchmarks only (never added to pyproject.toml)
[ -x .venv/bin/py-spy ] || "$PY" -m pip install --quiet py-spy
"$PY" bench/ingest.py
"$PY" bench/ingest.py --no-worker
"$PY" bench/end_to_end.py
"$PY" bench/end_to_end.py --known-leads
"$PY" bench/scale.py
"$PY" bench/profile_ingest.py
"$PY" bench/profile_hotpath.py
"$PY" bench/fake_evolution_latency.py
"$PY" bench/budget.py
"$PY" bench/unsettled_reads.py
