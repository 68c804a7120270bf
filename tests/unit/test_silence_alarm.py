"""The silence alarm (`services.silence`): Evolution 2.3.7 can stop posting webhooks while the instance stays
connected (evolution-api#2665); an instance that usually has traffic and went quiet is probed and flagged."""

from __future__ import annotations

import logging

import pytest

from luminai_actors.services.silence import HOUR, WebhookSilence
from luminai_actors.testing import LuminaiHarness

INSTANCE = "acme"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_instance_with_traffic_that_went_quiet_is_silent() -> None:
    clock = Clock()
    watch = WebhookSilence(clock)
    for _ in range(10):
        watch.seen("busy")
        watch.seen("busy")
        clock.now += 60
    for _ in range(3):
        watch.seen("quiet")
    last = clock.now - 60
    clock.now += 28 * 60
    assert watch.silent(30, 10) == {}
    clock.now += 3 * 60

    assert watch.silent(30, 10) == {"busy": last}  # "quiet" never had the traffic to miss
    assert watch.silent(0, 10) == {}  # turned off
    watch.seen("busy")
    assert watch.silent(30, 10) == {}


def test_only_the_24_hours_before_the_silence_count_as_usual_traffic() -> None:
    clock = Clock()
    watch = WebhookSilence(clock)
    for _ in range(20):
        watch.seen("old")
    clock.now += 30 * HOUR
    watch.seen("old")  # one webhook a day later: the burst before is out of the window
    clock.now += HOUR
    assert watch.silent(30, 10) == {}


def test_the_alarm_probes_flags_the_agent_counts_it_and_clears_when_webhooks_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    with LuminaiHarness() as luminai:
        luminai.container.silence = WebhookSilence(clock)
        org = luminai.admin.create_organization("Acme")
        agent_id = luminai.admin.create_agent(org, INSTANCE)
        for n in range(10):
            luminai.say(INSTANCE, f"mensagem {n}", message_id=f"3EB0S{n}")
            clock.now += 30
        luminai.drain()
        clock.now += 31 * 60
        connection_checks = len([r for r in luminai.evolution.requests if "connectionState" in r.path])
        with caplog.at_level(logging.WARNING, logger="luminai_actors.services.silence"):
            luminai.container.recover_once()
            luminai.container.recover_once()  # raised once, not at every sweep
        raised = luminai.admin.get(f"/api/admin/agents/{agent_id}")["whatsapp"]["metadata"]
        metrics = luminai.client.get("/metrics").text
        probes = (
            len([r for r in luminai.evolution.requests if "connectionState" in r.path]) - connection_checks
        )

        luminai.say(INSTANCE, "voltei", message_id="3EB0BACK")
        luminai.drain()
        luminai.container.recover_once()
        cleared = luminai.admin.get(f"/api/admin/agents/{agent_id}")["whatsapp"]["metadata"]
        metrics_after = luminai.client.get("/metrics").text

    assert probes == 1
    assert raised["webhookSilence"]["probe"] == "connected"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "no webhook from instance acme" in caplog.records[0].getMessage()
    assert "luminai_webhook_silent_agents 1.0" in metrics
    assert "webhookSilence" not in cleared
    assert "luminai_webhook_silent_agents 0.0" in metrics_after


def test_the_console_shows_the_silence_on_the_agent() -> None:
    from luminai_actors.persistence.tables import Agent
    from luminai_actors.web.console.present import agent_view

    agent = Agent(
        name="SDR",
        whatsapp_status="connected",
        whatsapp_metadata={
            "webhookSilence": {"lastWebhookAt": "2026-12-07T10:00:00+00:00", "probe": "connected"}
        },
    )
    assert agent_view(agent)["silence"]["probe"] == "connected"
