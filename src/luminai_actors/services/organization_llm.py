"""An organization's own LLM: its OpenAI-compatible base URL, model and key, else the deployment's.

Set with `PATCH /api/admin/organizations/{orgId}` `{"ai": {"baseUrl"?, "model"?, "apiKey"?}}` (`null` clears a
value); documents show `{"baseUrl", "model", "apiKeySet"}`: the key is written, never read back.

Which brain a turn uses (`OrganizationBrains.for_organization`), one rule:
- nothing set: the deployment's brain (`OPENAI_*`, `LUMINAI_AI_MODEL`, or the offline brain);
- a `baseUrl`: that server, with the organization's key and model (the deployment's model when none). The
  deployment's key is never sent to an organization's server; without a key of its own none is sent (local
  servers such as llama.cpp's need none);
- only a key or a model: the deployment's base URL with them (a model alone needs the deployment's LLM).

A base URL set with an organization key obeys the outbound address rule (`outbound_address`): checked when
saved (422 `ai.baseUrl`) and at every connection (`GuardedTransport`), so a DNS answer that changes later
cannot reach the service's own network either. The operator's URL is trusted (`ai_base_url_trusted`).

One `OpenAIBrain` is kept per distinct setting, so the structured-output mode it found for that server is
remembered across turns (`ai.openai_brain.STRUCTURED_MODES`).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from luminai_actors.ai.brain import Brain
from luminai_actors.ai.openai_brain import OpenAIBrain, connect
from luminai_actors.config import Settings
from luminai_actors.errors import ValidationError
from luminai_actors.outbound_address import AddressPolicy, AddressRefused, guarded_client, http_url
from luminai_actors.persistence.tables import Organization
from luminai_actors.persistence.uow import UnitOfWorkFactory

AI_FIELDS = frozenset({"baseUrl", "model", "apiKey"})
NO_KEY = "none"  # what the openai client sends when the organization's own server was given no key
MAX_BRAINS = 256  # distinct organization settings kept with what their servers support


@dataclass(frozen=True)
class OrganizationLlm:
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    trusted: bool = False  # the operator set base_url: the outbound address rule does not apply

    @property
    def configured(self) -> bool:
        return bool(self.base_url or self.model or self.api_key)


def llm_of(org: Organization) -> OrganizationLlm:
    return OrganizationLlm(org.ai_base_url, org.ai_model, org.ai_api_key, bool(org.ai_base_url_trusted))


def llm_json(org: Organization) -> dict[str, Any]:
    return {"baseUrl": org.ai_base_url, "model": org.ai_model, "apiKeySet": bool(org.ai_api_key)}


def _value(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body[key]
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > limit:
        raise ValidationError(
            f"ai.{key}", f"must be null or a non-empty string of at most {limit} characters"
        )
    return value.strip()


def apply_llm(org: Organization, body: Any, policy: AddressPolicy, *, trusted: bool) -> None:
    """Merge a PATCH's `ai` object into org. A base URL is held to `policy` (the outbound address rule)
    unless `trusted` (the operator's). 422 naming `ai.<field>` when a value is refused."""
    if not isinstance(body, dict):
        raise ValidationError("ai", "must be an object with baseUrl, model and apiKey")
    for key in body:
        if key not in AI_FIELDS:
            raise ValidationError(f"ai.{key}", "is not a field that can be changed")
    if "baseUrl" in body:
        url = _value(body, "baseUrl", 500)
        if url is not None:
            try:
                if trusted:
                    http_url(url)
                else:
                    policy.check_url(url)
            except AddressRefused as exc:
                raise ValidationError("ai.baseUrl", exc.reason) from exc
        org.ai_base_url, org.ai_base_url_trusted = url, trusted
    if "model" in body:
        org.ai_model = _value(body, "model", 255)
    if "apiKey" in body:
        org.ai_api_key = _value(body, "apiKey", 2000)


class OrganizationBrains:
    """The brain for each talk's organization: the deployment's, or one built from its own LLM setting."""

    def __init__(self, settings: Settings, default: Brain, policy: AddressPolicy | None = None) -> None:
        self._settings = settings
        self._default = default
        self._policy = policy if policy is not None else settings.address_policy
        self._brains: OrderedDict[tuple[Any, ...], Brain] = OrderedDict()
        self._lock = threading.Lock()

    def for_organization(self, uow_factory: UnitOfWorkFactory, organization_id: uuid.UUID) -> Brain:
        with uow_factory() as uow:
            org = uow.repo.get(Organization, organization_id)
            llm = llm_of(org) if org is not None else OrganizationLlm()
        return self.for_llm(llm)

    def for_llm(self, llm: OrganizationLlm) -> Brain:
        settings = self._settings
        if not llm.configured or (not llm.base_url and not llm.api_key and not settings.openai_api_key):
            return self._default
        base_url: str | None = llm.base_url
        if base_url:
            key, trusted = llm.api_key or NO_KEY, llm.trusted
        else:
            base_url, trusted = settings.openai_base_url, True
            key = llm.api_key or settings.openai_api_key or NO_KEY
        model = llm.model or settings.ai_model
        cache_key = (base_url, model, hashlib.sha256(key.encode()).hexdigest(), trusted)
        with self._lock:
            brain = self._brains.get(cache_key)
            if brain is None:
                brain = self._build(base_url, model, key, trusted)
                self._brains[cache_key] = brain
                while len(self._brains) > MAX_BRAINS:  # a turn still using it fails and is retried
                    _close(self._brains.popitem(last=False)[1])
            self._brains.move_to_end(cache_key)
            return brain

    def close(self) -> None:
        with self._lock:
            brains, self._brains = list(self._brains.values()), OrderedDict()
        for brain in brains:
            _close(brain)

    def _build(self, base_url: str | None, model: str, key: str, trusted: bool) -> Brain:
        timeout, one_call = self._settings.ai_timeout_seconds, self._settings.ai_one_call
        http_client = None if trusted else guarded_client(self._policy, timeout=timeout)
        return connect(key, base_url, model, timeout=timeout, one_call=one_call, http_client=http_client)


def _close(brain: Brain) -> None:
    if isinstance(brain, OpenAIBrain):
        brain.close()
