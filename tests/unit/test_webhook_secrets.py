"""Webhook authentication by default (issue 17): every agent gets a secret, token-less webhooks are refused
unless the operator opts out, the secret rotates, and Evolution's JWT is held to what Evolution issues."""

from __future__ import annotations

import time
import uuid

from luminai_actors.persistence.tables import Agent
from luminai_actors.testing import FakeEvolutionApi, LuminaiHarness
from luminai_actors.web.auth import MAX_JWT_LIFETIME_SECONDS, sign_jwt_hs256, verify_jwt_hs256

SECRET = "s3cr3t"
NOW = 1_765_000_000.0


def test_a_jwt_needs_iat_a_lifetime_evolution_issues_and_little_skew() -> None:
    def ok(payload: dict[str, object]) -> bool:
        return verify_jwt_hs256(sign_jwt_hs256(payload, SECRET), SECRET, now=NOW)

    assert ok({"iat": NOW, "exp": NOW + 600, "app": "evolution", "action": "webhook"})
    assert ok({"iat": NOW - 20, "exp": NOW + 580})
    assert not ok({"exp": NOW + 600})  # no iat
    assert not ok({"iat": "1765000000", "exp": NOW + 600})
    assert not ok({"iat": NOW, "exp": 1e308})  # was valid forever
    assert not ok({"iat": NOW, "exp": NOW + MAX_JWT_LIFETIME_SECONDS + 1})
    assert not ok({"iat": NOW + 120, "exp": NOW + 720})  # issued in the future
    assert not ok({"iat": NOW - 700, "exp": NOW - 100})  # expired
    assert not ok({"iat": NOW, "exp": NOW})  # no lifetime at all
    assert not ok({"iat": True, "exp": NOW + 600})


def test_an_agent_gets_a_secret_shown_once_and_token_less_webhooks_are_refused(
    luminai: LuminaiHarness,
) -> None:
    org = luminai.admin.create_organization("Acme")
    made = luminai.admin.post(
        f"/api/admin/organizations/{org}/agents",
        {
            "name": "SDR",
            "whatsapp": {"instanceName": "acme", "serverUrl": luminai.evolution.url, "apiKey": "k"},
        },
    )
    secret = made["webhookToken"]
    assert len(secret) >= 32

    message = luminai.message("acme", "Oi")
    bare = luminai.client.post("/api/webhooks/whatsapp/evolution", json=message)
    assert bare.status_code == 401
    connection = {"event": "connection.update", "instance": "acme", "data": {"state": "close"}}
    assert luminai.client.post("/api/webhooks/whatsapp/evolution", json=connection).status_code == 401
    signed = luminai.client.post(
        "/api/webhooks/whatsapp/evolution", json=message, headers={"X-Webhook-Token": secret}
    )
    assert signed.status_code == 200
    jwt = sign_jwt_hs256({"iat": int(time.time()), "exp": int(time.time()) + 600}, secret)
    by_jwt = luminai.client.post(
        "/api/webhooks/whatsapp/evolution",
        json=luminai.message("acme", "Oi de novo"),
        headers={"Authorization": f"Bearer {jwt}"},
    )
    assert by_jwt.status_code == 200
    assert luminai.admin.talks(org)[0]["agentId"] == made["id"]


def test_a_rotated_secret_replaces_the_old_one_at_once(luminai: LuminaiHarness) -> None:
    org = luminai.admin.create_organization("Acme")
    agent = luminai.admin.create_agent(org, "acme", token="old-secret")
    rotated = luminai.admin.post(f"/api/admin/agents/{agent}/whatsapp/webhook-token")["webhookToken"]
    assert rotated != "old-secret"
    message = luminai.message("acme", "Oi")
    old = luminai.client.post(
        "/api/webhooks/whatsapp/evolution", json=message, headers={"X-Webhook-Token": "old-secret"}
    )
    assert old.status_code == 401
    new = luminai.client.post(
        "/api/webhooks/whatsapp/evolution", json=message, headers={"X-Webhook-Token": rotated}
    )
    assert new.status_code == 200


def test_an_agent_without_a_secret_takes_webhooks_only_when_the_operator_opts_out(
    fake_evolution: FakeEvolutionApi,
) -> None:
    for allow, expected in ((False, 401), (True, 200)):
        with LuminaiHarness(allow_unauthenticated_webhooks=allow, evolution=fake_evolution) as luminai:
            org = luminai.admin.create_organization("Legacy")
            agent = luminai.admin.create_agent(org, f"legacy-{allow}")
            with luminai.container.uow() as uow:  # as an agent made before secrets were generated
                row = uow.repo.get(Agent, uuid.UUID(agent))
                row.whatsapp_webhook_token = None
                uow.commit()
            luminai.container.directory.forget()
            response = luminai.client.post(
                "/api/webhooks/whatsapp/evolution", json=luminai.message(f"legacy-{allow}", "Oi")
            )
            assert response.status_code == expected, response.text
