"""A browser-like client of the console (its own cookie jar, the CSRF token read off a page) and the
script the console tests share."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from luminai_actors.testing import LuminaiHarness

SCRIPT = {
    "name": "Qualification",
    "steps": [
        {"id": "need", "name": "Need", "question": "What are you looking for?"},
        {"id": "budget", "name": "Budget", "question": "What budget do you have in mind?"},
    ],
}


class Console:
    """A browser-like client of the console with its own cookie jar."""

    def __init__(self, harness: LuminaiHarness) -> None:
        self.client = TestClient(harness.client.app, base_url="http://testserver")
        self.harness = harness

    def sign_in(self, credential: str) -> None:
        response = self.client.post(
            "/console/sign-in", data={"credential": credential}, follow_redirects=False
        )
        assert response.status_code == 303, response.text

    def csrf(self, page: str) -> str:
        html = self.client.get(page).text
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
        assert found, html[:500]
        return found.group(1)

    def post(self, path: str, page: str, **form: str) -> Any:
        return self.client.post(path, data={"csrf_token": self.csrf(page), **form}, follow_redirects=False)
