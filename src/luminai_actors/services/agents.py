"""AgentDirectory: what the webhook layer must know about an instance before any work (owner, secret).

Every webhook names its instance; authenticating it needs the owning agent's `whatsapp_webhook_token`. The
directory caches the answer for a few seconds so a burst of webhooks costs one indexed query, and forgets an
instance at once when this process changes its agent (the admin API calls `forget`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from luminai_actors.persistence.tables import Organization, TreeFlow
from luminai_actors.persistence.uow import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: uuid.UUID
    organization_id: uuid.UUID
    webhook_token: str | None
    active: bool
    organization_active: bool = True  # an inactive organization's webhooks are ignored
    updated_at: datetime | None = None  # the row's version: `persistence.append` stores only if unchanged
    whatsapp_metadata: dict[str, Any] = field(default_factory=dict)  # its settings (`ignoreJids`, ...)
    tree_flow_id: uuid.UUID | None = None  # its tree flow as it was read (a new lead's talk starts it)
    tree_flow_definition: dict[str, Any] | None = None
    tree_flow_updated_at: datetime | None = None


class AgentDirectory:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow_factory = uow_factory
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, AgentInfo | None]] = {}

    def cached(self, instance: str) -> tuple[bool, AgentInfo | None]:
        """(True, info) when a fresh answer is cached, without touching the database; else (False, None)."""
        with self._lock:
            entry = self._cache.get(instance)
        if entry is not None and self._clock() - entry[0] < self._ttl:
            return True, entry[1]
        return False, None

    def lookup(self, instance: str) -> AgentInfo | None:
        now = self._clock()
        hit, info = self.cached(instance)
        if hit:
            return info
        with self._uow_factory() as uow:
            agent = uow.repo.agent_by_instance(instance)
            org = uow.repo.get(Organization, agent.organization_id) if agent is not None else None
            flow = uow.repo.get(TreeFlow, agent.tree_flow_id) if agent and agent.tree_flow_id else None
            info = (
                AgentInfo(
                    agent.id,
                    agent.organization_id,
                    agent.whatsapp_webhook_token,
                    bool(agent.active and agent.whatsapp_active),
                    org is None or org.active,
                    agent.updated_at,
                    dict(agent.whatsapp_metadata or {}),
                    flow.id if flow else None,
                    flow.definition if flow else None,
                    flow.updated_at if flow else None,
                )
                if agent is not None
                else None
            )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[instance] = (now, info)
        return info

    def forget(self, instance: str | None = None) -> None:
        with self._lock:
            if instance is None:
                self._cache.clear()
            else:
                self._cache.pop(instance, None)
