"""UUIDv7 identifiers: time-ordered, so primary-key indexes stay append-mostly and ids sort by creation."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_random = b""  # os.urandom read in blocks: one system call per ~400 ids instead of one or two per id
_offset = 0
_BLOCK = 4096


def _random_bytes(n: int) -> bytes:
    """`n` bytes from the operating system's CSPRNG (call with `_lock` held)."""
    global _random, _offset
    if _offset + n > len(_random):
        _random, _offset = os.urandom(_BLOCK), 0
    chunk = _random[_offset : _offset + n]
    _offset += n
    return chunk


def uuid7() -> uuid.UUID:
    """A RFC 9562 version-7 UUID; ids made in one process increase strictly, even within a millisecond."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            # Same (or a backwards-stepped) millisecond: keep order with the 12-bit counter in rand_a.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            now_ms = _last_ms
        else:
            _last_ms = now_ms
            _counter = int.from_bytes(_random_bytes(2), "big") & 0x3FF  # leave headroom below 0xFFF
        counter = _counter
        rand_b = int.from_bytes(_random_bytes(8), "big") & ((1 << 62) - 1)
    value = (now_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand_b
    return uuid.UUID(int=value)


def whatsapp_id_of_reply(message_id: uuid.UUID) -> str:
    """The WhatsApp message id we ask Evolution 2.4 to give a reply (`messageId`): fixed by the reply's own
    id, so every attempt to send it carries the same one; shaped like Baileys' own ids (`3EB0` + hex)."""
    return "3EB0" + message_id.hex.upper()
