"""Reading what a client sends, bounded: request bodies and integer query parameters.

Every route that reads a body (webhooks, the admin API's JSON, the console's forms and its sign-in) reads
it here: a declared `Content-Length` over the limit is refused before a byte is read, and the stream is
counted as it arrives, so a client that lies or sends chunked data is cut off at the limit (413) instead
of being buffered whole (a 400 MB sign-in once took a server from 180 MB to 977 MB RSS).
"""

from __future__ import annotations

from starlette.requests import Request

from luminai_actors.errors import PayloadError

MAX_ADMIN_BODY_BYTES = 1024 * 1024
"""Admin API JSON bodies: a tree flow or an agent is a few KB; 1 MiB leaves room for any real one."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or PayloadError 413 as soon as it is known to exceed max_bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and is_count(declared) and int(declared) > max_bytes:
        raise PayloadError(f"body larger than {max_bytes} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadError(f"body larger than {max_bytes} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def is_count(raw: str) -> bool:
    """ASCII digits only: `str.isdigit` also accepts `²` or `٣`, which `int` then refuses or misreads."""
    return raw.isascii() and raw.isdigit()
