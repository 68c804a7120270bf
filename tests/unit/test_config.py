"""Settings.from_env over explicit dict environments: defaults, every LUMINAI_* variable, malformed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from luminai_actors.config import DEFAULT_SQLITE_FILE, Settings
from luminai_actors.errors import ConfigError

FULL_ENV = {
    "LUMINAI_DATABASE_URL": "postgresql+psycopg://luminai:pw@db.internal:5432/luminai",
    "LUMINAI_BROKER_URL": "redis://127.0.0.1:6379/3",
    "LUMINAI_ADMIN_TOKEN": "admin-s3cret",
    "LUMINAI_SUPPRESSION_KEY": "suppression-k3y",
    "LUMINAI_EVOLUTION_ALLOWED_HOSTS": "evolution.internal,10.0.0.0/8",
    "LUMINAI_ALLOW_UNAUTHENTICATED_WEBHOOKS": "true",
    "OPENAI_API_KEY": "sk-test",
    "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",
    "LUMINAI_AI_MODEL": "gpt-4.1-mini",
    "LUMINAI_AI_TIMEOUT_SECONDS": "12.5",
    "LUMINAI_AI_MAX_ATTEMPTS": "5",
    "LUMINAI_SEND_MAX_ATTEMPTS": "4",
    "LUMINAI_SEND_BACKOFF_SECONDS": "1, 2.5,10",
    "LUMINAI_EVOLUTION_TIMEOUT_SECONDS": "7",
    "LUMINAI_CONVERSATION_IDLE_SECONDS": "0.5",
    "LUMINAI_MAX_CONVERSATION_ACTORS": "50",
    "LUMINAI_WEBHOOK_TIMEOUT_SECONDS": "3",
    "LUMINAI_MAX_WEBHOOK_BYTES": "2048",
    "LUMINAI_WORKER_THREADS": "8",
    "LUMINAI_WORKER_POLL_MS": "250",
    "LUMINAI_DB_POOL_SIZE": "20",
    "LUMINAI_RECOVERY_INTERVAL_SECONDS": "60",
    "LUMINAI_SILENCE_ALERT_MINUTES": "45",
    "LUMINAI_REDIS_HEARTBEAT_SECONDS": "20",
    "LUMINAI_SILENCE_ALERT_MIN_WEBHOOKS": "25",
    "LUMINAI_LOG_LEVEL": "DEBUG",
    "LUMINAI_RATE_LIMIT_PER_INSTANCE": "7.5",
    "LUMINAI_RATE_LIMIT_PER_IP": "0",
    "LUMINAI_IGNORE_GROUPS": "false",
    "LUMINAI_IGNORE_BROADCASTS": "no",
    "LUMINAI_IGNORE_NEWSLETTERS": "0",
    "LUMINAI_FAST_INGEST": "false",
    "LUMINAI_INLINE_SEND": "false",
    "LUMINAI_AI_ONE_CALL": "false",
    "LUMINAI_SEND_RATE_PER_INSTANCE": "2.5",
    "LUMINAI_SEND_MAX_WAIT_SECONDS": "120",
    "LUMINAI_PUBLIC_URL": "https://bot.example.com",
    "LUMINAI_AI_DEBOUNCE_SECONDS": "0.5",
    "LUMINAI_TALK_EXPIRY_HOURS": "48",
    "LUMINAI_LOG_FORMAT": "text",
    "LUMINAI_METRICS_DIR": "/tmp/luminai-metrics",
}


def test_defaults_with_an_empty_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    settings = Settings.from_env({})

    assert settings.database_url == f"sqlite:///{tmp_path / DEFAULT_SQLITE_FILE}"
    assert settings.uses_sqlite
    assert settings.is_default_sqlite
    assert settings.broker_url == "memory://"
    assert settings.uses_memory_broker
    assert settings.admin_token is None
    assert settings.openai_api_key is None
    assert settings.openai_base_url is None
    assert settings.send_max_attempts == 3
    assert settings.ai_max_attempts == 3
    assert settings.send_backoff_seconds == (2.0, 4.0)
    assert settings == Settings()


def test_the_environment_is_os_environ_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMINAI_SEND_MAX_ATTEMPTS", "7")

    assert Settings.from_env().send_max_attempts == 7


def test_every_variable_is_parsed() -> None:
    settings = Settings.from_env(FULL_ENV)

    assert settings.database_url == "postgresql+psycopg://luminai:pw@db.internal:5432/luminai"
    assert not settings.uses_sqlite
    assert not settings.is_default_sqlite
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert not settings.uses_memory_broker
    assert settings.admin_token == "admin-s3cret"
    assert settings.suppression_key == "suppression-k3y"
    assert settings.openai_api_key == "sk-test"
    assert settings.openai_base_url == "http://127.0.0.1:9999/v1"
    assert settings.ai_model == "gpt-4.1-mini"
    assert settings.ai_timeout_seconds == 12.5
    assert settings.ai_max_attempts == 5
    assert settings.send_max_attempts == 4
    assert settings.send_backoff_seconds == (1.0, 2.5, 10.0)
    assert settings.evolution_timeout_seconds == 7.0
    assert settings.conversation_idle_seconds == 0.5
    assert settings.max_conversation_actors == 50
    assert settings.webhook_timeout_seconds == 3.0
    assert settings.max_webhook_bytes == 2048
    assert settings.worker_threads == 8
    assert settings.worker_poll_ms == 250
    assert settings.db_pool_size == 20
    assert settings.recovery_interval_seconds == 60.0
    assert settings.log_level == "DEBUG"
    assert isinstance(settings.send_max_attempts, int)
    assert isinstance(settings.evolution_timeout_seconds, float)


def test_every_field_is_read_from_some_variable() -> None:
    """A new field without its variable in from_env (or in this test) would keep its default here."""
    defaults = Settings()
    settings = Settings.from_env(FULL_ENV)

    unchanged = [name for name in vars(defaults) if getattr(settings, name) == getattr(defaults, name)]
    assert unchanged == []


def test_blank_values_keep_the_defaults_and_text_is_stripped() -> None:
    settings = Settings.from_env(
        {"LUMINAI_SEND_MAX_ATTEMPTS": "  ", "LUMINAI_ADMIN_TOKEN": "", "LUMINAI_AI_MODEL": " gpt-x \n"}
    )

    assert settings.send_max_attempts == 3
    assert settings.admin_token is None
    assert settings.ai_model == "gpt-x"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LUMINAI_SEND_MAX_ATTEMPTS", "abc"),
        ("LUMINAI_SEND_MAX_ATTEMPTS", "2.5"),
        ("LUMINAI_AI_MAX_ATTEMPTS", "three"),
        ("LUMINAI_AI_TIMEOUT_SECONDS", "fast"),
        ("LUMINAI_EVOLUTION_TIMEOUT_SECONDS", "30s"),
        ("LUMINAI_CONVERSATION_IDLE_SECONDS", "5m"),
        ("LUMINAI_MAX_CONVERSATION_ACTORS", "1e3"),
        ("LUMINAI_WEBHOOK_TIMEOUT_SECONDS", "x"),
        ("LUMINAI_MAX_WEBHOOK_BYTES", "1MB"),
        ("LUMINAI_WORKER_THREADS", "four"),
        ("LUMINAI_WORKER_POLL_MS", "100ms"),
        ("LUMINAI_DB_POOL_SIZE", "ten"),
        ("LUMINAI_RECOVERY_INTERVAL_SECONDS", "soon"),
    ],
)
def test_a_value_that_is_not_a_number_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env({name: value})

    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LUMINAI_SEND_MAX_ATTEMPTS", "0"),
        ("LUMINAI_AI_MAX_ATTEMPTS", "-1"),
        ("LUMINAI_AI_TIMEOUT_SECONDS", "0"),
        ("LUMINAI_EVOLUTION_TIMEOUT_SECONDS", "0.01"),
        ("LUMINAI_CONVERSATION_IDLE_SECONDS", "0.01"),
        ("LUMINAI_MAX_CONVERSATION_ACTORS", "0"),
        ("LUMINAI_WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("LUMINAI_MAX_WEBHOOK_BYTES", "1023"),
        ("LUMINAI_WORKER_THREADS", "0"),
        ("LUMINAI_WORKER_POLL_MS", "9"),
        ("LUMINAI_DB_POOL_SIZE", "0"),
        ("LUMINAI_RECOVERY_INTERVAL_SECONDS", "0.05"),
    ],
)
def test_a_value_below_its_minimum_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}.*at least"):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value", "attr", "expected"),
    [
        ("LUMINAI_SEND_MAX_ATTEMPTS", "1", "send_max_attempts", 1),
        ("LUMINAI_MAX_WEBHOOK_BYTES", "1024", "max_webhook_bytes", 1024),
        ("LUMINAI_WORKER_POLL_MS", "10", "worker_poll_ms", 10),
        ("LUMINAI_CONVERSATION_IDLE_SECONDS", "0.05", "conversation_idle_seconds", 0.05),
    ],
)
def test_a_value_at_its_minimum_is_accepted(name: str, value: str, attr: str, expected: float) -> None:
    assert getattr(Settings.from_env({name: value}), attr) == expected


@pytest.mark.parametrize("value", ["2,x", "2;4", "2,,4", "two", ","])
def test_a_bad_backoff_list_names_its_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"LUMINAI_SEND_BACKOFF_SECONDS.*comma-separated"):
        Settings.from_env({"LUMINAI_SEND_BACKOFF_SECONDS": value})


def test_a_negative_backoff_wait_names_its_variable() -> None:
    with pytest.raises(ConfigError, match=r"LUMINAI_SEND_BACKOFF_SECONDS.*negative"):
        Settings.from_env({"LUMINAI_SEND_BACKOFF_SECONDS": "2,-4"})


def test_a_zero_backoff_wait_is_allowed() -> None:
    assert Settings.from_env({"LUMINAI_SEND_BACKOFF_SECONDS": "0"}).send_backoff_seconds == (0.0,)


@pytest.mark.parametrize("url", ["amqp://guest@localhost//", "kafka://broker:9092", "memory:/"])
def test_an_unknown_broker_scheme_names_its_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="LUMINAI_BROKER_URL"):
        Settings.from_env({"LUMINAI_BROKER_URL": url})


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.internal:6380/1", "memory://x"])
def test_known_broker_schemes_are_accepted(url: str) -> None:
    assert Settings.from_env({"LUMINAI_BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(("attempt", "wait"), [(2, 2.0), (3, 4.0), (4, 4.0), (9, 4.0)])
def test_backoff_before_attempt_repeats_the_last_wait(attempt: int, wait: float) -> None:
    assert Settings().backoff_before_attempt(attempt) == wait


def test_backoff_before_attempt_with_a_single_wait() -> None:
    settings = Settings.from_env({"LUMINAI_SEND_BACKOFF_SECONDS": "1.5"})

    assert settings.send_backoff_seconds == (1.5,)
    assert [settings.backoff_before_attempt(a) for a in (2, 3, 4)] == [1.5, 1.5, 1.5]


def test_with_overrides_returns_a_changed_copy() -> None:
    settings = Settings()

    changed = settings.with_overrides(send_max_attempts=9)

    assert changed.send_max_attempts == 9
    assert settings.send_max_attempts == 3
    assert changed.broker_url == settings.broker_url


# Known gaps: from_env promises "a malformed value raises ConfigError naming the variable" ----------------


@pytest.mark.parametrize(
    "name",
    ["LUMINAI_CONVERSATION_IDLE_SECONDS", "LUMINAI_AI_TIMEOUT_SECONDS", "LUMINAI_SEND_BACKOFF_SECONDS"],
)
def test_nan_is_refused_naming_its_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "nan"})


def test_an_unknown_log_level_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="LUMINAI_LOG_LEVEL"):
        Settings.from_env({"LUMINAI_LOG_LEVEL": "LOUD"})


def test_a_malformed_database_url_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="LUMINAI_DATABASE_URL"):
        Settings.from_env({"LUMINAI_DATABASE_URL": "nonsense"})


def test_ignore_flags_read_booleans_and_refuse_anything_else() -> None:
    assert Settings.from_env({}).ignored_chat_kinds == frozenset({"group", "broadcast", "newsletter"})
    assert Settings.from_env({"LUMINAI_IGNORE_GROUPS": "false"}).ignored_chat_kinds == frozenset(
        {"broadcast", "newsletter"}
    )
    with pytest.raises(ConfigError, match="LUMINAI_IGNORE_GROUPS"):
        Settings.from_env({"LUMINAI_IGNORE_GROUPS": "maybe"})
