"""The operator console in headless Chromium against the real app (uvicorn) fed by real webhooks from a fake
Evolution API: sign in with an organization key, watch an agent's WhatsApp state change live, get its QR code,
configure its webhook, open a conversation, pause the bot, answer as a human and see the message reach
Evolution, then its read receipt. Leaves a screenshot of the console in docs/console.png."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from luminai_actors.web.app import WEBHOOK_PATH
from tests.console.conftest import LiveConsole

pytestmark = [pytest.mark.console, pytest.mark.e2e]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
LEAD = "5511987654321"
SCRIPT = {
    "name": "Sales qualification",
    "steps": [
        {
            "id": "contact",
            "name": "Contact details",
            "questions": ["Who am I talking to?"],
            "fields": [
                {"name": "name", "type": "text", "description": "full name"},
                {"name": "email", "type": "email", "question": "What is your email?"},
            ],
        },
        {
            "id": "size",
            "name": "Company size",
            "question": "How many people work at your company?",
            "fields": [{"name": "company_size", "type": "enum", "values": ["1-10", "11-50", "51+"]}],
            "outcome": "qualified",
        },
    ],
}


def until(browser: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 15) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(check)


def text_of(browser: WebDriver, css: str) -> str:
    """The element's text read in one step (the page swaps its live regions under us every few seconds)."""
    text = browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
    )
    return str(text)


def click(browser: WebDriver, xpath: str) -> None:
    """Click once the element is there, again if a live refresh replaced it between finding and clicking."""

    def attempt(driver: WebDriver) -> bool:
        try:
            driver.find_element(By.XPATH, xpath).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    until(browser, attempt)


def connection(live: LiveConsole, state: str, reason: int = 200) -> None:
    data = {"instance": "acme", "state": state, "statusReason": reason}
    assert live.webhook({"event": "connection.update", "instance": "acme", "data": data}) == 200


def receipt(live: LiveConsole, whatsapp_id: str, status: str) -> None:
    data = {"keyId": whatsapp_id, "remoteJid": f"{LEAD}@s.whatsapp.net", "fromMe": True, "status": status}
    data |= {"instanceId": "fake", "messageId": "row-" + whatsapp_id}
    assert live.webhook({"event": "messages.update", "instance": "acme", "data": data}) == 200


def test_an_operator_runs_a_conversation_from_the_console(
    live_console: LiveConsole, browser: WebDriver
) -> None:
    live, harness = live_console, live_console.harness
    org = harness.admin.create_organization("Acme Sales")
    flow = harness.admin.create_tree_flow(org, SCRIPT)
    agent = harness.admin.create_agent(org, "acme", tree_flow=flow, name="Sofia")
    key = harness.admin.post(f"/api/admin/organizations/{org}/api-keys", {"name": "console"})["key"]
    connection(live, "open")
    live.say("acme", "Oi, quero agendar uma demo", push_name="Maria Souza")

    # sign in with the organization key: a cookie, never the key in a URL
    browser.get(live.url + "/console/sign-in")
    browser.find_element(By.ID, "credential").send_keys(key)
    click(browser, "//button[normalize-space()='Sign in']")
    until(browser, lambda d: d.current_url.endswith(f"/console/orgs/{org}/talks"))
    assert key not in browser.current_url
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert key not in cookie["value"]

    # the agent's WhatsApp state, kept current by connection.update webhooks while the page is open
    click(browser, "//nav//a[normalize-space()='Agents']")
    until(browser, lambda d: text_of(d, f"[data-agent='{agent}'] .status") == "Connected")
    connection(live, "close", 401)
    until(browser, lambda d: text_of(d, f"[data-agent='{agent}'] .status") == "Disconnected")
    harness.evolution.set_state("acme", "close")
    click(browser, "//button[normalize-space()='Show QR code to connect']")
    image = (
        "const i = document.querySelector('.qr img'); return i && i.complete ? [i.src, i.naturalWidth] : null"
    )
    src, width = until(browser, lambda d: d.execute_script(image))
    assert src.startswith("data:image/png;base64,")
    assert width > 0
    click(browser, "//button[normalize-space()='Configure webhook']")
    until(browser, lambda d: "Webhook configured" in d.page_source)
    hook = harness.evolution.webhook("acme")
    assert hook is not None
    assert hook["url"] == live.url + WEBHOOK_PATH
    harness.evolution.set_state("acme", "open")
    click(browser, "//button[normalize-space()='Test connection']")
    until(browser, lambda d: "Connection tested" in d.page_source)
    until(browser, lambda d: text_of(d, "#agent-live .status") == "Connected")  # the QR code led here

    # the conversation, fed by real webhooks, updates live
    click(browser, "//nav//a[normalize-space()='Conversations']")
    click(browser, "//ol[@class='talks']//a")
    until(browser, lambda d: "Who am I talking to?" in text_of(d, ".transcript"))
    live.say("acme", "Sou a Maria Souza", push_name="Maria Souza")
    until(browser, lambda d: "What is your email?" in text_of(d, ".transcript"))
    live.say("acme", "maria.souza@example.com", push_name="Maria Souza")
    until(browser, lambda d: "How many people work" in text_of(d, ".transcript"))
    until(browser, lambda d: "Company size" in text_of(d, "#state-live"))
    assert "maria.souza@example.com" in text_of(browser, "#state-live")
    bot_reply = harness.messages(harness.talks(org)[0]["id"])[-1]
    receipt(live, bot_reply["whatsappMessageId"], "DELIVERY_ACK")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.out.delivered"))

    # a human takes over: pause, the lead's next message gets no bot reply, a person answers
    click(browser, "//button[normalize-space()='Pause the bot (take over)']")
    until(browser, lambda d: "paused" in text_of(d, "[data-bot]"))
    replies = len(harness.replies("acme"))
    live.say("acme", "Posso falar com uma pessoa antes?", push_name="Maria Souza")
    until(browser, lambda d: "Posso falar com uma pessoa" in text_of(d, ".transcript"))
    assert len(harness.replies("acme")) == replies
    human = "Claro, Maria! Aqui é a Ana, do time comercial. Que tal amanhã às 10h?"
    browser.find_element(By.ID, "reply-text").send_keys(human)
    click(browser, "//button[normalize-space()='Send']")
    until(browser, lambda d: human in harness.replies("acme"))
    sent = harness.evolution.sent_messages()[-1]
    assert sent["text"] == human
    assert sent["number"] == LEAD
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.out.human.sent"))
    assert "Human (console)" in text_of(browser, ".msg.out.human")
    human_row = harness.messages(harness.talks(org)[0]["id"])[-1]
    assert human_row["metadata"]["sentVia"] == "console"
    receipt(live, human_row["whatsappMessageId"], "READ")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.out.human.read .mark.read"))

    browser.set_window_size(1280, 1000)
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.out.human.read"))
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))

    # phone width: nothing wider than the screen, every control still there
    browser.set_window_size(390, 844)
    browser.refresh()
    until(browser, lambda d: d.find_elements(By.ID, "reply-text"))
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input:not([type=hidden]), textarea, select')]"
        ".filter(e => !(e.labels && e.labels.length)).map(e => e.name)"
    )
    assert unlabelled == []
