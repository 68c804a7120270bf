"""Settings read from the environment (LUMINAI_* and OPENAI_*); every knob, its default and its meaning.

`Settings.from_env()` builds an immutable snapshot; nothing here runs at import time, so tests build their own
`Settings` freely. With no variables set at all the service runs on embedded defaults: a SQLite file in the
working directory, an in-process Dramatiq broker and worker, and the offline deterministic brain.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from luminai_actors.errors import ConfigError
from luminai_actors.outbound_address import AddressPolicy

DEFAULT_SQLITE_FILE = "luminai.db"
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / DEFAULT_SQLITE_FILE}"


@dataclass(frozen=True)
class Settings:
    """Every setting of the service. Field docs are the README's configuration table."""

    database_url: str = field(default_factory=_default_database_url)
    """LUMINAI_DATABASE_URL: SQLAlchemy URL; `postgresql+psycopg://user@host/db` or `sqlite:///file`."""
    broker_url: str = "memory://"
    """LUMINAI_BROKER_URL: `memory://` (in-process broker and worker) or `redis://host:port/db`."""
    public_url: str | None = None
    """LUMINAI_PUBLIC_URL: how Evolution reaches this service (e.g. https://bot.example.com); used when
    configuring an instance's webhook."""
    admin_token: str | None = None
    """LUMINAI_ADMIN_TOKEN: bearer token of the admin API; unset means the admin API refuses every call."""
    suppression_key: str | None = None
    """LUMINAI_SUPPRESSION_KEY: the HMAC key of the suppression list (numbers of erased contacts who had
    opted out); unset means a random key generated once and kept in the database."""
    openai_api_key: str | None = None
    """OPENAI_API_KEY: when set, replies are written by the OpenAI brain; otherwise by the offline brain."""
    openai_base_url: str | None = None
    """OPENAI_BASE_URL: any OpenAI-compatible endpoint (e.g. a local server)."""
    ai_model: str = "gpt-4o-mini"
    """LUMINAI_AI_MODEL: chat model asked by the OpenAI brain."""
    ai_one_call: bool = True
    """LUMINAI_AI_ONE_CALL: one LLM call per turn (the values, plus a short acknowledgement followed by the
    script's question as written); false: a second call writes the whole reply from the prompt."""
    ai_timeout_seconds: float = 30.0
    """LUMINAI_AI_TIMEOUT_SECONDS: one LLM request's timeout."""
    ai_debounce_seconds: float = 2.0
    """LUMINAI_AI_DEBOUNCE_SECONDS: messages this close together become one AI turn and one reply."""
    talk_expiry_hours: float = 24.0
    """LUMINAI_TALK_EXPIRY_HOURS: a talk idle this long is closed; the next message starts a new one."""
    ai_max_attempts: int = 3
    """LUMINAI_AI_MAX_ATTEMPTS: attempts of one AI turn before the talk is handed to a human."""
    send_max_attempts: int = 3
    """LUMINAI_SEND_MAX_ATTEMPTS: attempts of one sendText before the message is marked failed."""
    send_backoff_seconds: tuple[float, ...] = (2.0, 4.0)
    """LUMINAI_SEND_BACKOFF_SECONDS: waits before attempts 2, 3, ... (comma separated; the last repeats)."""
    send_rate_per_instance: float = 5.0
    """LUMINAI_SEND_RATE_PER_INSTANCE: sendText calls per second per WhatsApp number at most; 0 disables."""
    send_max_wait_seconds: float = 3600.0
    """LUMINAI_SEND_MAX_WAIT_SECONDS: how long a reply waits for an inactive agent or a disconnected instance
    (burning no attempts) before it fails with that reason."""
    evolution_allowed_hosts: tuple[str, ...] = ()
    """LUMINAI_EVOLUTION_ALLOWED_HOSTS: comma-separated hostnames, IPs and CIDRs that agents set up with an
    organization key may reach although they are not public (e.g. `evolution.internal,10.0.0.0/8`); empty:
    such agents reach public unicast addresses only. Agents set up by the operator may point anywhere."""
    evolution_timeout_seconds: float = 30.0
    """LUMINAI_EVOLUTION_TIMEOUT_SECONDS: timeout of one call to Evolution API."""
    conversation_idle_seconds: float = 300.0
    """LUMINAI_CONVERSATION_IDLE_SECONDS: a conversation actor idle this long stops (its thread ends)."""
    max_conversation_actors: int = 2000
    """LUMINAI_MAX_CONVERSATION_ACTORS: live conversation actors at most; beyond it webhooks get 503."""
    webhook_timeout_seconds: float = 25.0
    """LUMINAI_WEBHOOK_TIMEOUT_SECONDS: how long a webhook waits for its conversation actor before 503."""
    max_webhook_bytes: int = 1024 * 1024
    """LUMINAI_MAX_WEBHOOK_BYTES: larger webhook bodies are refused with 413."""
    worker_threads: int = 4
    """LUMINAI_WORKER_THREADS: Dramatiq worker threads of the in-process worker (memory broker)."""
    worker_poll_ms: int = 100
    """LUMINAI_WORKER_POLL_MS: Dramatiq worker_timeout; the most an idle Redis worker waits to see a task."""
    db_pool_size: int = 10
    """LUMINAI_DB_POOL_SIZE: connections per process in the SQLAlchemy pool (PostgreSQL); a fixed pool."""
    fast_ingest: bool = True
    """LUMINAI_FAST_INGEST: on PostgreSQL, store a lead's message with one statement when it goes to an open
    talk or starts a new person's first talk (`persistence.append`); `false` sends every message through
    the general transaction."""
    inline_send: bool = True
    """LUMINAI_INLINE_SEND: the worker thread that stored a reply makes its first sendText attempt itself,
    right after the commit, instead of through the send queue (one Redis hop less per reply); retries,
    pacing waits and the talk's later replies still go through the `send_message` task. `false`: every
    attempt is a `send_message` task."""
    recovery_interval_seconds: float = 30.0
    """LUMINAI_RECOVERY_INTERVAL_SECONDS: how often the server re-enqueues AI turns that never ran."""
    redis_heartbeat_seconds: float = 15.0
    """LUMINAI_REDIS_HEARTBEAT_SECONDS: a Redis worker silent this long counts as dead and its unfinished
    tasks go to the other workers (Dramatiq's heartbeat timeout): how long a killed worker's work waits."""
    silence_alert_minutes: float = 30.0
    """LUMINAI_SILENCE_ALERT_MINUTES: an instance that usually has traffic and sent no webhook this long
    raises the silence alarm (`services.silence`); `0` turns it off."""
    silence_alert_min_webhooks: int = 10
    """LUMINAI_SILENCE_ALERT_MIN_WEBHOOKS: "usually has traffic": this many webhooks in the 24 hours before
    the silence began."""
    log_level: str = "INFO"
    """LUMINAI_LOG_LEVEL: Python logging level name."""
    log_format: str = "json"
    """LUMINAI_LOG_FORMAT: `json` (one object per line, with ids) or `text`."""
    metrics_dir: str | None = None
    """LUMINAI_METRICS_DIR: a folder shared by `serve` and the workers on one machine, so /metrics adds up
    every process (prometheus-client multiprocess mode); unset: each process counts for itself."""
    ignore_groups: bool = True
    """LUMINAI_IGNORE_GROUPS: skip group chats; `false` records them (no bot replies in groups)."""
    ignore_broadcasts: bool = True
    """LUMINAI_IGNORE_BROADCASTS: skip status@broadcast and broadcast lists; `false` records them."""
    ignore_newsletters: bool = True
    """LUMINAI_IGNORE_NEWSLETTERS: skip channel (newsletter) posts; `false` records them."""
    allow_unauthenticated_webhooks: bool = False
    """LUMINAI_ALLOW_UNAUTHENTICATED_WEBHOOKS: `true` lets agents without a webhook secret (made before
    secrets were generated) take webhooks that prove nothing; anyone knowing the instance name could then
    make the bot write to any number. Default `false`: such webhooks get 401."""
    rate_limit_per_instance: float = 50.0
    """LUMINAI_RATE_LIMIT_PER_INSTANCE: webhooks per second per instance (burst 4x); 0 disables; over: 429."""
    rate_limit_per_ip: float = 500.0
    """LUMINAI_RATE_LIMIT_PER_IP: webhooks per second per client IP (burst 4x); 0 disables; over: 429."""

    @cached_property  # read on every webhook
    def ignored_chat_kinds(self) -> frozenset[str]:
        flags = (("group", self.ignore_groups), ("broadcast", self.ignore_broadcasts))
        return frozenset(
            kind for kind, ignored in (*flags, ("newsletter", self.ignore_newsletters)) if ignored
        )

    @cached_property
    def address_policy(self) -> AddressPolicy:
        """The outbound address rule for URLs an organization key set (`outbound_address`)."""
        return AddressPolicy.from_entries(self.evolution_allowed_hosts)

    @property
    def uses_memory_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_default_sqlite(self) -> bool:
        return self.database_url == _default_database_url()

    def backoff_before_attempt(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2, 3, ...); the last configured wait repeats."""
        waits = self.send_backoff_seconds
        index = max(0, min(attempt - 2, len(waits) - 1))
        return waits[index]

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclasses.replace is untyped for kwargs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment; a malformed value raises ConfigError naming the variable."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}

        def text(name: str, attr: str) -> None:
            value = source.get(name, "").strip()
            if value:
                values[attr] = value

        def number(name: str, attr: str, kind: type[int] | type[float], minimum: float) -> None:
            raw = source.get(name, "").strip()
            if not raw:
                return
            try:
                value = kind(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from exc
            if not math.isfinite(value) or value < minimum:
                raise ConfigError(f"{name}={raw!r} must be a finite number of at least {minimum}")
            values[attr] = value

        def flag(name: str, attr: str) -> None:
            raw = source.get(name, "").strip().lower()
            if not raw:
                return
            if raw not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ConfigError(f"{name}={raw!r} must be true or false")
            values[attr] = raw in ("1", "true", "yes", "on")

        flag("LUMINAI_IGNORE_GROUPS", "ignore_groups")
        flag("LUMINAI_IGNORE_BROADCASTS", "ignore_broadcasts")
        flag("LUMINAI_IGNORE_NEWSLETTERS", "ignore_newsletters")
        flag("LUMINAI_FAST_INGEST", "fast_ingest")
        flag("LUMINAI_INLINE_SEND", "inline_send")
        flag("LUMINAI_AI_ONE_CALL", "ai_one_call")
        flag("LUMINAI_ALLOW_UNAUTHENTICATED_WEBHOOKS", "allow_unauthenticated_webhooks")
        text("LUMINAI_DATABASE_URL", "database_url")
        text("LUMINAI_BROKER_URL", "broker_url")
        text("LUMINAI_ADMIN_TOKEN", "admin_token")
        text("LUMINAI_SUPPRESSION_KEY", "suppression_key")
        text("LUMINAI_PUBLIC_URL", "public_url")
        text("OPENAI_API_KEY", "openai_api_key")
        text("OPENAI_BASE_URL", "openai_base_url")
        text("LUMINAI_AI_MODEL", "ai_model")
        text("LUMINAI_LOG_LEVEL", "log_level")
        text("LUMINAI_LOG_FORMAT", "log_format")
        text("LUMINAI_METRICS_DIR", "metrics_dir")
        number("LUMINAI_AI_TIMEOUT_SECONDS", "ai_timeout_seconds", float, 0.1)
        number("LUMINAI_AI_MAX_ATTEMPTS", "ai_max_attempts", int, 1)
        number("LUMINAI_AI_DEBOUNCE_SECONDS", "ai_debounce_seconds", float, 0)
        number("LUMINAI_TALK_EXPIRY_HOURS", "talk_expiry_hours", float, 0.0001)
        number("LUMINAI_SEND_MAX_ATTEMPTS", "send_max_attempts", int, 1)
        number("LUMINAI_EVOLUTION_TIMEOUT_SECONDS", "evolution_timeout_seconds", float, 0.1)
        number("LUMINAI_SEND_RATE_PER_INSTANCE", "send_rate_per_instance", float, 0)
        number("LUMINAI_SEND_MAX_WAIT_SECONDS", "send_max_wait_seconds", float, 0)
        number("LUMINAI_CONVERSATION_IDLE_SECONDS", "conversation_idle_seconds", float, 0.05)
        number("LUMINAI_MAX_CONVERSATION_ACTORS", "max_conversation_actors", int, 1)
        number("LUMINAI_WEBHOOK_TIMEOUT_SECONDS", "webhook_timeout_seconds", float, 0.1)
        number("LUMINAI_MAX_WEBHOOK_BYTES", "max_webhook_bytes", int, 1024)
        number("LUMINAI_WORKER_THREADS", "worker_threads", int, 1)
        number("LUMINAI_WORKER_POLL_MS", "worker_poll_ms", int, 10)
        number("LUMINAI_DB_POOL_SIZE", "db_pool_size", int, 1)
        number("LUMINAI_RECOVERY_INTERVAL_SECONDS", "recovery_interval_seconds", float, 0.1)
        number("LUMINAI_SILENCE_ALERT_MINUTES", "silence_alert_minutes", float, 0)
        number("LUMINAI_REDIS_HEARTBEAT_SECONDS", "redis_heartbeat_seconds", float, 2)
        number("LUMINAI_SILENCE_ALERT_MIN_WEBHOOKS", "silence_alert_min_webhooks", int, 1)
        number("LUMINAI_RATE_LIMIT_PER_INSTANCE", "rate_limit_per_instance", float, 0)
        number("LUMINAI_RATE_LIMIT_PER_IP", "rate_limit_per_ip", float, 0)

        raw_hosts = source.get("LUMINAI_EVOLUTION_ALLOWED_HOSTS", "").strip()
        if raw_hosts:
            hosts = tuple(part.strip() for part in raw_hosts.split(",") if part.strip())
            AddressPolicy.from_entries(hosts)  # a malformed entry is a ConfigError naming it
            values["evolution_allowed_hosts"] = hosts

        raw_backoff = source.get("LUMINAI_SEND_BACKOFF_SECONDS", "").strip()
        if raw_backoff:
            try:
                waits = tuple(float(part) for part in raw_backoff.split(","))
            except ValueError as exc:
                raise ConfigError(
                    f"LUMINAI_SEND_BACKOFF_SECONDS={raw_backoff!r} must be comma-separated seconds, e.g. 2,4"
                ) from exc
            if any(not math.isfinite(wait) or wait < 0 for wait in waits):
                raise ConfigError(f"LUMINAI_SEND_BACKOFF_SECONDS={raw_backoff!r} has a negative wait")
            values["send_backoff_seconds"] = waits

        level = str(values.get("log_level", "INFO")).upper()
        level = {"WARN": "WARNING"}.get(level, level)
        if level not in LOG_LEVELS:
            raise ConfigError(f"LUMINAI_LOG_LEVEL={level!r} must be one of {', '.join(LOG_LEVELS)}")
        values["log_level"] = level
        if values.get("log_format", "json") not in ("json", "text"):
            raise ConfigError(f"LUMINAI_LOG_FORMAT={values['log_format']!r} must be json or text")
        if "database_url" in values:
            try:
                make_url(str(values["database_url"]))
            except ArgumentError as exc:
                raise ConfigError(f"LUMINAI_DATABASE_URL is not a database URL: {exc}") from exc
        settings = cls(**values)  # type: ignore[arg-type]  # values were type-checked one by one above
        if not (settings.broker_url.startswith("memory://") or settings.broker_url.startswith("redis")):
            raise ConfigError(
                f"LUMINAI_BROKER_URL={settings.broker_url!r}: use memory:// or redis://host:port/db"
            )
        return settings
