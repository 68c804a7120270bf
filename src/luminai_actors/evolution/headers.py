"""Evolution 2.4's webhook headers, checked against the body they come with."""

from __future__ import annotations

from collections.abc import Mapping

from luminai_actors.errors import PayloadError
from luminai_actors.evolution.webhook import normalize_event_name


def header_contradiction(headers: Mapping[str, str], payload: object) -> PayloadError | None:
    """Evolution 2.4 sends `X-Instance-ID`, `X-Instance-Name`, `X-Event-Type` and `X-Timestamp` (epoch ms)
    with every instance webhook (src/api/integrations/event/webhook/webhook.controller.ts, 2.4.0-rc2);
    one that contradicts the body is an error (422) naming it. Absent headers (2.3.x) are fine."""
    body = payload if isinstance(payload, Mapping) else {}
    data = body.get("data")
    said = {
        "X-Instance-Name": body.get("instance"),
        "X-Event-Type": normalize_event_name(str(body["event"])) if body.get("event") else None,
        "X-Instance-ID": data.get("instanceId") if isinstance(data, Mapping) else None,
    }
    for name, in_body in said.items():
        header = headers.get(name)
        if header is None or in_body is None:
            continue
        value = normalize_event_name(header) if name == "X-Event-Type" else header
        if value != in_body:
            return PayloadError(f"header {name} {header!r} contradicts the body's {in_body!r}", path=name)
    stamp = headers.get("X-Timestamp")
    if stamp is not None and not stamp.strip().isdigit():
        return PayloadError("header X-Timestamp is not epoch milliseconds", path="X-Timestamp")
    return None
