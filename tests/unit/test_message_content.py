"""MessageContent extraction from the Baileys `message` objects Evolution delivers (reference §2.2, §8.4)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from luminai_actors.errors import PayloadError
from luminai_actors.evolution.content import MessageContent, extract_content
from luminai_actors.evolution.webhook import MessageUpsert, parse_webhook


def extract(message: dict[str, Any] | None, message_type: str | None = None) -> MessageContent:
    content, _ = extract_content(message, message_type, "data.message")
    return content


def upsert(message: dict[str, Any], message_type: str, **data: Any) -> MessageUpsert:
    event = parse_webhook(
        {
            "event": "messages.upsert",
            "instance": "acme-support",
            "data": {
                "key": {
                    "remoteJid": "5511987654321@s.whatsapp.net",
                    "fromMe": False,
                    "id": "3A5F1C2B9D8E7F6A",
                },
                "pushName": "Maria",
                "status": "DELIVERY_ACK",
                "message": message,
                "messageType": message_type,
                "messageTimestamp": 1761057639,
                **data,
            },
        }
    )
    assert isinstance(event, MessageUpsert)
    return event


# --- text ---------------------------------------------------------------------------------------------


def test_conversation_with_message_context_info_is_text() -> None:
    content = extract(
        {"conversation": "Oi, quero agendar", "messageContextInfo": {"deviceListMetadataVersion": 2}},
        "conversation",
    )
    assert content == MessageContent("conversation", "text", "Oi, quero agendar", True)


def test_extended_text_message_is_read_and_its_quote_found() -> None:
    content, quoted = extract_content(
        {"extendedTextMessage": {"text": "veja isso", "contextInfo": {"stanzaId": "3EB0QUOTED"}}},
        "extendedTextMessage",
        "data.message",
    )
    assert (content.kind, content.text, content.message_type, quoted) == (
        "text",
        "veja isso",
        "extendedTextMessage",
        "3EB0QUOTED",
    )


def test_blank_conversation_is_empty_and_not_a_turn() -> None:
    content = extract({"conversation": "  "}, "conversation")
    assert (content.kind, content.text, content.is_chat_turn) == ("empty", "  ", False)


@pytest.mark.parametrize("message", [None, {}, {"messageContextInfo": {"x": 1}}, {"conversation": None}])
def test_missing_or_contentless_message_is_empty(message: dict[str, Any] | None) -> None:
    content = extract(message, "conversation")
    assert (content.kind, content.text, content.is_chat_turn) == ("empty", "", False)


def test_sender_key_distribution_is_not_taken_for_the_content() -> None:
    content = extract({"senderKeyDistributionMessage": {"groupId": "1@g.us"}, "conversation": "oi"})
    assert (content.message_type, content.text) == ("conversation", "oi")


def test_declared_message_type_picks_among_several_keys() -> None:
    message = {"conversation": "fallback", "imageMessage": {"caption": "chosen"}}
    assert extract(message, "imageMessage").text == "chosen"
    assert extract(message, "unknown").text == "fallback"
    assert extract(message, None).message_type == "conversation"


# --- media --------------------------------------------------------------------------------------------


def test_image_with_caption_keeps_metadata_but_never_binary_fields() -> None:
    content = extract(
        {
            "imageMessage": {
                "url": "https://mmg.whatsapp.net/x",
                "mimetype": "image/jpeg",
                "caption": "comprovante",
                "fileSha256": {"0": 1, "1": 2},
                "mediaKey": "a2V5",
                "jpegThumbnail": "/9j/4AAQ",
                "fileLength": {"low": 88123, "high": 0, "unsigned": True},
                "height": 1280,
                "width": 960,
            },
            "base64": "/9j/4AAQSkZJRgABAQ",
        },
        "imageMessage",
    )
    assert (content.kind, content.text, content.is_chat_turn) == ("media", "comprovante", True)
    assert dict(content.media or {}) == {
        "mimetype": "image/jpeg",
        "caption": "comprovante",
        "fileLength": 88123,
        "height": 1280,
        "width": 960,
    }
    with pytest.raises(TypeError):
        content.media["mimetype"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"imageMessage": {"mimetype": "image/jpeg"}}, "[image]"),
        ({"imageMessage": {"mimetype": "image/jpeg", "caption": ""}}, "[image]"),
        ({"videoMessage": {"mimetype": "video/mp4", "seconds": 12}}, "[video]"),
        ({"videoMessage": {"caption": "olha", "seconds": "12"}}, "olha"),
        ({"ptvMessage": {"mimetype": "video/mp4", "seconds": 5}}, "[video]"),
        (
            {"audioMessage": {"mimetype": "audio/ogg; codecs=opus", "seconds": 7, "ptt": True}},
            "[voice message]",
        ),
        ({"audioMessage": {"mimetype": "audio/mpeg", "seconds": 200, "ptt": False}}, "[audio]"),
        (
            {"documentMessage": {"fileName": "proposta.pdf", "mimetype": "application/pdf"}},
            "[document: proposta.pdf]",
        ),
        ({"documentMessage": {"title": "Contrato"}}, "[document: Contrato]"),
        ({"documentMessage": {"mimetype": "application/pdf"}}, "[document]"),
        ({"documentMessage": {"fileName": "a.pdf", "caption": "segue o contrato"}}, "segue o contrato"),
        ({"stickerMessage": {"mimetype": "image/webp", "isAnimated": False}}, "[sticker]"),
    ],
)
def test_media_text_is_the_caption_or_a_placeholder(message: dict[str, Any], text: str) -> None:
    content = extract(message)
    assert (content.kind, content.text, content.is_chat_turn) == ("media", text, True)
    assert content.message_type == next(iter(message))


def test_voice_note_with_speech_to_text_reads_as_the_transcript() -> None:
    content = extract(
        {
            "audioMessage": {"mimetype": "audio/ogg; codecs=opus", "seconds": 4, "ptt": True},
            "speechToText": "oi",
        },
        "audioMessage",
    )
    assert (content.text, content.media) == (
        "oi",
        {"mimetype": "audio/ogg; codecs=opus", "seconds": 4, "ptt": True},
    )


@pytest.mark.parametrize(
    "length", [88123, "88123", {"low": 88123, "high": 0, "unsigned": True}, {"low": 5, "high": 1}]
)
def test_file_length_accepts_int_string_and_long(length: object) -> None:
    expected = 2**32 + 5 if isinstance(length, dict) and length["high"] == 1 else 88123
    media = extract({"documentMessage": {"fileName": "a.pdf", "fileLength": length}}).media
    assert media is not None
    assert media["fileLength"] == expected


@pytest.mark.parametrize(
    ("message", "path"),
    [
        ({"imageMessage": {"seconds": "abc"}}, "data.message.imageMessage.seconds"),
        (
            {"imageMessage": {"fileLength": {"low": "1", "high": 0}}},
            "data.message.imageMessage.fileLength.low",
        ),
        ({"imageMessage": {"caption": 5}}, "data.message.imageMessage.caption"),
        ({"audioMessage": {"ptt": "yes"}}, "data.message.audioMessage.ptt"),
        ({"imageMessage": "not an object"}, "data.message.imageMessage"),
        ({"conversation": 42}, "data.message.conversation"),
        ({"ephemeralMessage": {"message": "x"}}, "data.message.ephemeralMessage.message"),
        ({"speechToText": 3, "audioMessage": {}}, "data.message.speechToText"),
    ],
)
def test_wrong_types_name_their_path(message: dict[str, Any], path: str) -> None:
    with pytest.raises(PayloadError) as caught:
        extract(message)
    assert caught.value.path == path
    assert caught.value.status == 422


# --- wrappers -----------------------------------------------------------------------------------------


def test_document_with_caption_wrapper_is_unwrapped() -> None:
    content = extract(
        {
            "documentWithCaptionMessage": {
                "message": {"documentMessage": {"fileName": "boleto.pdf", "caption": "pago", "pageCount": 1}}
            }
        },
        "documentWithCaptionMessage",
    )
    assert (content.message_type, content.kind, content.text) == ("documentMessage", "media", "pago")


def test_wrappers_are_unwrapped_at_any_depth() -> None:
    message = {
        "ephemeralMessage": {
            "message": {
                "viewOnceMessageV2": {
                    "message": {
                        "viewOnceMessage": {
                            "message": {
                                "imageMessage": {
                                    "caption": "só uma vez",
                                    "contextInfo": {"stanzaId": "3EBQ"},
                                },
                                "messageContextInfo": {},
                            }
                        }
                    }
                }
            }
        }
    }
    content, quoted = extract_content(message, "ephemeralMessage", "data.message")
    assert (content.message_type, content.kind, content.text, quoted) == (
        "imageMessage",
        "media",
        "só uma vez",
        "3EBQ",
    )


def test_view_once_v2_extension_holds_a_voice_note() -> None:
    content = extract(
        {"viewOnceMessageV2Extension": {"message": {"audioMessage": {"ptt": True, "seconds": 3}}}}
    )
    assert (content.message_type, content.text) == ("audioMessage", "[voice message]")


def test_ephemeral_wrapper_without_inner_message_is_empty() -> None:
    content = extract({"ephemeralMessage": {}}, "ephemeralMessage")
    assert (content.kind, content.is_chat_turn) == ("empty", False)


# --- edits, reactions, protocol, polls ----------------------------------------------------------------


def test_edited_message_wrapper_is_an_edit_with_the_new_text() -> None:
    content = extract(
        {
            "editedMessage": {
                "message": {
                    "protocolMessage": {
                        "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": False, "id": "3A5F"},
                        "type": 14,
                        "editedMessage": {"conversation": "texto corrigido"},
                    }
                }
            }
        },
        "editedMessage",
    )
    assert (content.kind, content.text, content.is_chat_turn) == ("edit", "texto corrigido", False)
    assert content.message_type == "protocolMessage"


def test_edited_message_wrapper_around_plain_text_is_still_an_edit() -> None:
    content = extract({"editedMessage": {"message": {"conversation": "novo"}}})
    assert (content.kind, content.text, content.is_chat_turn) == ("edit", "novo", False)


def test_protocol_message_with_edited_message_is_an_edit() -> None:
    content = extract(
        {"protocolMessage": {"type": 14, "editedMessage": {"extendedTextMessage": {"text": "editado"}}}},
        "protocolMessage",
    )
    assert (content.kind, content.text, content.is_chat_turn) == ("edit", "editado", False)


def test_revoke_protocol_message_is_protocol() -> None:
    content = extract({"protocolMessage": {"key": {"id": "3A5F"}, "type": 0}}, "protocolMessage")
    assert (content.kind, content.text, content.is_chat_turn) == ("protocol", "", False)


def test_hostile_edit_nesting_is_refused_not_recursed_forever() -> None:
    message: dict[str, Any] = {"conversation": "x"}
    for _ in range(50):
        message = {"protocolMessage": {"editedMessage": message}}
    with pytest.raises(PayloadError) as caught:
        extract(message)
    assert caught.value.path is not None
    assert caught.value.path.endswith("editedMessage")


def test_reaction_points_at_the_reacted_message() -> None:
    content = extract(
        {
            "reactionMessage": {
                "key": {"remoteJid": "5511987654321@s.whatsapp.net", "fromMe": True, "id": "3EB0A1B2"},
                "text": "👍",
                "senderTimestampMs": "1761057700000",
            }
        },
        "reactionMessage",
    )
    assert (content.kind, content.reaction, content.reacted_message_id) == ("reaction", "👍", "3EB0A1B2")
    assert content.is_chat_turn is False


def test_removed_reaction_is_an_empty_reaction() -> None:
    content = extract({"reactionMessage": {"key": {"id": "3EB0A1B2"}, "text": ""}}, "reactionMessage")
    assert (content.kind, content.reaction, content.is_chat_turn) == ("reaction", "", False)


def test_poll_update_is_poll_and_not_a_turn() -> None:
    content = extract({"pollUpdateMessage": {"pollCreationMessageKey": {"id": "3EB0"}, "vote": {}}})
    assert (content.kind, content.is_chat_turn) == ("poll", False)


@pytest.mark.parametrize("key", ["pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3"])
def test_poll_creation_is_interactive_with_its_name(key: str) -> None:
    content = extract({key: {"name": "Melhor horário?", "options": [{"optionName": "9h"}]}}, key)
    assert (content.kind, content.text, content.is_chat_turn) == ("interactive", "Melhor horário?", True)


# --- interactive replies, location, contacts, unsupported ---------------------------------------------


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"buttonsResponseMessage": {"selectedButtonId": "b1", "selectedDisplayText": "Sim"}}, "Sim"),
        ({"buttonsResponseMessage": {"selectedButtonId": "b1"}}, "b1"),
        (
            {"listResponseMessage": {"title": "Plano Pro", "singleSelectReply": {"selectedRowId": "r2"}}},
            "Plano Pro",
        ),
        ({"listResponseMessage": {"singleSelectReply": {"selectedRowId": "r2"}}}, "r2"),
        ({"templateButtonReplyMessage": {"selectedId": "t1", "selectedDisplayText": "Quero"}}, "Quero"),
        ({"templateButtonReplyMessage": {"selectedId": "t1"}}, "t1"),
        ({"interactiveResponseMessage": {"body": {"text": "Confirmar"}}}, "Confirmar"),
        (
            {
                "interactiveResponseMessage": {
                    "nativeFlowResponseMessage": {"paramsJson": '{"id":"__import__(1)"}'}
                }
            },
            '{"id":"__import__(1)"}',
        ),
    ],
)
def test_interactive_replies_read_as_the_chosen_option(message: dict[str, Any], text: str) -> None:
    content = extract(message)
    assert (content.kind, content.text, content.is_chat_turn) == ("interactive", text, True)


@pytest.mark.parametrize(
    ("message", "kind", "text"),
    [
        (
            {"locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6, "name": "Loja"}},
            "location",
            "[location: Loja]",
        ),
        (
            {"locationMessage": {"degreesLatitude": -23.5, "address": "Av. Paulista"}},
            "location",
            "[location: Av. Paulista]",
        ),
        (
            {"locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6}},
            "location",
            "[location]",
        ),
        ({"liveLocationMessage": {"degreesLatitude": -23.5}}, "location", "[live location]"),
        (
            {"contactMessage": {"displayName": "Carlos", "vcard": "BEGIN:VCARD"}},
            "contact",
            "[contact: Carlos]",
        ),
        (
            {"contactsArrayMessage": {"displayName": "2 contatos", "contacts": []}},
            "contact",
            "[contacts: 2 contatos]",
        ),
    ],
)
def test_location_and_contacts_have_readable_text(message: dict[str, Any], kind: str, text: str) -> None:
    content = extract(message)
    assert (content.kind, content.text, content.is_chat_turn) == (kind, text, True)


@pytest.mark.parametrize("key", ["callLogMessage", "eventMessage", "buttonsMessage"])
def test_unknown_content_is_unsupported(key: str) -> None:
    content = extract({key: {"whatever": 1}, "messageContextInfo": {}})
    assert (content.message_type, content.kind, content.text, content.is_chat_turn) == (
        key,
        "unsupported",
        "",
        False,
    )


# --- hostile text -------------------------------------------------------------------------------------


def test_text_keeps_emoji_and_markup_but_not_nul_or_lone_surrogates() -> None:
    decoded = json.loads('{"conversation": "oi 👋 {{7*7}} <script>\\u0000x\\ud800y"}')
    assert extract(decoded).text == "oi 👋 {{7*7}} <script>\ufffdx\ufffdy"


def test_long_text_is_not_capped() -> None:
    text = "a" * 200_000
    assert extract({"conversation": text}).text == text


def test_quote_inside_the_content_is_used_when_data_has_no_context_info() -> None:
    event = upsert(
        {"extendedTextMessage": {"text": "sim", "contextInfo": {"stanzaId": "3EB0INNER"}}},
        "extendedTextMessage",
    )
    assert event.quoted_message_id == "3EB0INNER"
    outer = upsert(
        {"extendedTextMessage": {"text": "sim", "contextInfo": {"stanzaId": "3EB0INNER"}}},
        "extendedTextMessage",
        contextInfo={"stanzaId": "3EB0OUTER"},
    )
    assert outer.quoted_message_id == "3EB0OUTER"
