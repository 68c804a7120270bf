"""Evolution API webhook bodies turned into typed, frozen events; the web layer's only view of Evolution.

`parse_webhook` takes the decoded JSON of one POST (reference §1.2 envelope) and returns one `WebhookEvent`.
It is pure: it never touches the network or the database, and it never trusts the body: every field is
type-checked, and a shape Evolution does not send raises `PayloadError(status=422, path=<dotted path>)`,
which Evolution treats as "do not retry" (reference §1.6). Events we have no use for come back as
`IgnoredEvent` so the web layer can answer 2xx and move on.

The who-is-this logic follows reference §2.1: across Evolution versions the chat JID may be a phone-number
JID (`…@s.whatsapp.net`) or a privacy LID (`…@lid`), with the other form in `remoteJidAlt`, `senderPn` or
`previousRemoteJid`, so both are surfaced and `reply_jid` says where an answer must go.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

from luminai_actors.domain.phone import whatsapp_jid
from luminai_actors.errors import PayloadError
from luminai_actors.evolution._fields import (
    as_mapping,
    identifier,
    join,
    number,
    opt_bool,
    opt_id,
    opt_int,
    opt_mapping,
    opt_text,
    req_id,
)
from luminai_actors.evolution.content import MessageContent, extract_content

# Evolution's `Events` enum values (src/api/types/wa.types.ts) plus `send.message.update` from 2.3.x.
_EVENT_NAMES: Final = """
    application.startup instance.create instance.delete qrcode.updated connection.update status.instance
    messages.set messages.upsert messages.edited messages.update messages.delete send.message
    send.message.update contacts.set contacts.upsert contacts.update presence.update chats.set
    chats.update chats.upsert chats.delete groups.upsert groups.update group-participants.update call
    typebot.start typebot.change-status labels.edit labels.association creds.update
    messaging-history.set remove.instance logout.instance
"""
KNOWN_EVENTS: Final = tuple(_EVENT_NAMES.split())
_SEPARATORS: Final = re.compile(r"[.-]")
# Evolution spells configuration names `name.replace(/[.-]/g, "_").toUpperCase()` and URL slugs as that in
# kebab-lower; the mapping loses where the dots were, so only the list of real names can invert it.
_BY_UPPER_SNAKE: Final = {_SEPARATORS.sub("_", name).upper(): name for name in KNOWN_EVENTS}

ChatKind = Literal["user", "group", "broadcast", "newsletter"]

# Receipt order; renderStatus numbers them 0..5 the same way. ERROR and DELETED are outside the progression.
STATUS_RANKS: Final = {"PENDING": 1, "SERVER_ACK": 2, "DELIVERY_ACK": 3, "READ": 4, "PLAYED": 5}
_RENDERED_STATUS: Final = ("ERROR", "PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")
_STATUS_NUMBER: Final = re.compile(r"[0-9]{1,3}")

_PN_SUFFIX: Final = "@s.whatsapp.net"
_LID_SUFFIX: Final = "@lid"
# Bounds of what a webhook may carry, set by the columns that store it (parse-time, so that a hostile or
# broken body is a 422 here and never a database error that Evolution would redeliver forever).
MAX_INSTANCE_LENGTH: Final = 255  # agent.whatsapp_instance_name
MAX_LID_LENGTH: Final = 64  # contact.whatsapp_lid
MAX_PUSH_NAME_LENGTH: Final = 100  # display names; WhatsApp's own limit is 25. talk.subject holds 255
# WhatsApp did not exist before 2009, and a value past 2100 is a millisecond count or garbage.
_EARLIEST_TIMESTAMP: Final = 1_230_768_000
_LATEST_TIMESTAMP: Final = 4_102_444_800


def status_rank(status: str) -> int:
    """1..5 along PENDING < SERVER_ACK < DELIVERY_ACK < READ < PLAYED; 0 for ERROR, DELETED and unknowns."""
    return STATUS_RANKS.get(status, 0)


@dataclass(frozen=True, slots=True)
class MessageUpsert:
    """One message seen in a chat (`messages.upsert`, or `send.message` for what we sent through the API)."""

    event: str
    instance: str
    message_id: str
    remote_jid: str
    from_me: bool
    chat_kind: ChatKind
    phone_jid: str | None
    lid_jid: str | None
    reply_jid: str
    participant_jid: str | None
    push_name: str | None
    sent_at: datetime | None
    status: str | None
    content: MessageContent
    quoted_message_id: str | None
    source: str | None


@dataclass(frozen=True, slots=True)
class MessageBatch:
    instance: str
    messages: tuple[MessageUpsert, ...]


@dataclass(frozen=True, slots=True)
class MessageStatusUpdate:
    """A receipt for a message: `key_id` is the WhatsApp id that sendText returned as `key.id`."""

    instance: str
    key_id: str
    remote_jid: str | None
    from_me: bool | None
    status: str

    @property
    def rank(self) -> int:
        return status_rank(self.status)


@dataclass(frozen=True, slots=True)
class StatusUpdates:
    instance: str
    updates: tuple[MessageStatusUpdate, ...]


@dataclass(frozen=True, slots=True)
class ConnectionUpdate:
    instance: str
    state: str
    status_reason: int | None
    wuid: str | None
    profile_name: str | None


@dataclass(frozen=True, slots=True)
class InstanceGone:
    """The instance logged out or was deleted; it will not send anything until it is paired again."""

    instance: str
    event: str


@dataclass(frozen=True, slots=True)
class QrCodeUpdate:
    instance: str
    code: str | None
    base64: str | None
    pairing_code: str | None


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    instance: str
    event: str
    reason: str


WebhookEvent: TypeAlias = (
    MessageUpsert
    | MessageBatch
    | MessageStatusUpdate
    | StatusUpdates
    | ConnectionUpdate
    | InstanceGone
    | QrCodeUpdate
    | IgnoredEvent
)


def normalize_event_name(name: str) -> str:
    """The payload spelling (`messages.upsert`) of an event named in any of Evolution's three spellings."""
    stripped = name.strip()
    known = _BY_UPPER_SNAKE.get(_SEPARATORS.sub("_", stripped).upper())
    return known if known is not None else re.sub(r"[_-]", ".", stripped.lower())


def parse_webhook(payload: object, path_event: str | None = None) -> WebhookEvent:
    """The event in one webhook body; `path_event` is the byEvents URL slug when the request carried one."""
    body = as_mapping(payload, "")
    instance = req_id(body, "instance", "", max_length=MAX_INSTANCE_LENGTH)
    event = _event_name(body, path_event)
    data = body.get("data")
    if event in ("messages.upsert", "send.message"):
        return _parse_upserts(event, instance, data)
    if event == "messages.update":
        return _parse_receipts(instance, data)
    if event == "connection.update":
        return _parse_connection(instance, data)
    if event in ("logout.instance", "remove.instance"):
        return InstanceGone(instance, event)
    if event == "qrcode.updated":
        return _parse_qrcode(instance, data)
    if event in KNOWN_EVENTS:
        return IgnoredEvent(instance, event, f"{event} needs no action")
    # Newer Evolution versions add events; refusing them would only make Evolution log errors.
    return IgnoredEvent(instance, event, "unknown event")


def _event_name(body: Mapping[str, object], path_event: str | None) -> str:
    slug = None
    if path_event is not None and path_event.strip():
        slug = normalize_event_name(identifier(path_event, "event"))
    raw = opt_id(body, "event", "")
    if raw is None or not raw.strip():
        if slug is None:
            raise PayloadError("event is missing from the body and the URL", path="event")
        return slug
    event = normalize_event_name(raw)
    if slug is not None and slug != event:
        raise PayloadError(f"event {event!r} does not match the URL's {slug!r}", path="event")
    return event


def _parse_upserts(event: str, instance: str, data: object) -> MessageUpsert | MessageBatch | IgnoredEvent:
    if not isinstance(data, Sequence) or isinstance(data, str):
        return _parse_upsert(event, instance, as_mapping(data, "data"), "data")
    if not data:
        return IgnoredEvent(instance, event, "no messages in the batch")
    messages = tuple(
        _parse_upsert(event, instance, as_mapping(item, f"data[{index}]"), f"data[{index}]")
        for index, item in enumerate(data)
    )
    return MessageBatch(instance, messages)


def _parse_upsert(event: str, instance: str, data: Mapping[str, object], path: str) -> MessageUpsert:
    key_path = join(path, "key")
    key = as_mapping(data.get("key"), key_path)
    message_id = req_id(key, "id", key_path)
    remote_jid = whatsapp_jid(req_id(key, "remoteJid", key_path))
    if not _bare_jid(remote_jid).partition("@")[0]:
        where = join(key_path, "remoteJid")
        raise PayloadError(f"{where} has no user part before '@'", path=where)
    # An absent fromMe reads as protobuf's default, false, the way Baileys itself reads it.
    from_me = opt_bool(key, "fromMe", key_path) or False
    chat_kind = _chat_kind(remote_jid)
    if chat_kind == "user":
        phone_jid = _first_jid(key, key_path, _PN_SUFFIX, "remoteJidAlt", "senderPn", "remoteJid")
        lid_jid = _first_jid(
            key, key_path, _LID_SUFFIX, "remoteJid", "remoteJidAlt", "senderLid", "previousRemoteJid"
        )
        # Sends to a LID have stalled or bounced with exists:false (reference §7, #2272); the PN is safer.
        lid_chat = _bare_jid(remote_jid).endswith(_LID_SUFFIX)
        reply_jid = phone_jid if lid_chat and phone_jid is not None else _bare_jid(remote_jid)
    else:
        phone_jid = _first_jid(key, key_path, _PN_SUFFIX, "participantAlt", "participantPn", "participant")
        lid_jid = _first_jid(key, key_path, _LID_SUFFIX, "participant", "participantAlt")
        reply_jid = remote_jid

    message_path = join(path, "message")
    content, inner_quote = extract_content(
        opt_mapping(data, "message", path), opt_id(data, "messageType", path), message_path
    )
    # Evolution ≥2.2 moves the quote out of the content into data.contextInfo; older ones leave it inside.
    context = opt_mapping(data, "contextInfo", path)
    outer_quote = None if context is None else opt_id(context, "stanzaId", join(path, "contextInfo"))
    push_name = (opt_text(data, "pushName", path, max_length=MAX_PUSH_NAME_LENGTH) or "").strip() or None
    return MessageUpsert(
        event=event,
        instance=instance,
        message_id=message_id,
        remote_jid=remote_jid,
        from_me=from_me,
        chat_kind=chat_kind,
        phone_jid=phone_jid,
        lid_jid=lid_jid,
        reply_jid=reply_jid,
        participant_jid=opt_id(key, "participant", key_path),
        push_name=push_name,
        sent_at=_timestamp(data.get("messageTimestamp"), join(path, "messageTimestamp")),
        status=_status(data, "status", path),
        content=content,
        quoted_message_id=outer_quote or inner_quote,
        source=opt_id(data, "source", path),
    )


def _chat_kind(jid: str) -> ChatKind:
    if jid.endswith("@g.us"):
        return "group"
    if jid.endswith("@broadcast"):
        return "broadcast"
    if jid.endswith("@newsletter"):
        return "newsletter"
    return "user"


def _bare_jid(jid: str) -> str:
    """`jid` without the `:device` part WhatsApp adds to address one linked device of an account."""
    user, at, server = jid.partition("@")
    return f"{user.partition(':')[0]}{at}{server}"


def _first_jid(key: Mapping[str, object], path: str, suffix: str, *fields: str) -> str | None:
    """The first of `fields` holding a JID on `suffix`'s server; an empty user (`"@lid"`) is absent."""
    for name in fields:
        jid = opt_id(key, name, path)
        if jid is None:
            continue
        bare = _bare_jid(whatsapp_jid(jid))
        user = bare.partition("@")[0]
        if not bare.endswith(suffix) or not user:
            continue
        if suffix == _LID_SUFFIX and len(user) > MAX_LID_LENGTH:
            where = join(path, name)
            raise PayloadError(f"{where} has a LID longer than {MAX_LID_LENGTH} characters", path=where)
        return bare
    return None


def _timestamp(value: object, path: str) -> datetime | None:
    if value is None:
        return None
    seconds = number(value, path)
    if isinstance(seconds, float) and not math.isfinite(seconds):
        return None
    if not _EARLIEST_TIMESTAMP <= seconds < _LATEST_TIMESTAMP:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def _status(obj: Mapping[str, object], key: str, path: str) -> str | None:
    """A message status as Evolution's upper-case name; renderStatus numbers (0..5) are translated."""
    value = obj.get(key)
    where = join(path, key)
    if isinstance(value, str) and _STATUS_NUMBER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(_RENDERED_STATUS):
            raise PayloadError(f"{where} is not a known status number", path=where)
        return _RENDERED_STATUS[value]
    text = opt_id(obj, key, path)
    return None if text is None or not text.strip() else text.strip().upper()


def _parse_receipts(instance: str, data: object) -> MessageStatusUpdate | StatusUpdates | IgnoredEvent:
    if isinstance(data, Sequence) and not isinstance(data, str):
        parsed = (_parse_receipt(instance, item, f"data[{index}]") for index, item in enumerate(data))
        updates = tuple(update for update in parsed if update is not None)
        return StatusUpdates(instance, updates) if updates else _no_status(instance)
    update = _parse_receipt(instance, data, "data")
    return update if update is not None else _no_status(instance)


def _no_status(instance: str) -> IgnoredEvent:
    return IgnoredEvent(instance, "messages.update", "no status in the update")


def _parse_receipt(instance: str, item: object, path: str) -> MessageStatusUpdate | None:
    data = as_mapping(item, path)
    status = _status(data, "status", path)
    # Evolution forwards updates that change something other than the status (e.g. poll votes); not receipts.
    if status is None:
        return None
    # Before the flat keyId shape, Evolution passed the Baileys key through.
    key = opt_mapping(data, "key", path) or {}
    key_path = join(path, "key")
    key_id = opt_id(data, "keyId", path) or opt_id(key, "id", key_path)
    if key_id is None or not key_id.strip():
        raise PayloadError(f"{join(path, 'keyId')} is required", path=join(path, "keyId"))
    remote_jid = opt_id(data, "remoteJid", path) or opt_id(key, "remoteJid", key_path)
    from_me = opt_bool(data, "fromMe", path)
    if from_me is None:
        from_me = opt_bool(key, "fromMe", key_path)
    return MessageStatusUpdate(instance, key_id, remote_jid, from_me, status)


def _parse_connection(instance: str, data: object) -> ConnectionUpdate:
    body = as_mapping(data, "data")
    profile_name = (opt_text(body, "profileName", "data") or "").strip() or None
    return ConnectionUpdate(
        instance=instance,
        state=req_id(body, "state", "data").strip().lower(),
        status_reason=opt_int(body, "statusReason", "data"),
        wuid=opt_id(body, "wuid", "data"),
        profile_name=profile_name,
    )


def _parse_qrcode(instance: str, data: object) -> QrCodeUpdate | IgnoredEvent:
    body = as_mapping(data, "data")
    qrcode = opt_mapping(body, "qrcode", "data")
    if qrcode is None:
        # Sent instead of a code once QRCODE_LIMIT is reached; connection.update "refused" follows.
        return IgnoredEvent(instance, "qrcode.updated", "no QR code in the update (QR code limit reached?)")
    return QrCodeUpdate(
        instance=instance,
        code=opt_id(qrcode, "code", "data.qrcode"),
        base64=opt_id(qrcode, "base64", "data.qrcode"),
        pairing_code=opt_id(qrcode, "pairingCode", "data.qrcode"),
    )
