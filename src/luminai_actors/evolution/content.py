"""What a WhatsApp message says: `MessageContent`, read from the Baileys `message` object of an upsert.

Evolution forwards Baileys' `proto.IMessage` nearly untouched, so one message may arrive wrapped (ephemeral,
view-once, edited, document-with-caption) at any depth, next to bookkeeping keys (`messageContextInfo`) and
Evolution's own extras (`base64`, `mediaUrl`, `speechToText`). This module unwraps it, picks the one key that
carries the content and turns it into the text a person would read, so the conversation logic never looks
at Baileys shapes (reference §2.2 and §8.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, Literal

from luminai_actors.errors import PayloadError
from luminai_actors.evolution._fields import (
    as_mapping,
    clean_text,
    join,
    opt_bool,
    opt_id,
    opt_int,
    opt_mapping,
    opt_text,
)

ContentKind = Literal[
    "text",
    "media",
    "interactive",
    "location",
    "contact",
    "reaction",
    "edit",
    "protocol",
    "poll",
    "unsupported",
    "empty",
]

# Kinds a person sends to talk to us; everything else is bookkeeping the AI must not answer.
_CHAT_KINDS: Final = frozenset({"text", "media", "interactive", "location", "contact"})

# Each wraps a whole message under `.message` (Baileys FutureProofMessage).
_WRAPPERS: Final = frozenset(
    {
        "ephemeralMessage",
        "viewOnceMessage",
        "viewOnceMessageV2",
        "viewOnceMessageV2Extension",
        "documentWithCaptionMessage",
        "editedMessage",
        "groupMentionedMessage",
        "botInvokeMessage",
        "lottieStickerMessage",
    }
)
# Ride along with the content without being it. `senderKeyDistributionMessage` precedes the first message a
# device sends to a group, which is why Baileys' own getContentType skips it too.
_NOT_CONTENT: Final = frozenset(
    {"messageContextInfo", "base64", "mediaUrl", "speechToText", "senderKeyDistributionMessage"}
)
_MEDIA_PLACEHOLDERS: Final = {
    "imageMessage": "[image]",
    "videoMessage": "[video]",
    "ptvMessage": "[video]",
    "audioMessage": "[audio]",
    "documentMessage": "[document]",
    "stickerMessage": "[sticker]",
}
_INTERACTIVE: Final = frozenset(
    {
        "buttonsResponseMessage",
        "listResponseMessage",
        "templateButtonReplyMessage",
        "interactiveResponseMessage",
    }
)
_OTHER_KNOWN: Final = frozenset(
    {
        "conversation",
        "extendedTextMessage",
        "locationMessage",
        "liveLocationMessage",
        "contactMessage",
        "contactsArrayMessage",
        "reactionMessage",
        "protocolMessage",
        "pollUpdateMessage",
    }
)
_POLL_CREATION_PREFIX: Final = "pollCreationMessage"  # V2, V3, V5… share the shape
# protocolMessage.editedMessage holds a whole message again; real edits nest once, hostile ones could nest
# until the interpreter's recursion limit.
_MAX_EDIT_DEPTH: Final = 4


@dataclass(frozen=True, slots=True)
class MessageContent:
    """The content of one message, already unwrapped.

    `text` is what a person would read: the text, the caption, the chosen reply, or a bracketed placeholder
    such as `[image]` for media sent without words. `media` lists only harmless metadata (never bytes).
    """

    message_type: str
    kind: ContentKind
    text: str
    is_chat_turn: bool
    media: Mapping[str, object] | None = field(default=None, hash=False)
    reaction: str | None = None
    reacted_message_id: str | None = None


def _is_known(key: str) -> bool:
    return (
        key in _WRAPPERS
        or key in _MEDIA_PLACEHOLDERS
        or key in _INTERACTIVE
        or key in _OTHER_KNOWN
        or key.startswith(_POLL_CREATION_PREFIX)
    )


def _content(
    message_type: str,
    kind: ContentKind,
    text: str,
    *,
    media: Mapping[str, object] | None = None,
    reaction: str | None = None,
    reacted_message_id: str | None = None,
) -> MessageContent:
    # A blank text message or reply gives the AI nothing to answer.
    if kind == "text" and not text.strip():
        kind = "empty"
    turn = kind in _CHAT_KINDS and bool(text.strip())
    return MessageContent(message_type, kind, text, turn, media, reaction, reacted_message_id)


def _content_key(message: Mapping[str, object], preferred: str | None) -> str | None:
    if preferred is not None and preferred not in _NOT_CONTENT and message.get(preferred) is not None:
        return preferred
    present = [key for key, value in message.items() if value is not None and key not in _NOT_CONTENT]
    return next((key for key in present if _is_known(key)), present[0] if present else None)


def extract_content(
    message: Mapping[str, object] | None, declared_type: str | None, path: str, *, _depth: int = 0
) -> tuple[MessageContent, str | None]:
    """The content of `data.message`, and the id of the message it quotes when the content says so.

    `declared_type` is `data.messageType`; it picks the content key when it names one that is present,
    since Evolution computed it with Baileys' own rules. `path` is the dotted path of `message`.
    """
    if message is None:
        return _content(declared_type or "", "empty", ""), None
    edited = False
    speech: str | None = None
    preferred = declared_type
    while True:
        speech = opt_text(message, "speechToText", path) or speech
        key = _content_key(message, preferred)
        if key is None:
            return _content(declared_type or "", "edit" if edited else "empty", ""), None
        if key not in _WRAPPERS:
            break
        # The declared type names the outermost key only.
        preferred = None
        edited = edited or key == "editedMessage"
        wrapper_path = join(path, key)
        inner = opt_mapping(as_mapping(message[key], wrapper_path), "message", wrapper_path)
        if inner is None:
            return _content(key, "edit" if edited else "empty", ""), None
        message, path = inner, join(wrapper_path, "message")

    value, value_path = message[key], join(path, key)
    content = _read(key, value, value_path, speech, _depth)
    if edited:
        content = replace(content, kind="edit", is_chat_turn=False)
    quoted = None
    if isinstance(value, Mapping):
        context = opt_mapping(value, "contextInfo", value_path)
        quoted = None if context is None else opt_id(context, "stanzaId", join(value_path, "contextInfo"))
    return content, quoted


def _read(key: str, value: object, path: str, speech: str | None, depth: int) -> MessageContent:
    if key == "conversation":
        if not isinstance(value, str):
            raise PayloadError(f"{path} must be a string", path=path)
        return _content(key, "text", clean_text(value))
    if not _is_known(key):
        return _content(key, "unsupported", "")
    body = as_mapping(value, path)
    if key == "extendedTextMessage":
        return _content(key, "text", opt_text(body, "text", path) or "")
    if key in _MEDIA_PLACEHOLDERS:
        return _read_media(key, body, path, speech)
    if key in _INTERACTIVE:
        return _content(key, "interactive", _interactive_text(key, body, path))
    if key.startswith(_POLL_CREATION_PREFIX):
        return _content(key, "interactive", opt_text(body, "name", path) or "[poll]")
    if key in ("locationMessage", "liveLocationMessage"):
        label = "location" if key == "locationMessage" else "live location"
        name = _first_text(body, path, "name", "address", "caption")
        return _content(key, "location", f"[{label}: {name}]" if name else f"[{label}]")
    if key in ("contactMessage", "contactsArrayMessage"):
        label = "contact" if key == "contactMessage" else "contacts"
        name = _first_text(body, path, "displayName")
        return _content(key, "contact", f"[{label}: {name}]" if name else f"[{label}]")
    if key == "reactionMessage":
        target = opt_mapping(body, "key", path)
        # An empty reaction is WhatsApp's way of taking a reaction back, so "" is kept, not made None.
        emoji = opt_text(body, "text", path) or ""
        target_id = None if target is None else opt_id(target, "id", join(path, "key"))
        return _content(key, "reaction", emoji, reaction=emoji, reacted_message_id=target_id)
    if key == "protocolMessage":
        edited = opt_mapping(body, "editedMessage", path)
        if edited is None:
            return _content(key, "protocol", "")
        if depth >= _MAX_EDIT_DEPTH:
            raise PayloadError(f"{path} nests edits too deeply", path=join(path, "editedMessage"))
        new, _ = extract_content(edited, None, join(path, "editedMessage"), _depth=depth + 1)
        return _content(key, "edit", new.text)
    # Only pollUpdateMessage is left: a vote, encrypted, that carries no words.
    return _content(key, "poll", "")


def _first_text(body: Mapping[str, object], path: str, *keys: str) -> str | None:
    for key in keys:
        text = opt_text(body, key, path)
        if text and text.strip():
            return text
    return None


def _interactive_text(key: str, body: Mapping[str, object], path: str) -> str:
    if key == "buttonsResponseMessage":
        return _first_text(body, path, "selectedDisplayText", "selectedButtonId") or ""
    if key == "templateButtonReplyMessage":
        return _first_text(body, path, "selectedDisplayText", "selectedId") or ""
    if key == "listResponseMessage":
        title = _first_text(body, path, "title")
        reply = opt_mapping(body, "singleSelectReply", path)
        row = None if reply is None else _first_text(reply, join(path, "singleSelectReply"), "selectedRowId")
        return title or row or ""
    # interactiveResponseMessage: paramsJson is handed on as the raw string; it is never parsed or evaluated.
    answer = opt_mapping(body, "body", path)
    flow = opt_mapping(body, "nativeFlowResponseMessage", path)
    text = None if answer is None else _first_text(answer, join(path, "body"), "text")
    flow_path = join(path, "nativeFlowResponseMessage")
    params = None if flow is None else _first_text(flow, flow_path, "paramsJson")
    return text or params or ""


def _read_media(key: str, body: Mapping[str, object], path: str, speech: str | None) -> MessageContent:
    media: dict[str, object] = {}
    for name in ("mimetype", "fileName"):
        if (text := opt_text(body, name, path)) is not None:
            media[name] = text
    for name in ("seconds", "fileLength"):
        if (count := opt_int(body, name, path)) is not None:
            media[name] = count
    if (caption := opt_text(body, "caption", path)) is not None:
        media["caption"] = caption
    for name in ("width", "height"):
        if (count := opt_int(body, name, path)) is not None:
            media[name] = count
    if (ptt := opt_bool(body, "ptt", path)) is not None:
        media["ptt"] = ptt

    placeholder = _MEDIA_PLACEHOLDERS[key]
    if key == "audioMessage":
        placeholder = "[voice message]" if ptt else placeholder
        # A transcript (Evolution's OpenAI speech-to-text) is what the voice note said.
        caption = speech if speech and speech.strip() else caption
    elif key == "documentMessage":
        file_name = _first_text(body, path, "fileName", "title")
        placeholder = f"[document: {file_name}]" if file_name else placeholder
    text = caption if caption and caption.strip() else placeholder
    return _content(key, "media", text, media=MappingProxyType(media))
