"""The console's HTML and JSON endpoints through Starlette's TestClient on the real in-process service
(`luminai` harness: SQLite, memory broker, offline brain, fake Evolution API): sign-in and its cookie, org
scoping (404 across organizations), CSRF on every state-changing form, and each action end to end."""

from __future__ import annotations

from luminai_actors.testing import LuminaiHarness
from luminai_actors.web.console.session import COOKIE
from tests.unit.console_client import Console


def test_pages_need_a_session_and_json_answers_401(luminai: LuminaiHarness, acme: dict[str, str]) -> None:
    anonymous = Console(luminai).client
    for path in ("/console/", f"/console/orgs/{acme['org']}/talks", f"/console/talks/{acme['talk']}"):
        response = anonymous.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in"
    assert anonymous.get(f"/console/api/talks/{acme['talk']}").status_code == 401
    page = anonymous.get("/console/sign-in")
    assert page.status_code == 200
    assert '<label for="credential">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_operator_sign_in_sets_a_strict_httponly_cookie_without_the_token(luminai: LuminaiHarness) -> None:
    client = Console(luminai).client
    token = luminai.settings.admin_token or ""
    response = client.post("/console/sign-in", data={"credential": token}, follow_redirects=False)
    assert response.status_code == 303
    assert token not in response.headers["location"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert token not in cookie
    assert client.get("/console/orgs").status_code == 200


def test_a_wrong_credential_or_a_forged_cookie_gets_nothing(
    luminai: LuminaiHarness, acme: dict[str, str]
) -> None:
    client = Console(luminai).client
    response = client.post("/console/sign-in", data={"credential": "lmk_nope"}, follow_redirects=False)
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    client.cookies.set(COOKIE, "eyJvcmciOm51bGx9.forged", path="/console")
    assert client.get("/console/orgs", follow_redirects=False).status_code == 303


def test_a_sign_in_posted_from_another_site_is_refused(luminai: LuminaiHarness) -> None:
    client = Console(luminai).client
    response = client.post(
        "/console/sign-in",
        data={"credential": luminai.settings.admin_token or ""},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_an_organization_key_sees_only_its_organization(
    luminai: LuminaiHarness, acme: dict[str, str]
) -> None:
    other_org = luminai.admin.create_organization("Globex")
    other_agent = luminai.admin.create_agent(other_org, "globex", name="Gus")
    luminai.say("globex", "Hello there")
    luminai.drain()
    other_talk = luminai.talks(other_org)[0]["id"]
    console = Console(luminai)
    console.sign_in(acme["key"])

    home = console.client.get("/console/", follow_redirects=False)
    assert home.headers["location"] == f"/console/orgs/{acme['org']}/talks"
    orgs = console.client.get("/console/orgs").text
    assert "Acme" in orgs
    assert "Globex" not in orgs
    for path in (
        f"/console/orgs/{acme['org']}/talks",
        f"/console/orgs/{acme['org']}/agents",
        f"/console/orgs/{acme['org']}/analytics",
        f"/console/talks/{acme['talk']}",
        f"/console/agents/{acme['agent']}",
    ):
        assert console.client.get(path).status_code == 200, path
    for path in (
        f"/console/orgs/{other_org}/talks",
        f"/console/orgs/{other_org}/agents",
        f"/console/orgs/{other_org}/analytics",
        f"/console/talks/{other_talk}",
        f"/console/agents/{other_agent}",
        f"/console/api/talks/{other_talk}",
        f"/console/api/orgs/{other_org}/talks",
        f"/console/api/agents/{other_agent}",
        "/console/talks/not-a-uuid",
    ):
        assert console.client.get(path).status_code == 404, path
    page = f"/console/talks/{acme['talk']}"
    for action in (f"/console/talks/{other_talk}/pause", f"/console/talks/{other_talk}/messages"):
        assert console.post(action, page, text="hi").status_code == 404
    assert console.post(f"/console/agents/{other_agent}/test-connection", page).status_code == 404
    assert luminai.admin.talk(other_talk)["paused"] is False


def test_a_key_revoked_through_the_api_gets_401_and_ends_its_sessions(
    luminai: LuminaiHarness, acme: dict[str, str]
) -> None:
    console = Console(luminai)
    console.sign_in(acme["key"])
    assert console.client.get(f"/console/talks/{acme['talk']}").status_code == 200
    as_key = {"Authorization": f"Bearer {acme['key']}"}
    keys_path = f"/api/admin/organizations/{acme['org']}/api-keys"
    (listed,) = luminai.client.get(keys_path, headers=as_key).json()
    assert set(listed) == {"id", "organizationId", "name", "prefix", "createdAt", "lastUsedAt", "revokedAt"}
    assert acme["key"].startswith(listed["prefix"])
    assert acme["key"] not in str(listed)
    assert listed["lastUsedAt"] is not None  # it was just used
    assert listed["revokedAt"] is None

    other_org = luminai.admin.create_organization("Other")
    assert (
        luminai.client.delete(
            f"/api/admin/organizations/{other_org}/api-keys/{listed['id']}", headers=as_key
        ).status_code
        == 404
    )
    assert luminai.admin.request("DELETE", f"{keys_path}/{listed['id']}").status_code == 204

    assert luminai.client.get(keys_path, headers=as_key).status_code == 401
    assert luminai.client.get(f"/api/admin/talks/{acme['talk']}", headers=as_key).status_code == 401
    assert console.client.get(f"/console/talks/{acme['talk']}", follow_redirects=False).status_code == 303
    assert (
        Console(luminai)
        .client.post("/console/sign-in", data={"credential": acme["key"]}, follow_redirects=False)
        .status_code
        == 401
    )
    (revoked,) = luminai.admin.get(keys_path)
    assert revoked["revokedAt"] is not None
    assert luminai.admin.request("DELETE", f"{keys_path}/{listed['id']}").status_code == 204  # idempotent


def test_state_changing_forms_need_the_csrf_token_and_the_same_origin(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    pause = f"/console/talks/{acme['talk']}/pause"
    page = f"/console/talks/{acme['talk']}"
    assert operator.client.post(pause, follow_redirects=False).status_code == 403
    assert (
        operator.client.post(pause, data={"csrf_token": "forged"}, follow_redirects=False).status_code == 403
    )
    token = operator.csrf(page)
    foreign = {"Origin": "https://evil.example"}
    response = operator.client.post(
        pause, data={"csrf_token": token}, headers=foreign, follow_redirects=False
    )
    assert response.status_code == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    response = operator.client.post(pause, data={"csrf_token": token}, headers=cross, follow_redirects=False)
    assert response.status_code == 403
    assert luminai.admin.talk(acme["talk"])["paused"] is False
    # another session's token is not this one's
    other = Console(luminai)
    other.sign_in(luminai.settings.admin_token or "")
    response = operator.client.post(pause, data={"csrf_token": other.csrf(page)}, follow_redirects=False)
    assert response.status_code == 403
    same = {"Origin": "http://testserver"}
    response = operator.client.post(pause, data={"csrf_token": token}, headers=same, follow_redirects=False)
    assert response.status_code == 303
    assert luminai.admin.talk(acme["talk"])["paused"] is True


def test_sign_out_forgets_the_session(luminai: LuminaiHarness, operator: Console) -> None:
    response = operator.post("/console/sign-out", "/console/orgs")
    assert response.status_code == 303
    assert operator.client.get("/console/orgs", follow_redirects=False).status_code == 303


def test_conversations_list_and_transcript_with_delivery_marks(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    talks = operator.client.get(f"/console/api/orgs/{acme['org']}/talks").json()
    assert [t["id"] for t in talks["talks"]] == [acme["talk"]]
    before = operator.client.get(f"/console/api/talks/{acme['talk']}").json()
    marks = [(m["direction"], m["delivery"], m["mark"]) for m in before["talk"]["messages"]]
    assert marks == [("in", "received", ""), ("out", "sent", "✓")]
    assert before["talk"]["flow"]["currentStep"] == "Need"

    reply = luminai.messages(acme["talk"])[-1]
    read = {"keyId": reply["whatsappMessageId"], "remoteJid": "5511987654321@s.whatsapp.net"}
    read |= {"fromMe": True, "status": "READ", "instanceId": "x", "messageId": "m1"}
    receipt = {"event": "messages.update", "instance": "acme", "data": read}
    assert luminai.post_webhook(receipt).status_code == 200
    after = operator.client.get(f"/console/api/talks/{acme['talk']}").json()
    assert after["talk"]["messages"][-1]["delivery"] == "read"
    assert after["version"] != before["version"]

    html = operator.client.get(f"/console/talks/{acme['talk']}").text
    assert 'class="mark read"' in html
    assert "Oi, quero agendar" in html
    assert f'data-version="{after["version"]}"' in html
    newest = luminai.admin.create_agent(acme["org"], "acme-2", name="Second")
    assert newest
    luminai.say("acme-2", "A newer conversation", phone="5511911112222")
    luminai.drain()
    listed = operator.client.get(f"/console/api/orgs/{acme['org']}/talks").json()["talks"]
    assert listed[0]["lastBody"] != "Oi, quero agendar"
    assert len(listed) == 2


def test_pause_then_resume_answers_the_messages_that_waited(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    page = f"/console/talks/{acme['talk']}"
    response = operator.post(f"{page}/pause", page)
    assert response.headers["location"] == f"{page}?notice=paused"
    replies = len(luminai.replies("acme"))
    luminai.say("acme", "Procuro um CRM")
    luminai.drain()
    assert len(luminai.replies("acme")) == replies  # paused: a human has it
    assert "Resume the bot" in operator.client.get(page).text
    response = operator.post(f"{page}/resume", page)
    assert response.headers["location"] == f"{page}?notice=resumed-answering"
    luminai.drain()
    assert len(luminai.replies("acme")) == replies + 1


def test_a_human_message_goes_out_through_the_sender(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    page = f"/console/talks/{acme['talk']}"
    response = operator.post(f"{page}/messages", page, text="Oi! Aqui é a Ana, do time comercial.")
    assert response.status_code == 303
    luminai.drain()
    assert luminai.replies("acme")[-1] == "Oi! Aqui é a Ana, do time comercial."
    human = luminai.messages(acme["talk"])[-1]
    assert human["metadata"]["human"] is True
    assert human["metadata"]["sentVia"] == "console"
    assert human["sendStatus"] == "sent"
    assert human["fromAgentId"] is None
    assert luminai.admin.talk(acme["talk"])["paused"] is True
    html = operator.client.get(page).text
    assert "Human (console)" in html

    empty = operator.post(f"{page}/messages", page, text="   ")
    assert empty.status_code == 422
    assert 'id="reply-error"' in empty.text


def test_a_failed_reply_shows_its_reason_and_is_retried(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    page = f"/console/talks/{acme['talk']}"
    luminai.evolution.fail_next(1, status=401)  # permanent: no automatic retry
    operator.post(f"{page}/messages", page, text="Are you there?")
    luminai.drain()
    failed = luminai.messages(acme["talk"])[-1]
    assert failed["sendStatus"] == "failed"
    html = operator.client.get(page).text
    assert "Not sent after 1 attempt" in html
    assert "Evolution API 401" in html
    assert f'action="/console/messages/{failed["id"]}/retry"' in html

    response = operator.post(f"/console/messages/{failed['id']}/retry", page)
    assert response.headers["location"] == f"{page}?notice=retried"
    luminai.drain()
    retried = luminai.messages(acme["talk"])[-1]
    assert retried["sendStatus"] == "sent"
    assert retried["metadata"]["retryHistory"][0]["error"].startswith("Evolution API 401")
    assert luminai.replies("acme")[-1] == "Are you there?"
    again = operator.post(f"/console/messages/{failed['id']}/retry", page)
    assert again.status_code == 409


def test_agent_state_actions_and_qr_code(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    agents = f"/console/orgs/{acme['org']}/agents"
    agent_page = f"/console/agents/{acme['agent']}"
    closed = {"instance": "acme", "state": "close", "statusReason": 401}
    state = {"event": "connection.update", "instance": "acme", "data": closed}
    assert luminai.post_webhook(state).status_code == 200
    listed = operator.client.get(f"/console/api/orgs/{acme['org']}/agents").json()["agents"]
    assert listed[0]["status"] == "disconnected"
    assert 'data-status="disconnected"' in operator.client.get(agents).text

    luminai.evolution.set_state("acme", "close")
    response = operator.post(f"/console/agents/{acme['agent']}/connect", agent_page)
    assert response.headers["location"] == f"{agent_page}?notice=qrcode"
    html = operator.client.get(agent_page).text
    assert '<img src="data:image/png;base64,' in html
    assert 'data-status="connecting"' in html

    luminai.evolution.set_state("acme", "open")
    response = operator.post(f"/console/agents/{acme['agent']}/test-connection", agents, next=agents)
    assert response.headers["location"] == f"{agents}?notice=tested"
    assert (
        operator.client.get(f"/console/api/agents/{acme['agent']}").json()["agent"]["status"] == "connected"
    )

    response = operator.post(
        f"/console/agents/{acme['agent']}/webhook", agent_page, next="https://evil.example/"
    )
    assert response.headers["location"] == f"{agent_page}?notice=webhook"
    hook = luminai.evolution.webhook("acme")
    assert hook is not None
    assert hook["url"] == "http://testserver/api/webhooks/whatsapp/evolution"


def test_agent_settings_form_validates_like_the_admin_api(
    luminai: LuminaiHarness, acme: dict[str, str], operator: Console
) -> None:
    luminai.admin.create_agent(acme["org"], "taken", name="Other")
    page = f"/console/agents/{acme['agent']}"
    action = f"{page}/settings"
    base = {"instanceName": "acme", "serverUrl": luminai.evolution.url, "active": "on", "apiVersion": "2"}

    bad = operator.post(action, page, **{**base, "serverUrl": "not a url"})
    assert bad.status_code == 422
    assert 'id="e-serverUrl"' in bad.text
    assert 'value="not a url"' in bad.text
    slow = operator.post(action, page, **{**base, "timePerCharMs": "-5"})
    assert 'id="e-timePerCharMs"' in slow.text
    taken = operator.post(action, page, **{**base, "instanceName": "taken"})
    assert taken.status_code == 409
    assert 'id="e-instanceName"' in taken.text

    saved = operator.post(
        action, page, **{**base, "phone": "+55 11 91234-5678", "splitMessages": "on", "timePerCharMs": "40"}
    )
    assert saved.headers["location"] == f"{page}?notice=saved"
    agent = operator.client.get(f"/console/api/agents/{acme['agent']}").json()["agent"]
    assert agent["phone"] == "+5511912345678"
    assert agent["options"]["splitMessages"] is True
    assert agent["options"]["timePerCharMs"] == 40
    assert agent["hasApiKey"] is True  # an empty key field keeps the stored key
    luminai.say("acme", "still answering?")
    luminai.drain()
    assert luminai.replies("acme")


def test_analytics_page_and_json(luminai: LuminaiHarness, acme: dict[str, str], operator: Console) -> None:
    data = operator.client.get(f"/console/api/orgs/{acme['org']}/analytics?days=7").json()
    assert data["days"] == 7
    assert len(data["messagesPerDay"]) == 7
    assert data["messagesPerDay"][-1]["inbound"] == 1
    assert data["messagesPerDay"][-1]["outbound"] == 1
    assert data["firstResponse"]["talks"] == 1
    assert data["firstResponse"]["medianSeconds"] is not None
    assert [s["leads"] for s in data["steps"][0]["steps"]] == [1, 0]
    html = operator.client.get(f"/console/orgs/{acme['org']}/analytics").text
    assert html.count("<svg") >= 2
    assert 'aria-label="Messages per day, from leads and replies"' in html
