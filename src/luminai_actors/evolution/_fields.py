"""Typed readers over decoded webhook JSON, shared by `webhook` and `content`.

Every reader takes the parent object, the key and the parent's dotted path, so that a wrong shape becomes
a `PayloadError` naming exactly where it is (`data.key.id`, `data[2].status`,
`data.message.imageMessage.seconds`).
A JSON `null` reads the same as a missing key: Evolution writes both for "not there".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from luminai_actors.errors import PayloadError

# NUL cannot be stored in a PostgreSQL text column and lone surrogates cannot be encoded as UTF-8; both reach
# us only from hostile or broken clients, so text keeps everything else and shows these as U+FFFD.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INTEGER = re.compile(r"-?[0-9]{1,20}")
# Bounded so that int()/float() never meet megabyte-long digit strings from a hostile body.
_DECIMAL = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?")

MAX_ID_LENGTH = 128
"""Identifiers (message ids, JIDs) are stored in 128-character columns; real ones are far shorter."""

_INT32_MIN = -(2**31)
_UINT32_MAX = 2**32 - 1


def join(path: str, key: str) -> str:
    """The dotted path of `key` below `path` (the root has the empty path)."""
    return f"{path}.{key}" if path else key


def clean_text(value: str) -> str:
    """`value` with NUL and lone surrogates replaced by U+FFFD; nothing else is touched."""
    return _UNSTORABLE.sub("\ufffd", value)


def as_mapping(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{path or 'payload'} must be a JSON object", path=path or "$")
    return value


def opt_mapping(obj: Mapping[str, object], key: str, path: str) -> Mapping[str, object] | None:
    value = obj.get(key)
    return None if value is None else as_mapping(value, join(path, key))


def _str_or_none(obj: Mapping[str, object], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{join(path, key)} must be a string", path=join(path, key))
    return value


def opt_id(obj: Mapping[str, object], key: str, path: str, *, max_length: int = MAX_ID_LENGTH) -> str | None:
    """An identifier (JID, message id, state): None when missing or empty.

    Identifiers are compared and used as database keys, so unlike text they are refused rather than repaired
    when they hold characters no real WhatsApp identifier has, or more than `max_length` characters.
    """
    value = _str_or_none(obj, key, path)
    return identifier(value, join(path, key), max_length=max_length) if value else None


def identifier(value: str, path: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    """`value` unchanged, or PayloadError when it holds what no real identifier has (NUL, lone surrogates,
    more than max_length characters)."""
    if _UNSTORABLE.search(value):
        raise PayloadError(f"{path} holds a NUL or a lone surrogate", path=path)
    if len(value) > max_length:
        raise PayloadError(f"{path} is longer than {max_length} characters", path=path)
    return value


def req_id(obj: Mapping[str, object], key: str, path: str, *, max_length: int = MAX_ID_LENGTH) -> str:
    value = opt_id(obj, key, path, max_length=max_length)
    if value is None or not value.strip():
        where = join(path, key)
        raise PayloadError(f"{where} is required and must be a non-empty string", path=where)
    return value


def opt_text(obj: Mapping[str, object], key: str, path: str, *, max_length: int | None = None) -> str | None:
    """Free text written by a person (or a hostile client): kept as given, only made storable, and cut to
    `max_length` characters when one is given (a display name, not a message)."""
    value = _str_or_none(obj, key, path)
    if value is None:
        return None
    text = clean_text(value)
    return text[:max_length] if max_length is not None else text


def opt_bool(obj: Mapping[str, object], key: str, path: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    # Some SDKs and proxies stringify booleans; anything else is a shape we do not understand.
    if value == "true":
        return True
    if value == "false":
        return False
    raise PayloadError(f"{join(path, key)} must be a boolean", path=join(path, key))


def long_value(value: Mapping[str, object], path: str) -> int:
    """The integer held by a protobufjs Long serialised as `{"low", "high", "unsigned"}`."""
    parts: list[int] = []
    for part in ("low", "high"):
        raw = value.get(part)
        if not isinstance(raw, int) or isinstance(raw, bool) or not _INT32_MIN <= raw <= _UINT32_MAX:
            raise PayloadError(f"{join(path, part)} must be a 32-bit integer", path=join(path, part))
        parts.append(raw)
    unsigned = opt_bool(value, "unsigned", path) or False
    low, high = parts
    # Long.js keeps both halves as signed int32; the low half is always a bit pattern, the high half carries
    # the sign unless the Long is unsigned.
    high = high & 0xFFFFFFFF if unsigned else (high & 0xFFFFFFFF) - ((high & 0x80000000) << 1)
    return high * 2**32 + (low & 0xFFFFFFFF)


def integer(value: object, path: str) -> int:
    """An int, an integral float, a digit string or a Long; bools are refused although Python counts them."""
    if isinstance(value, bool):
        raise PayloadError(f"{path} must be an integer", path=path)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, Mapping):
        return long_value(value, path)
    raise PayloadError(f"{path} must be an integer", path=path)


def number(value: object, path: str) -> int | float:
    """Like `integer`, but fractions (as floats or decimal strings, NaN and infinities included) pass."""
    if isinstance(value, float):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value.strip())
    if isinstance(value, (bool, int, str, Mapping)):
        return integer(value, path)
    raise PayloadError(f"{path} must be a number", path=path)


def opt_int(obj: Mapping[str, object], key: str, path: str) -> int | None:
    value = obj.get(key)
    return None if value is None else integer(value, join(path, key))
