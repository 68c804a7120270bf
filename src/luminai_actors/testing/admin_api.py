"""`AdminApi`: the admin API (`/api/admin/...`) of a `LuminaiHarness` with the operator token, as plain calls
returning ids and JSON; `AdminCallFailed` when a call answers something else than expected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    # What Starlette's TestClient answers with: httpx2's Response on Starlette 1.x (httpx's before it).
    from httpx2 import Response

    from luminai_actors.testing.harness import LuminaiHarness

DEFAULT_PHONE = "5511987654321"
"""The lead's number when a test does not name one (a Brazilian mobile, as WhatsApp spells it)."""
DEFAULT_PROMPT = "You are a friendly sales development rep. Be brief."
"""The agent prompt `AdminApi.create_agent` uses when none is given."""
DEFAULT_API_KEY = "harness-instance-key"
"""The Evolution instance key `AdminApi.create_agent` registers on the fake and stores on the agent."""


class AdminCallFailed(AssertionError):
    """An admin API call answered something other than what the helper expected (a test failure)."""

    def __init__(self, method: str, path: str, response: Response) -> None:
        super().__init__(f"{method} {path} answered {response.status_code}: {response.text}")
        self.status_code = response.status_code
        self.response = response


class AdminApi:
    """The admin API (`/api/admin/...`) with the operator token, as plain calls returning ids and JSON."""

    def __init__(self, harness: LuminaiHarness) -> None:
        self._harness = harness

    def request(self, method: str, path: str, *, json: Any = None) -> Response:
        """Any admin call, with the operator token; the raw response, whatever its status."""
        token = self._harness.settings.admin_token or ""
        headers = {"Authorization": f"Bearer {token}"}
        return self._harness.client.request(method, path, json=json, headers=headers)

    def get(self, path: str) -> Any:
        """GET `path` and return its JSON; raises `AdminCallFailed` unless the answer is 200."""
        return self._expect("GET", path, None, 200)

    def post(self, path: str, body: Any = None, *, expect: int = 201) -> Any:
        """POST `body` to `path` and return the JSON answer; raises `AdminCallFailed` unless `expect`."""
        return self._expect("POST", path, body, expect)

    def create_organization(self, name: str) -> str:
        """A new organization; returns its id."""
        return str(self.post("/api/admin/organizations", {"name": name})["id"])

    def create_tree_flow(self, org: str, document: Mapping[str, Any]) -> str:
        """A TreeFlow (the README's JSON document) in `org`; returns its id."""
        return str(self.post(f"/api/admin/organizations/{org}/tree-flows", dict(document))["id"])

    def create_agent(
        self,
        org: str,
        instance: str,
        *,
        tree_flow: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        token: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str = "SDR",
        api_key: str = DEFAULT_API_KEY,
        state: str = "open",
    ) -> str:
        """An active agent answering on the WhatsApp instance `instance`; returns its id.

        The instance is registered on the fake Evolution API first (with `api_key`, in connection `state`),
        and the agent points at that fake. `tree_flow` is a TreeFlow id (`create_tree_flow`); without one
        the agent has no script. `token` is the agent's webhook secret: `post_webhook` and `say` send it as
        `X-Webhook-Token` unless given explicit headers; without one, the token the service generated (in
        the creation's answer) is sent. `metadata` is the agent's `whatsapp.metadata`.
        """
        evolution = self._harness.evolution
        evolution.add_instance(instance, api_key, state)
        whatsapp: dict[str, Any] = {
            "instanceName": instance,
            "serverUrl": evolution.url,
            "apiKey": api_key,
            "active": True,
        }
        if token is not None:
            whatsapp["webhookToken"] = token
        if metadata is not None:
            whatsapp["metadata"] = dict(metadata)
        body: dict[str, Any] = {"name": name, "prompt": prompt, "active": True, "whatsapp": whatsapp}
        if tree_flow is not None:
            body["treeFlowId"] = tree_flow
        created = self.post(f"/api/admin/organizations/{org}/agents", body)
        # Without a token of the test's own, the agent got a generated one (shown once, in the answer).
        self._harness._webhook_tokens[instance] = token or created.get("webhookToken")
        return str(created["id"])

    def contacts(self, org: str) -> list[dict[str, Any]]:
        """The organization's contacts (first 1000)."""
        return cast(list[dict[str, Any]], self.get(f"/api/admin/organizations/{org}/contacts?limit=1000"))

    def talks(self, org: str) -> list[dict[str, Any]]:
        """The organization's talks (first 1000), as the admin API serialises them."""
        return cast(list[dict[str, Any]], self.get(f"/api/admin/organizations/{org}/talks?limit=1000"))

    def talk(self, talk_id: str) -> dict[str, Any]:
        """One talk, with its `talkFlow`."""
        return cast(dict[str, Any], self.get(f"/api/admin/talks/{talk_id}"))

    def messages(self, talk_id: str) -> list[dict[str, Any]]:
        """The talk's messages (first 1000), inbound and outbound, as the admin API serialises them."""
        return cast(list[dict[str, Any]], self.get(f"/api/admin/talks/{talk_id}/messages?limit=1000"))

    def _expect(self, method: str, path: str, body: Any, status: int) -> Any:
        response = self.request(method, path, json=body)
        if response.status_code != status:
            raise AdminCallFailed(method, path, response)
        return response.json()
