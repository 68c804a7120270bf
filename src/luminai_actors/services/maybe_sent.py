"""Before resending a reply that may already have gone out, look for it (Evolution 2.3.x).

A `sendText` call that reached Evolution and got no answer (a read timeout: Evolution slower than our
client; the connection closed before the answer) may have been carried out. The failed attempt records
`whatsappMaybeSentAt` in the reply's metadata, and so does the claim that takes over a reply whose worker
died mid-call (its lease expired while `sending`). On Evolution 2.4.0 and later the resend carries the same
`messageId` as the first attempt, so WhatsApp keeps one message; on 2.3.x, which ignores `messageId`, the
next attempt first asks Evolution for the instance's newest messages from us to that chat
(`POST /chat/findMessages`), and a message with the reply's exact text sent since that attempt began
settles the reply as sent with its WhatsApp id instead of a second copy. If the search fails, the reply is
sent again: a possible duplicate, as without the check, never a lost reply.

The EVOLUTION channel stores the number as it was sent and Baileys the full JID, so both are searched.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from luminai_actors.errors import EvolutionError
from luminai_actors.evolution.client import EvolutionClient, SendResult
from luminai_actors.persistence.tables import SEND_SENDING, TalkMessage
from luminai_actors.services.send_target import Target

MAYBE_SENT = "whatsappMaybeSentAt"
"""Metadata key of a reply: when the attempt that may have gone out began (ISO 8601)."""

CLOCK_SKEW = timedelta(seconds=10)  # Evolution's clock against ours, and the seconds of messageTimestamp


def look_first(target: Target) -> datetime | None:
    """When to look back to before sending `target`, or None: no earlier attempt may have gone out, or the
    server takes our `messageId` (then the resend itself is safe)."""
    if target.sets_message_id or target.maybe_sent_at is None:
        return None
    try:
        return datetime.fromisoformat(target.maybe_sent_at)
    except ValueError:
        return None


def went_out_before(client: EvolutionClient, target: Target) -> SendResult | None:
    """The message an earlier attempt of `target` sent after all, when one may have gone out and the search
    finds it; None means: send it."""
    since = look_first(target)
    return sent_already(client, target, since) if since is not None else None


def note_takeover(message: TalkMessage, target: Target) -> Target:
    """A claim taking over a reply still `sending` (its worker died mid-call, the lease expired): that
    attempt may have gone out; noted in the reply's metadata and on the target (the ORM claim's part of
    what `persistence.send_path`'s claim statement does)."""
    previous = message.meta.get("whatsappLastAttemptAt")
    if message.send_status != SEND_SENDING or not isinstance(previous, str):
        return target
    message.meta = {**message.meta, MAYBE_SENT: previous}
    return replace(target, maybe_sent_at=previous)


def sent_already(client: EvolutionClient, target: Target, since: datetime) -> SendResult | None:
    """The message Evolution sent for `target` since `since`, if the search finds it."""
    jids = [target.number] if "@" in target.number else [target.number, f"{target.number}@s.whatsapp.net"]
    earliest = (since - CLOCK_SKEW).timestamp()
    for jid in jids:
        try:
            records = client.find_messages(
                target.server_url,
                target.api_key,
                target.instance,
                {"remoteJid": jid, "fromMe": True},
                trusted=target.trusted,
            )
        except EvolutionError:
            return None  # cannot tell: send again
        for record in records:
            found = record.get("key")
            key: dict[str, Any] = found if isinstance(found, dict) else {}
            stamp = record.get("messageTimestamp")
            if (
                _text(record.get("message")) == target.text
                and isinstance(stamp, int | float)
                and stamp >= earliest
                and isinstance(key.get("id"), str)
            ):
                return SendResult(key["id"], key.get("remoteJid"), 200, {"foundBy": "findMessages", **record})
    return None


def _text(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("conversation"), str):
        return str(message["conversation"])
    extended = message.get("extendedTextMessage")
    return (
        str(extended["text"])
        if isinstance(extended, dict) and isinstance(extended.get("text"), str)
        else None
    )
