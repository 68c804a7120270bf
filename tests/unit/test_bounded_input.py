"""Input bounds of issue 17: non-ASCII digits in list parameters, bodies bounded before they are buffered
(console sign-in, console forms, admin JSON), and webhook metrics labelled only with known events, only
after authentication."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from luminai_actors.errors import PayloadError
from luminai_actors.persistence.uow import translate_db_error
from luminai_actors.testing import LuminaiHarness
from luminai_actors.web.bodies import MAX_ADMIN_BODY_BYTES, is_count
from luminai_actors.web.console.render import MAX_FORM_BYTES

WEBHOOK = "/api/webhooks/whatsapp/evolution"


def test_only_ascii_digits_are_counts() -> None:
    assert is_count("10")
    assert not is_count("²")
    assert not is_count("١٢")  # Arabic-Indic digits: int() would read them
    assert not is_count("")
    assert not is_count("-1")


def test_a_non_ascii_digit_limit_is_a_422_not_a_500(luminai: LuminaiHarness) -> None:
    org = luminai.admin.create_organization("Acme")
    for query in ("limit=²", "offset=²", "limit=١٢"):
        response = luminai.admin.request("GET", f"/api/admin/organizations/{org}/contacts?{query}")
        assert response.status_code == 422, (query, response.text)
    operator = luminai.client
    operator.post(
        "/console/sign-in", data={"credential": luminai.settings.admin_token or ""}, follow_redirects=False
    )
    page = operator.get(f"/console/orgs/{org}/talks?offset=²")
    assert page.status_code == 200
    assert operator.get(f"/console/api/orgs/{org}/talks?offset=²").status_code == 200


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"a" * min(size, total - sent)
        sent += size


def test_an_oversized_sign_in_is_refused_by_its_declared_length_and_by_its_stream(
    luminai: LuminaiHarness,
) -> None:
    declared = luminai.client.post(
        "/console/sign-in",
        content=b"credential=x",
        headers={
            "Content-Length": str(400 * 1024 * 1024),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert declared.status_code in (400, 413)  # refused before the 400 MB announced ever arrive
    streamed = luminai.client.post(
        "/console/sign-in",
        content=_chunks(MAX_FORM_BYTES * 4),  # chunked: no Content-Length to trust
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413


def test_an_oversized_admin_body_is_a_413(luminai: LuminaiHarness) -> None:
    token = luminai.settings.admin_token or ""
    response = luminai.client.post(
        "/api/admin/organizations",
        content=_chunks(MAX_ADMIN_BODY_BYTES + 1),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert luminai.admin.request("POST", "/api/admin/organizations", json={"name": "ok"}).status_code == 201


def test_webhook_metrics_label_known_events_only_and_only_once_authenticated(luminai: LuminaiHarness) -> None:
    org = luminai.admin.create_organization("Acme")
    luminai.admin.create_agent(org, "acme", token="s3cret")
    for index in range(20):
        event = f"x{index}-" + "e" * 2000
        luminai.client.post(WEBHOOK, json={"event": event, "instance": "nobody", "data": {}})
    unauthenticated = {"event": "connection.update", "instance": "acme", "data": {"state": "close"}}
    assert luminai.client.post(WEBHOOK, json=unauthenticated).status_code == 401
    authenticated = luminai.client.post(WEBHOOK, json=unauthenticated, headers={"X-Webhook-Token": "s3cret"})
    assert authenticated.status_code == 200

    scraped = luminai.client.get("/metrics").text
    assert "eeeeeeee" not in scraped
    labelled = [line for line in scraped.splitlines() if line.startswith("luminai_webhooks_total{")]
    events = {line.split('event="')[1].split('"')[0] for line in labelled}
    assert events <= {"other", "unparsed", "connection.update"}
    assert any('event="connection.update"' in line and 'outcome="processed"' in line for line in labelled)
    assert not any('event="connection.update"' in line and 'outcome="401"' in line for line in labelled)


def test_a_value_the_database_refuses_is_a_422_not_an_outage() -> None:
    refused = sa_exc.DataError("INSERT ...", {}, Exception("value too long for type character varying(255)"))
    translated = translate_db_error(refused)
    assert isinstance(translated, PayloadError)
    assert translated.status == 422
    assert "value too long" in str(translated)
