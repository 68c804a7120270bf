"""Where and how a stored reply is sent: the instance, the number, the text (`Target`), or why it cannot be.

`deliver_outbound` (`services.outbound`) builds a `Target` from the loaded rows (`target_of`) or from the
one-statement claim's row (`claimed_target`); both go through `build_target`, and `reply_number` is the one
rule for the number: the chat's phone JID as digits, its LID JID as is, else the contact's number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from luminai_actors.domain.phone import digits_for_evolution, is_lid_jid, is_phone_jid
from luminai_actors.persistence.send_path import ClaimedSend
from luminai_actors.persistence.tables import (
    WHATSAPP_WAITING_STATUSES,
    Agent,
    Contact,
    Organization,
    Talk,
    TalkMessage,
)


@dataclass(frozen=True, slots=True)
class Target:
    server_url: str
    trusted: bool  # the operator set server_url: the outbound address rule does not apply
    api_key: str
    instance: str
    number: str
    text: str
    api_version: int
    delay_ms: int | None
    sets_message_id: bool = False  # the server takes our `messageId` (`evolution_takes_message_id`)
    maybe_sent_at: str | None = None  # an earlier attempt may have gone out (`services.maybe_sent`)


def unavailable_reason(agent: Agent, organization: Organization | None) -> str | None:
    if organization is not None and not organization.active:
        return "organization is inactive"
    if not agent.active:
        return "agent is inactive"
    if not agent.whatsapp_active:
        return "agent's WhatsApp is turned off"
    if agent.whatsapp_status in WHATSAPP_WAITING_STATUSES:
        return f"WhatsApp instance is {agent.whatsapp_status}"
    return None


def claimed_target(claimed: ClaimedSend) -> Target | None:
    """What sendText needs, from the one-statement claim's row; None: no address to reply to."""
    number = reply_number(claimed.remote_jid, lambda: claimed.contact_mobile_phone or claimed.contact_phone)
    if not number:
        return None
    return build_target(
        claimed.server_url,
        claimed.server_url_trusted,
        claimed.api_key,
        claimed.instance,
        claimed.agent_metadata,
        number,
        claimed.body,
        claimed.meta,
    )


def configuration_problem(agent: Agent | None) -> str | None:
    if agent is None:
        return "message has no agent"
    missing = [
        name
        for name, value in (
            ("whatsappServerUrl", agent.whatsapp_server_url),
            ("whatsappApiKey", agent.whatsapp_api_key),
            ("whatsappInstanceName", agent.whatsapp_instance_name),
        )
        if not value
    ]
    return f"agent WhatsApp configuration lacks {', '.join(missing)}" if missing else None


def reply_number(jid: str | None, contact_phone: Callable[[], str | None]) -> str | None:
    """Where to send: the chat's phone JID as digits, its LID JID as is (Evolution accepts it; no phone is
    known for such a chat), else the contact's mobile or phone number."""
    if jid and is_phone_jid(jid):
        return digits_for_evolution(jid)
    if jid and is_lid_jid(jid):
        return jid
    phone = contact_phone()
    return digits_for_evolution(phone) if phone else None


def target_of(uow: Any, agent: Agent, talk: Talk, message: TalkMessage) -> Target | None:
    def contact_phone() -> str | None:
        contact = uow.repo.get(Contact, talk.contact_id)
        return contact.mobile_phone or contact.phone if contact else None

    number = reply_number(talk.whatsapp_remote_jid, contact_phone)
    if not number:
        return None
    return build_target(
        str(agent.whatsapp_server_url),
        bool(agent.whatsapp_server_url_trusted),
        str(agent.whatsapp_api_key),
        str(agent.whatsapp_instance_name),
        agent.whatsapp_metadata,
        number,
        message.body,
        message.meta,
    )


def build_target(
    server_url: str,
    trusted: bool,
    api_key: str,
    instance: str,
    agent_metadata: dict[str, Any] | None,
    number: str,
    text: str,
    meta: dict[str, Any],
) -> Target:
    metadata = agent_metadata or {}
    api_version = 1 if str(metadata.get("apiVersion", "2")).startswith("1") else 2
    typing = meta.get("typingDelayMs")
    return Target(
        server_url=server_url,
        trusted=trusted,
        api_key=api_key,
        instance=instance,
        number=number,
        text=text,
        api_version=api_version,
        delay_ms=int(typing) if isinstance(typing, int | float) and typing > 0 else None,
        sets_message_id=api_version == 2 and evolution_takes_message_id(metadata.get("evolutionVersion")),
        maybe_sent_at=str(meta["whatsappMaybeSentAt"]) if meta.get("whatsappMaybeSentAt") else None,
    )


def evolution_takes_message_id(version: object) -> bool:
    """Evolution 2.4.0 and later make sendText's `messageId` the WhatsApp message id; 2.3.x and a server
    whose version test-connection has not read yet get the flat `{"number", "text"}` body as always."""
    if not isinstance(version, str):
        return False
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]]
    return len(parts) == 2 and tuple(parts) >= (2, 4)
