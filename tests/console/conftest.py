"""Fixtures of the console's browser tests: the real app served by uvicorn on a free port (the in-process
LuminaiHarness container: SQLite, memory broker, offline brain, a local fake Evolution API whose webhooks
reach that port) and headless Chromium from Debian's packages driven by Selenium with the system chromedriver.

Chromium missing is a failure, never a skip: `.ci/run` installs `chromium` and `chromium-driver`.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from luminai_actors.testing import LuminaiHarness
from luminai_actors.web.app import WEBHOOK_PATH, create_app

CHROMIUM = os.environ.get("LUMINAI_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LUMINAI_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--lang=en-US",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.05)


@dataclass
class LiveConsole:
    """The service at `url` (the console is `url + "/console/"`) and the harness behind it."""

    url: str
    harness: LuminaiHarness

    def webhook(self, payload: dict[str, Any]) -> int:
        """POST a webhook to the live service the way Evolution does; returns the status code."""
        headers = self.harness.webhook_headers(str(payload.get("instance")))
        status, _ = self.harness.evolution.post_webhook(self.url + WEBHOOK_PATH, payload, headers)
        return status

    def say(self, instance: str, text: str, **kw: Any) -> None:
        """The lead writes `text` (a real `messages.upsert` over HTTP); returns once the bot is done."""
        assert self.webhook(self.harness.message(instance, text, **kw)) == 200
        self.harness.drain()


@pytest.fixture
def live_console() -> Iterator[LiveConsole]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with LuminaiHarness(public_url=url) as harness:
        config = uvicorn.Config(
            create_app(container=harness.container), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
        thread.start()
        try:
            wait_for(lambda: server.started, 15, "uvicorn started")
            yield LiveConsole(url, harness)
        finally:
            server.should_exit = True
            thread.join(15)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(path) or shutil.which(path))]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed; install Debian's browser: {INSTALL}")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,900")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
