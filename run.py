#!/usr/bin/env python3
"""Command-line entry of luminai-actors: `python3 run.py <command>`.

Needs nothing but Python 3.11+: when the running interpreter lacks the project's dependencies, this script
creates (or refreshes, when pyproject.toml changed) a virtual environment in `.venv/` and re-runs itself
there. Set LUMINAI_NO_VENV=1 to run with the current interpreter as it is. Everything after the bootstrap is
in `luminai_actors.cli`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
REQUIRED_MODULES = (
    "starlette",
    "uvicorn",
    "pykka",
    "dramatiq",
    "redis",
    "hiredis",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "httpx",
    "openai",
    "phonenumbers",
    "prometheus_client",
    "yaml",
    "jinja2",
)
DEV_MODULES = ("pytest", "ruff", "mypy", "pytest_timeout", "hypothesis", "selenium")


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _wanted_stamp(dev: bool) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest}:{'dev' if dev else 'run'}"


def _has_modules(names: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in names)


def _ensure_venv(dev: bool) -> Path:
    """Create or refresh .venv so that it holds the project (and dev tools when asked)."""
    stamp_file = VENV / ".luminai-stamp"
    stamps = stamp_file.read_text().split() if stamp_file.exists() else []
    if _wanted_stamp(dev) in stamps or (not dev and _wanted_stamp(True) in stamps):
        return _venv_python()
    if not _venv_python().exists():
        print(f"run.py: creating virtual environment in {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = ".[dev]" if dev else "."
    print(f"run.py: installing {target} into {VENV}", file=sys.stderr)
    subprocess.check_call(
        [str(_venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", target],
        cwd=ROOT,
    )
    keep = [s for s in stamps if s.split(":")[0] == _wanted_stamp(dev).split(":")[0]]
    stamp_file.write_text("\n".join([*keep, _wanted_stamp(dev)]) + "\n")
    return _venv_python()


def _in_project_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def main() -> int:
    dev = len(sys.argv) > 1 and sys.argv[1] == "test"
    needed = REQUIRED_MODULES + (DEV_MODULES if dev else ())
    if not os.environ.get("LUMINAI_NO_VENV") and (_in_project_venv() or not _has_modules(needed)):
        python = _ensure_venv(dev)
        if not _in_project_venv() or not _has_modules(needed):
            os.environ["LUMINAI_NO_VENV"] = "1"  # the re-run must not bootstrap again
            argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:]]
            if os.name == "posix":
                os.execv(argv[0], argv)  # same pid: signals from a supervisor reach the real process
            return subprocess.call(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from luminai_actors.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
