"""parse_webhook over bodies shaped like Evolution API v2 sends them (reference §1-§3, examples A, B, C)."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from luminai_actors.errors import PayloadError
from luminai_actors.evolution.webhook import (
    ConnectionUpdate,
    IgnoredEvent,
    InstanceGone,
    MessageBatch,
    MessageStatusUpdate,
    MessageUpsert,
    QrCodeUpdate,
    StatusUpdates,
    normalize_event_name,
    parse_webhook,
    status_rank,
)

ENVELOPE: dict[str, Any] = {
    "destination": "https://bot.example.com/hooks/evolution",
    "date_time": "2025-10-21T11:40:39.512Z",
    "sender": "5511912345678@s.whatsapp.net",
    "server_url": "https://evo.example.com",
    "apikey": "B5E2C1D0-INSTANCE-TOKEN",
}

EXAMPLE_A: dict[str, Any] = {
    "event": "messages.upsert",
    "instance": "acme-support",
    "data": {
        "key": {
            "remoteJid": "5511987654321@s.whatsapp.net",
            "remoteJidAlt": "207748159275123@lid",
            "fromMe": False,
            "id": "3A5F1C2B9D8E7F6A5B4C",
            "addressingMode": "pn",
        },
        "pushName": "Maria",
        "status": "DELIVERY_ACK",
        "message": {
            "conversation": "Oi, quero agendar",
            "messageContextInfo": {"deviceListMetadataVersion": 2},
        },
        "messageType": "conversation",
        "messageTimestamp": 1761057639,
        "instanceId": "0b7c6a3e-1f2d-4c5b-9a8e-7d6c5b4a3f21",
        "source": "ios",
    },
    **ENVELOPE,
}

EXAMPLE_B: dict[str, Any] = {
    "event": "messages.upsert",
    "instance": "acme-support",
    "data": {
        "key": {
            "remoteJid": "103899771998284@lid",
            "remoteJidAlt": "5521998765432@s.whatsapp.net",
            "fromMe": False,
            "id": "AC1D2E3F4A5B6C7D8E9F0A1B2C3D4E5F",
            "addressingMode": "lid",
        },
        "pushName": "João",
        "status": "DELIVERY_ACK",
        "message": {"conversation": "Pode ser às 15h?"},
        "contextInfo": {
            "stanzaId": "3EB0C0BD05DCA97A7C09CB",
            "participant": "5511912345678@s.whatsapp.net",
            "quotedMessage": {"conversation": "Qual horário prefere?"},
        },
        "messageType": "conversation",
        "messageTimestamp": 1761057702,
        "instanceId": "0b7c",
        "source": "android",
    },
    **ENVELOPE,
    "apikey": None,
}

EXAMPLE_C: dict[str, Any] = {
    "event": "messages.upsert",
    "instance": "acme-support",
    "data": {
        "key": {
            "remoteJid": "120363025123456789@g.us",
            "fromMe": False,
            "id": "3A9B8C7D6E5F4A3B2C1D",
            "participant": "84823447130133@lid",
            "participantAlt": "5531987650000@s.whatsapp.net",
            "addressingMode": "lid",
        },
        "pushName": "Ana",
        "status": "DELIVERY_ACK",
        "message": {
            "imageMessage": {
                "url": "https://mmg.whatsapp.net/x",
                "mimetype": "image/jpeg",
                "caption": "comprovante",
                "fileLength": {"low": 88123, "high": 0, "unsigned": True},
                "height": 1280,
                "width": 960,
            },
            "base64": "/9j/4AAQSkZJRgABAQ",
        },
        "messageType": "imageMessage",
        "messageTimestamp": 1761057800,
        "instanceId": "0b7c",
        "source": "android",
    },
    **ENVELOPE,
}


def with_data(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(base)
    payload["data"].update(changes)
    return payload


def with_key(base: dict[str, Any], key: dict[str, Any]) -> dict[str, Any]:
    return with_data(base, key=key)


def parse_upsert(payload: object, path_event: str | None = None) -> MessageUpsert:
    event = parse_webhook(payload, path_event)
    assert isinstance(event, MessageUpsert)
    return event


def envelope(event: str, data: object) -> dict[str, Any]:
    return {"event": event, "instance": "acme-support", "data": data, **ENVELOPE}


def error_path(payload: object, path_event: str | None = None) -> str | None:
    with pytest.raises(PayloadError) as caught:
        parse_webhook(payload, path_event)
    assert caught.value.status == 422
    return caught.value.path


# --- event names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("messages.upsert", "messages.upsert"),
        ("MESSAGES_UPSERT", "messages.upsert"),
        ("messages-upsert", "messages.upsert"),
        ("send-message", "send.message"),
        ("SEND_MESSAGE_UPDATE", "send.message.update"),
        ("connection-update", "connection.update"),
        ("qrcode-updated", "qrcode.updated"),
        ("LOGOUT_INSTANCE", "logout.instance"),
        ("remove-instance", "remove.instance"),
        ("group-participants-update", "group-participants.update"),
        ("GROUP_PARTICIPANTS_UPDATE", "group-participants.update"),
        ("typebot-change-status", "typebot.change-status"),
        ("messaging-history-set", "messaging-history.set"),
        ("call", "call"),
        (" Messages.Update ", "messages.update"),
        ("SOME_NEW-EVENT", "some.new.event"),
    ],
)
def test_normalize_event_name_inverts_every_spelling(name: str, expected: str) -> None:
    assert normalize_event_name(name) == expected


@pytest.mark.parametrize(
    ("body_event", "path_event"),
    [
        ("messages.upsert", None),
        ("MESSAGES_UPSERT", None),
        ("messages.upsert", "messages-upsert"),
        ("MESSAGES_UPSERT", "messages-upsert"),
        (None, "messages-upsert"),
        ("messages.upsert", ""),
    ],
)
def test_both_spellings_and_by_events_slugs_are_accepted(
    body_event: str | None, path_event: str | None
) -> None:
    payload = copy.deepcopy(EXAMPLE_A)
    if body_event is None:
        del payload["event"]
    else:
        payload["event"] = body_event
    assert parse_upsert(payload, path_event).event == "messages.upsert"


def test_body_and_slug_that_disagree_are_refused() -> None:
    assert error_path(EXAMPLE_A, "messages-update") == "event"


def test_event_missing_from_body_and_url_is_refused() -> None:
    payload = copy.deepcopy(EXAMPLE_A)
    del payload["event"]
    assert error_path(payload) == "event"
    payload["event"] = "  "
    assert error_path(payload) == "event"


# --- messages.upsert: addressing ----------------------------------------------------------------------


def test_example_a_incoming_text_pn_addressing() -> None:
    event = parse_upsert(EXAMPLE_A)
    assert event == MessageUpsert(
        event="messages.upsert",
        instance="acme-support",
        message_id="3A5F1C2B9D8E7F6A5B4C",
        remote_jid="5511987654321@s.whatsapp.net",
        from_me=False,
        chat_kind="user",
        phone_jid="5511987654321@s.whatsapp.net",
        lid_jid="207748159275123@lid",
        reply_jid="5511987654321@s.whatsapp.net",
        participant_jid=None,
        push_name="Maria",
        sent_at=datetime(2025, 10, 21, 14, 40, 39, tzinfo=UTC),
        status="DELIVERY_ACK",
        content=event.content,
        quoted_message_id=None,
        source="ios",
    )
    assert (event.content.kind, event.content.text, event.content.is_chat_turn) == (
        "text",
        "Oi, quero agendar",
        True,
    )


def test_example_b_lid_addressing_replies_to_the_phone_number() -> None:
    event = parse_upsert(EXAMPLE_B)
    assert event.remote_jid == "103899771998284@lid"
    assert event.phone_jid == "5521998765432@s.whatsapp.net"
    assert event.lid_jid == "103899771998284@lid"
    assert event.reply_jid == "5521998765432@s.whatsapp.net"
    assert event.quoted_message_id == "3EB0C0BD05DCA97A7C09CB"
    assert (event.push_name, event.content.text) == ("João", "Pode ser às 15h?")


def test_lid_without_any_phone_number_replies_to_the_lid() -> None:
    event = parse_upsert(
        with_key(EXAMPLE_B, {"remoteJid": "103899771998284@lid", "fromMe": False, "id": "AC1D"})
    )
    assert (event.phone_jid, event.lid_jid, event.reply_jid) == (
        None,
        "103899771998284@lid",
        "103899771998284@lid",
    )


@pytest.mark.parametrize(
    "remote_jid",
    ["5511977776666", "+5511977776666", "+55 (11) 97777-6666", "5511977776666@c.us"],
)
def test_a_bare_number_or_any_phone_spelling_is_the_phone_jid(remote_jid: str) -> None:
    """Evolution's EVOLUTION channel passes `remoteJid` through as a bare number (captured from 2.3.6)."""
    event = parse_upsert(with_key(EXAMPLE_B, {"remoteJid": remote_jid, "fromMe": False, "id": "BARE1"}))
    assert (event.remote_jid, event.phone_jid, event.lid_jid, event.reply_jid) == (
        "5511977776666@s.whatsapp.net",
        "5511977776666@s.whatsapp.net",
        None,
        "5511977776666@s.whatsapp.net",
    )


@pytest.mark.parametrize("remote_jid", ["12345", "not-a-number", "5511977776666x"])
def test_a_bare_value_that_is_no_phone_spelling_stays_as_it_came(remote_jid: str) -> None:
    event = parse_upsert(with_key(EXAMPLE_B, {"remoteJid": remote_jid, "fromMe": False, "id": "BARE2"}))
    assert (event.remote_jid, event.phone_jid, event.lid_jid) == (remote_jid, None, None)


def test_a_bare_number_in_remote_jid_alt_is_the_phone_of_a_lid_chat() -> None:
    key = {"remoteJid": "103899771998284@lid", "remoteJidAlt": "5511977776666", "fromMe": False, "id": "B3"}
    event = parse_upsert(with_key(EXAMPLE_B, key))
    assert (event.phone_jid, event.lid_jid, event.reply_jid) == (
        "5511977776666@s.whatsapp.net",
        "103899771998284@lid",
        "5511977776666@s.whatsapp.net",
    )


def test_fork_sender_pn_shape_of_2_3_1_and_earlier() -> None:
    key = {
        "remoteJid": "103899771998284@lid",
        "senderPn": "5521998765432@s.whatsapp.net",
        "senderLid": "103899771998284@lid",
        "fromMe": False,
        "id": "AC1D",
    }
    event = parse_upsert(with_key(EXAMPLE_B, key))
    assert (event.phone_jid, event.lid_jid, event.reply_jid) == (
        "5521998765432@s.whatsapp.net",
        "103899771998284@lid",
        "5521998765432@s.whatsapp.net",
    )


def test_2_3_2_to_2_3_4_swapped_key_with_previous_remote_jid() -> None:
    key = {
        "remoteJid": "5521998765432@s.whatsapp.net",
        "previousRemoteJid": "103899771998284@lid",
        "senderPn": "5521998765432@s.whatsapp.net",
        "fromMe": False,
        "id": "AC1D",
    }
    event = parse_upsert(with_key(EXAMPLE_B, key))
    assert (event.remote_jid, event.phone_jid, event.lid_jid, event.reply_jid) == (
        "5521998765432@s.whatsapp.net",
        "5521998765432@s.whatsapp.net",
        "103899771998284@lid",
        "5521998765432@s.whatsapp.net",
    )


def test_2_4_0_key_with_device_suffix_is_stripped() -> None:
    key = {
        "remoteJid": "5521998765432:12@s.whatsapp.net",
        "remoteJidAlt": "103899771998284:12@lid",
        "addressingMode": "pn",
        "fromMe": False,
        "id": "AC1D",
    }
    event = parse_upsert(with_key(EXAMPLE_B, key))
    assert (event.phone_jid, event.lid_jid, event.reply_jid) == (
        "5521998765432@s.whatsapp.net",
        "103899771998284@lid",
        "5521998765432@s.whatsapp.net",
    )


def test_example_c_group_image_with_participant_alt() -> None:
    event = parse_upsert(EXAMPLE_C)
    assert (event.chat_kind, event.reply_jid) == ("group", "120363025123456789@g.us")
    assert (event.participant_jid, event.phone_jid, event.lid_jid) == (
        "84823447130133@lid",
        "5531987650000@s.whatsapp.net",
        "84823447130133@lid",
    )
    assert (event.content.kind, event.content.text, event.content.message_type) == (
        "media",
        "comprovante",
        "imageMessage",
    )
    assert event.content.media is not None
    assert event.content.media["fileLength"] == 88123


def test_group_with_fork_participant_pn() -> None:
    key = {
        "remoteJid": "120363025123456789@g.us",
        "participant": "84823447130133@lid",
        "participantPn": "5531987650000@s.whatsapp.net",
        "fromMe": False,
        "id": "3A9B",
    }
    event = parse_upsert(with_key(EXAMPLE_C, key))
    assert (event.phone_jid, event.lid_jid) == ("5531987650000@s.whatsapp.net", "84823447130133@lid")


@pytest.mark.parametrize(
    ("remote_jid", "kind"),
    [
        ("5511987654321@s.whatsapp.net", "user"),
        ("103899771998284@lid", "user"),
        ("120363025123456789@g.us", "group"),
        ("status@broadcast", "broadcast"),
        ("1234567890@broadcast", "broadcast"),
        ("120363111111111111@newsletter", "newsletter"),
    ],
)
def test_chat_kind_follows_the_jid_server(remote_jid: str, kind: str) -> None:
    event = parse_upsert(with_key(EXAMPLE_A, {"remoteJid": remote_jid, "fromMe": False, "id": "X1"}))
    assert event.chat_kind == kind


# --- messages.upsert: other fields --------------------------------------------------------------------


def test_send_message_is_parsed_like_an_upsert() -> None:
    data = {
        "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": True, "id": "3EB0A1B2C3D4E5F6A7B8C9"},
        "pushName": "Você",
        "status": "PENDING",
        "message": {"conversation": "Olá! Seu pedido saiu para entrega."},
        "contextInfo": {"mentionedJid": [], "groupMentions": []},
        "messageType": "conversation",
        "messageTimestamp": 1761057900,
        "instanceId": "0b7c",
        "source": "web",
    }
    event = parse_upsert(envelope("send.message", data))
    assert (event.event, event.from_me, event.status, event.push_name, event.source) == (
        "send.message",
        True,
        "PENDING",
        "Você",
        "web",
    )
    assert event.quoted_message_id is None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (1761057639, datetime(2025, 10, 21, 14, 40, 39, tzinfo=UTC)),
        ("1761057639", datetime(2025, 10, 21, 14, 40, 39, tzinfo=UTC)),
        (1761057639.5, datetime(2025, 10, 21, 14, 40, 39, 500000, tzinfo=UTC)),
        ({"low": 1761057639, "high": 0, "unsigned": False}, datetime(2025, 10, 21, 14, 40, 39, tzinfo=UTC)),
        (None, None),
        (0, None),
        (-5, None),
        (1761057639000, None),
        (10**400, None),
        (float("nan"), None),
        (float("inf"), None),
    ],
)
def test_message_timestamp_forms(timestamp: object, expected: datetime | None) -> None:
    event = parse_upsert(with_data(EXAMPLE_A, messageTimestamp=timestamp))
    assert event.sent_at == expected
    if expected is not None:
        assert event.sent_at is not None
        assert event.sent_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("true", True), ("false", False), (None, False)]
)
def test_from_me_accepts_booleans_and_their_strings(value: object, expected: bool) -> None:
    key = {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": value, "id": "X1"}
    assert parse_upsert(with_key(EXAMPLE_A, key)).from_me is expected


@pytest.mark.parametrize(
    ("value", "expected"), [("  Maria  ", "Maria"), ("   ", None), ("", None), (None, None)]
)
def test_push_name_is_stripped_and_none_when_empty(value: object, expected: str | None) -> None:
    assert parse_upsert(with_data(EXAMPLE_A, pushName=value)).push_name == expected


def test_message_list_is_a_batch_and_an_empty_list_is_ignored() -> None:
    batch = parse_webhook(envelope("messages.upsert", [EXAMPLE_A["data"], EXAMPLE_B["data"]]))
    assert isinstance(batch, MessageBatch)
    assert [message.message_id for message in batch.messages] == [
        "3A5F1C2B9D8E7F6A5B4C",
        "AC1D2E3F4A5B6C7D8E9F0A1B2C3D4E5F",
    ]
    ignored = parse_webhook(envelope("messages.upsert", []))
    assert isinstance(ignored, IgnoredEvent)
    assert (ignored.instance, ignored.event) == ("acme-support", "messages.upsert")


def test_events_are_frozen() -> None:
    event = parse_upsert(EXAMPLE_C)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.message_id = "other"  # type: ignore[misc]
    assert hash(event) == hash(parse_upsert(EXAMPLE_C))


# --- hostile strings ----------------------------------------------------------------------------------


def test_hostile_text_is_kept_but_nul_is_replaced() -> None:
    raw = json.dumps(
        with_data(EXAMPLE_A, pushName="Ma\u0000ria 😈", message={"conversation": "'; DROP TABLE x;--\u0000"})
    )
    event = parse_upsert(json.loads(raw))
    assert event.push_name == "Ma\ufffdria 😈"
    assert event.content.text == "'; DROP TABLE x;--\ufffd"


def test_nul_in_an_identifier_is_refused() -> None:
    key = {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": "3A5F\u0000"}
    assert error_path(with_key(EXAMPLE_A, key)) == "data.key.id"


# --- messages.update ----------------------------------------------------------------------------------


RECEIPT: dict[str, Any] = {
    "keyId": "3EB0A1B2C3D4E5F6A7B8C9",
    "remoteJid": "5511987654321@s.whatsapp.net",
    "fromMe": True,
    "status": "READ",
    "instanceId": "0b7c",
    "messageId": "cmfyoow42000hov4xwkdug3lv",
}


def test_receipt_as_object() -> None:
    event = parse_webhook(envelope("messages.update", RECEIPT))
    assert event == MessageStatusUpdate(
        "acme-support", "3EB0A1B2C3D4E5F6A7B8C9", "5511987654321@s.whatsapp.net", True, "READ"
    )
    assert isinstance(event, MessageStatusUpdate)
    assert event.rank == 4


def test_receipts_as_list_skip_updates_without_status() -> None:
    updates = [RECEIPT, {**RECEIPT, "status": None, "pollUpdates": []}, {**RECEIPT, "status": "PLAYED"}]
    event = parse_webhook(envelope("MESSAGES_UPDATE", updates))
    assert isinstance(event, StatusUpdates)
    assert [update.status for update in event.updates] == ["READ", "PLAYED"]


@pytest.mark.parametrize("data", [{**RECEIPT, "status": None}, [{"keyId": "x"}], []])
def test_receipts_without_any_status_are_ignored(data: object) -> None:
    event = parse_webhook(envelope("messages.update", data))
    assert isinstance(event, IgnoredEvent)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, "ERROR"),
        (1, "PENDING"),
        (2, "SERVER_ACK"),
        (3, "DELIVERY_ACK"),
        (4, "READ"),
        (5, "PLAYED"),
        ("3", "DELIVERY_ACK"),
        ("read", "READ"),
        ("DELETED", "DELETED"),
    ],
)
def test_receipt_status_names_and_numbers(status: object, expected: str) -> None:
    event = parse_webhook(envelope("messages.update", {**RECEIPT, "status": status}))
    assert isinstance(event, MessageStatusUpdate)
    assert event.status == expected


def test_receipt_in_the_older_key_shape() -> None:
    data = {
        "key": {"id": "3EB0OLD", "remoteJid": "5511987654321@s.whatsapp.net", "fromMe": True},
        "status": 3,
    }
    event = parse_webhook(envelope("messages.update", data))
    assert event == MessageStatusUpdate(
        "acme-support", "3EB0OLD", "5511987654321@s.whatsapp.net", True, "DELIVERY_ACK"
    )


def test_status_rank_orders_the_progression_and_sets_errors_apart() -> None:
    ranks = [status_rank(name) for name in ("PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")]
    assert ranks == sorted(ranks)
    assert len(set(ranks)) == 5
    assert status_rank("ERROR") == status_rank("DELETED") == 0 < ranks[0]


# --- connection, logout, qrcode, ignored --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {
                "instance": "acme-support",
                "wuid": "5511912345678@s.whatsapp.net",
                "profileName": "Acme",
                "profilePictureUrl": "https://pps.whatsapp.net/x",
                "state": "open",
                "statusReason": 200,
            },
            ConnectionUpdate("acme-support", "open", 200, "5511912345678@s.whatsapp.net", "Acme"),
        ),
        (
            {"instance": "acme-support", "state": "connecting", "statusReason": 200},
            ConnectionUpdate("acme-support", "connecting", 200, None, None),
        ),
        (
            {"instance": "acme-support", "state": "close", "statusReason": 401},
            ConnectionUpdate("acme-support", "close", 401, None, None),
        ),
        (
            {
                "instance": "acme-support",
                "state": "refused",
                "statusReason": 428,
                "wuid": None,
                "profileName": None,
            },
            ConnectionUpdate("acme-support", "refused", 428, None, None),
        ),
    ],
)
def test_connection_update(data: dict[str, Any], expected: ConnectionUpdate) -> None:
    assert parse_webhook(envelope("connection.update", data)) == expected


@pytest.mark.parametrize(
    ("event", "slug"), [("logout.instance", None), ("remove.instance", "remove-instance")]
)
def test_logout_and_remove_with_null_data(event: str, slug: str | None) -> None:
    assert parse_webhook(envelope(event, None), slug) == InstanceGone("acme-support", event)


def test_qrcode_updated() -> None:
    data = {
        "qrcode": {
            "instance": "acme-support",
            "pairingCode": "ABCD1234",
            "code": "2@abc",
            "base64": "data:image/png;base64,iVBOR",
        }
    }
    assert parse_webhook(envelope("qrcode.updated", data)) == QrCodeUpdate(
        "acme-support", "2@abc", "data:image/png;base64,iVBOR", "ABCD1234"
    )


def test_qrcode_limit_reached_is_ignored() -> None:
    data = {"message": "QR code limit reached, please login again", "statusCode": 500}
    assert isinstance(parse_webhook(envelope("qrcode.updated", data)), IgnoredEvent)


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("contacts.upsert", [{"remoteJid": "5511987654321@s.whatsapp.net", "pushName": "Maria"}]),
        ("contacts.update", {"remoteJid": "5511987654321@s.whatsapp.net", "pushName": "Maria"}),
        ("chats.upsert", [{"remoteJid": "5511987654321@s.whatsapp.net", "unreadMessages": 0}]),
        ("presence.update", {"id": "5511987654321@s.whatsapp.net", "presences": {}}),
        ("messages.edited", {"key": {"id": "x"}, "type": 14}),
        ("group-participants.update", {"id": "1@g.us", "action": "add"}),
        ("brand.new.event", {"anything": True}),
    ],
)
def test_other_events_are_ignored(event: str, data: object) -> None:
    result = parse_webhook(envelope(event, data))
    assert isinstance(result, IgnoredEvent)
    assert (result.instance, result.event) == ("acme-support", event)


# --- PayloadError paths -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, [], "messages.upsert", 42])
def test_non_object_payload(payload: object) -> None:
    assert error_path(payload) == "$"


@pytest.mark.parametrize("instance", [None, "", "   ", 7, ["acme"]])
def test_missing_blank_or_non_string_instance(instance: object) -> None:
    payload = copy.deepcopy(EXAMPLE_A)
    payload["instance"] = instance
    assert error_path(payload) == "instance"


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({**EXAMPLE_A, "event": 5}, "event"),
        (with_data(EXAMPLE_A, key=None), "data.key"),
        (
            with_key(EXAMPLE_A, {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": 12345}),
            "data.key.id",
        ),
        (
            with_key(EXAMPLE_A, {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": ""}),
            "data.key.id",
        ),
        (with_key(EXAMPLE_A, {"fromMe": False, "id": "X1"}), "data.key.remoteJid"),
        (
            with_key(EXAMPLE_A, {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": "yes", "id": "X1"}),
            "data.key.fromMe",
        ),
        (
            with_key(EXAMPLE_A, {"remoteJid": "5511987654321@s.whatsapp.net", "remoteJidAlt": 5, "id": "X1"}),
            "data.key.remoteJidAlt",
        ),
        (with_data(EXAMPLE_A, pushName=12), "data.pushName"),
        (with_data(EXAMPLE_A, message="oi"), "data.message"),
        (with_data(EXAMPLE_A, messageTimestamp="yesterday"), "data.messageTimestamp"),
        (with_data(EXAMPLE_A, messageTimestamp=True), "data.messageTimestamp"),
        (with_data(EXAMPLE_A, messageTimestamp={"low": 1, "high": "0"}), "data.messageTimestamp.high"),
        (with_data(EXAMPLE_B, contextInfo={"stanzaId": 9}), "data.contextInfo.stanzaId"),
        ({**EXAMPLE_A, "data": None}, "data"),
        (
            envelope("messages.upsert", [EXAMPLE_A["data"], {"key": {"remoteJid": "a@lid", "id": 1}}]),
            "data[1].key.id",
        ),
        (envelope("messages.update", {**RECEIPT, "keyId": None}), "data.keyId"),
        (envelope("messages.update", [RECEIPT, {**RECEIPT, "keyId": 3}]), "data[1].keyId"),
        (envelope("messages.update", {**RECEIPT, "status": 9}), "data.status"),
        (envelope("messages.update", {**RECEIPT, "fromMe": "nope"}), "data.fromMe"),
        (envelope("messages.update", None), "data"),
        (envelope("connection.update", {"statusReason": 200}), "data.state"),
        (envelope("connection.update", {"state": "open", "statusReason": "ok"}), "data.statusReason"),
        (envelope("qrcode.updated", {"qrcode": {"code": 1}}), "data.qrcode.code"),
    ],
)
def test_wrong_shapes_name_their_path(payload: object, path: str) -> None:
    assert error_path(payload) == path
