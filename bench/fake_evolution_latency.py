"""How long one sendText takes against FakeEvolutionApi over a keep-alive connection, as shipped and with
TCP_NODELAY set on its handler (in this process only): shows the fake's ~40 ms delayed-ACK stall.

    .venv/bin/python bench/fake_evolution_latency.py
    # a few seconds; writes bench/results/fake_evolution_latency.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import set_fake_evolution_nodelay, summary_ms, write_results

from luminai_actors.testing import FakeEvolutionApi


def measure(calls: int) -> dict[str, Any]:
    with FakeEvolutionApi() as fake, httpx.Client(timeout=10) as client:
        fake.add_instance("bench", "key")
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            response = client.post(
                fake.url + "/message/sendText/bench",
                json={"number": "5511999999999", "text": "hi"},
                headers={"apikey": "key"},
            )
            times.append(time.perf_counter() - t0)
            assert response.status_code == 201, response.text
    return summary_ms(times)


def main() -> int:
    figures: dict[str, Any] = {"calls_each": 50, "client": "httpx.Client (keep-alive)"}
    set_fake_evolution_nodelay(False)
    figures["as_shipped"] = measure(50)
    set_fake_evolution_nodelay(True)
    figures["with_tcp_nodelay"] = measure(50)
    print(figures)
    write_results("fake_evolution_latency", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
