"""`python3 run.py ...` as a user runs it: help texts, exit codes, configuration errors, migrate on SQLite."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "run.py"


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LUMINAI_", "OPENAI_"))}
    environ.update({"LUMINAI_NO_VENV": "1", **env})
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_run_py_is_at_the_project_root() -> None:
    assert RUN_PY.is_file()
    assert (ROOT / "pyproject.toml").is_file()


def test_top_level_help_lists_the_commands() -> None:
    result = run("--help", cwd=ROOT)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: run.py")
    for command in ("migrate", "serve", "worker", "test", "demo", "import", "actors", "whatsapp"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("migrate", ()),
        ("serve", ("--host", "--port")),
        ("worker", ("--processes", "--threads", "--queues")),
        ("test", ("pytest_args",)),
        ("demo", ("--openai",)),
        ("import", ("file",)),
        ("actors", ("--url", "--json")),
        ("whatsapp", ("status", "set-webhook", "--url")),
    ],
)
def test_each_command_has_help(tmp_path: Path, command: str, options: tuple[str, ...]) -> None:
    result = run(command, "--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"usage: run.py {command}" in result.stdout
    for option in options:
        assert option in result.stdout
    assert list(tmp_path.iterdir()) == []  # help touches no database


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run(cwd=tmp_path)

    assert result.returncode == 2
    assert "usage: run.py" in result.stderr


def test_worker_with_the_default_memory_broker_exits_2_naming_the_broker_variable(tmp_path: Path) -> None:
    result = run("worker", cwd=tmp_path)

    assert result.returncode == 2
    assert "LUMINAI_BROKER_URL" in result.stderr
    assert "run.py worker:" in result.stderr
    assert not (tmp_path / "luminai.db").exists()


def test_migrate_creates_the_tables_in_a_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "x.db"

    result = run("migrate", cwd=tmp_path, LUMINAI_DATABASE_URL=f"sqlite:///{database}")

    assert result.returncode == 0, result.stderr
    assert "migrated" in result.stdout
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    connection.close()
    assert {"talk_message", "agent", "alembic_version"} <= tables


def test_migrate_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"

    first = run("migrate", cwd=tmp_path, LUMINAI_DATABASE_URL=url)
    second = run("migrate", cwd=tmp_path, LUMINAI_DATABASE_URL=url)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr


def test_a_malformed_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run("migrate", cwd=tmp_path, LUMINAI_SEND_MAX_ATTEMPTS="abc")

    assert result.returncode == 2
    assert "LUMINAI_SEND_MAX_ATTEMPTS" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "luminai.db").exists()  # it stopped before touching the default database


def test_a_malformed_database_url_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run("migrate", cwd=tmp_path, LUMINAI_DATABASE_URL="nonsense")

    assert result.returncode == 2, result.stderr[-500:]
    assert "LUMINAI_DATABASE_URL" in result.stderr


def test_tune_gc_freezes_what_startup_built_and_collects_young_objects_less_often() -> None:
    code = (
        "import gc; from luminai_actors.cli import tune_gc, GC_YOUNG_THRESHOLD; "
        "before = gc.get_freeze_count(); tune_gc(); "
        "print(before, gc.get_freeze_count() > 1000, gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["0", "True", "True"]
