"""A QR-code-looking PNG for the fake Evolution API's `/instance/connect`: a real, decodable image (no scanner
will read it), built with zlib alone so the fake needs no imaging library."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib

_MODULES = 25  # a version-2 QR code is 25x25 modules
_SCALE = 8
_QUIET = 4


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _finder(x: int, y: int) -> bool | None:
    """The three corner squares every QR code has; None outside them."""
    for ox, oy in ((0, 0), (_MODULES - 7, 0), (0, _MODULES - 7)):
        dx, dy = x - ox, y - oy
        if 0 <= dx < 7 and 0 <= dy < 7:
            ring = max(abs(dx - 3), abs(dy - 3))
            return ring != 2
    return None


def qr_png(seed: str) -> bytes:
    """A grayscale PNG whose dark modules follow the SHA-256 stream of `seed`."""
    stream = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(3))
    bits = [(stream[i // 8] >> (i % 8)) & 1 for i in range(_MODULES * _MODULES)]
    size = (_MODULES + 2 * _QUIET) * _SCALE
    rows = []
    for py in range(size):
        my = py // _SCALE - _QUIET
        row = bytearray([0])  # filter type: none
        for px in range(size):
            mx = px // _SCALE - _QUIET
            dark = False
            if 0 <= mx < _MODULES and 0 <= my < _MODULES:
                finder = _finder(mx, my)
                dark = finder if finder is not None else bool(bits[my * _MODULES + mx])
            row.append(0 if dark else 255)
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"".join(rows), 9)),
            _chunk(b"IEND", b""),
        )
    )


def qr_data_url(seed: str) -> str:
    """`qr_png(seed)` as the `data:image/png;base64,...` URL Evolution puts in `base64`."""
    return "data:image/png;base64," + base64.b64encode(qr_png(seed)).decode()
