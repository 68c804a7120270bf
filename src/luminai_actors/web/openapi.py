"""The OpenAPI 3.1 document of the admin API (served at `/api/admin/openapi.json`), written by hand.

It is the contract checked from outside, so it is kept next to the routes and tested against them: every
route of the app under `/api/admin` appears here with its method.
"""

from __future__ import annotations

from typing import Any

from luminai_actors import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "401": _json(_ref("Error"), "missing or wrong bearer token (or no LUMINAI_ADMIN_TOKEN configured)"),
    "403": _json(_ref("Error"), "only the operator token may do this"),
    "404": _json(_ref("Error"), "not found, or of another organization"),
    "422": _json(_ref("Error"), "a field is invalid; `field` names it"),
}
_PAGE = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100},
    },
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
]


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


def _op(
    summary: str, responses: dict[str, Any], *, body: str | None = None, params: list[Any] | None = None
) -> Any:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        operation["parameters"] = params
    return operation


def openapi_document() -> dict[str, Any]:
    org, talk, agent = _path_param("orgId"), _path_param("talkId"), _path_param("agentId")
    contact = _path_param("contactId")
    created = {
        "201": _json(
            {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}}, "Created"
        )
    }
    secret = {"type": "object", "properties": {"webhookToken": {"type": "string"}}}
    flow = _path_param("treeFlowId")
    obj = {"type": "object"}
    listed = {"200": _json({"type": "array", "items": obj})}
    conflict = {"409": _json(_ref("Error"), "still in use: deactivate it instead")}
    gone = {"204": {"description": "Deleted"}, **conflict}
    patch = {"required": True, "content": {"application/json": {"schema": obj}}}

    def patched(summary: str, params: list[Any]) -> Any:
        return {**_op(summary, {"200": _json(obj)}, params=params), "requestBody": patch}

    paths: dict[str, Any] = {
        "/api/admin/organizations": {
            "post": _op("Create an organization (operator token only)", created, body="OrganizationIn"),
            "get": _op("Organizations (an organization key: its own)", listed, params=_PAGE),
        },
        "/api/admin/organizations/{orgId}": {
            "get": _op(
                "One organization {id, name, active, ai: {baseUrl, model, apiKeySet}}",
                {"200": _json(obj)},
                params=[org],
            ),
            "patch": patched(
                '{"name"?, "active"?, "ai"?: {"baseUrl"?, "model"?, "apiKey"?}} (active: operator only, '
                "else 403); an inactive organization's webhooks are answered 200 ignored and nothing is "
                "sent. ai: the organization's own OpenAI-compatible LLM (null clears a value; the key is "
                "never returned; an organization key's baseUrl obeys the outbound address rule, else 422 "
                "ai.baseUrl)",
                [org],
            ),
        },
        "/api/admin/organizations/{orgId}/audit": {
            "get": _op(
                "Every change through the admin API or the console, newest first: actor (operator or "
                "key:<id>), action, entityType, entityId, before, after (secrets masked), createdAt",
                listed,
                params=[org, *_PAGE],
            )
        },
        "/api/admin/agents/{agentId}": {
            "get": _op(
                "One agent (secrets only as apiKeySet / webhookTokenSet)", {"200": _json(obj)}, params=[agent]
            ),
            "patch": patched(
                "Change any field of the creation's body; whatsapp fields merge; a new apiKey or "
                "webhookToken rotates it",
                [agent],
            ),
            "delete": _op("Delete an agent that has no conversations", gone, params=[agent]),
        },
        "/api/admin/tree-flows/{treeFlowId}": {
            "get": _op("One tree flow with its current version", {"200": _json(obj)}, params=[flow]),
            "patch": patched(
                "Change definition fields (stored as the next version: talks under way keep theirs) or "
                "active",
                [flow],
            ),
            "delete": _op("Delete a flow no agent uses and no open talk follows", gone, params=[flow]),
        },
        "/api/admin/organizations/{orgId}/api-keys": {
            "post": _op(
                "Make an API key for this organization (its plaintext is returned once)",
                {"201": _json(_ref("ApiKey"), "Created")},
                params=[org],
            ),
            "get": _op(
                "The organization's API keys (never the key itself)",
                {"200": _json({"type": "array", "items": _ref("ApiKeyInfo")})},
                params=[org],
            ),
        },
        "/api/admin/organizations/{orgId}/api-keys/{keyId}": {
            "delete": _op(
                "Revoke a key: from then on it gets 401 on every route and its console sessions end",
                {"204": {"description": "Revoked"}},
                params=[org, _path_param("keyId")],
            )
        },
        "/api/admin/organizations/{orgId}/tree-flows": {
            "post": _op(
                "Create a TreeFlow (validated; 422 names the bad path)",
                created,
                body="TreeFlowIn",
                params=[org],
            ),
            "get": _op("The organization's tree flows", listed, params=[org, *_PAGE]),
        },
        "/api/admin/organizations/{orgId}/agents": {
            "post": _op(
                "Create an agent (409 when the instance name is taken by any organization; 422 when an "
                "organization key gives a serverUrl that is not a public address nor allowed by "
                "LUMINAI_EVOLUTION_ALLOWED_HOSTS)",
                {
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string", "format": "uuid"},
                                "webhookToken": {
                                    "type": "string",
                                    "description": "generated when the body gave none; shown this once",
                                },
                            },
                        },
                        "Created",
                    ),
                    "409": _json(_ref("Error"), "instance name taken"),
                },
                body="AgentIn",
                params=[org],
            ),
            "get": _op("The organization's agents (no secrets)", listed, params=[org, *_PAGE]),
        },
        "/api/admin/organizations/{orgId}/contacts": {
            "get": _op(
                "The organization's contacts",
                {"200": _json({"type": "array", "items": _ref("Contact")})},
                params=[org, *_PAGE],
            )
        },
        "/api/admin/organizations/{orgId}/talks": {
            "get": _op(
                "The organization's talks",
                {"200": _json({"type": "array", "items": _ref("Talk")})},
                params=[org, *_PAGE],
            )
        },
        "/api/admin/contacts/{contactId}/export": {
            "get": _op(
                "Everything held about one person (LGPD art. 18, GDPR art. 15): the contact, its talks with "
                "their TalkFlow (collected fields) and messages (metadata holds media metadata), and the "
                "person's messages in shared chats; recorded in the audit log",
                {"200": _json(_ref("ContactExport"))},
                params=[contact],
            )
        },
        "/api/admin/contacts/{contactId}": {
            "delete": _op(
                "Erase one person (GDPR art. 17): the contact, its talks, messages, collected fields, "
                "pending AI turns and unsent replies are deleted, nothing is sent to them afterwards; "
                "if they had opted out, only a keyed hash of their numbers is kept so the agent never "
                "writes to them again. Recorded in the audit log (counts only)",
                {"204": {"description": "Erased"}},
                params=[contact],
            )
        },
        "/api/admin/talks/{talkId}": {
            "get": _op("One talk with its TalkFlow", {"200": _json(_ref("Talk"))}, params=[talk])
        },
        "/api/admin/talks/{talkId}/messages": {
            "get": _op(
                "A talk's messages, oldest first",
                {"200": _json({"type": "array", "items": _ref("TalkMessage")})},
                params=[talk, *_PAGE],
            )
        },
        "/api/admin/talks/{talkId}/pause": {
            "post": _op(
                "A human takes the talk: no AI turns", {"200": _json({"type": "object"})}, params=[talk]
            )
        },
        "/api/admin/talks/{talkId}/resume": {
            "post": _op("The bot takes the talk back", {"200": _json({"type": "object"})}, params=[talk])
        },
        "/api/admin/agents/{agentId}/whatsapp/test-connection": {
            "post": _op(
                "Ask Evolution for the instance state and record it",
                {"200": _json({"type": "object"}), "502": _json(_ref("Error"), "Evolution API failed")},
                params=[agent],
            )
        },
        "/api/admin/agents/{agentId}/whatsapp/webhook": {
            "post": _op(
                "Point the instance's Evolution webhook at this service",
                {"200": _json({"type": "object"}), "502": _json(_ref("Error"), "Evolution API failed")},
                params=[agent],
            )
        },
        "/api/admin/agents/{agentId}/whatsapp/webhook-token": {
            "post": _op(
                "Give the agent a new webhook secret (the old one stops working at once; shown once; "
                "then run set-webhook)",
                {"201": _json(secret, "Rotated")},
                params=[agent],
            )
        },
    }
    string, uuid_, when = (
        {"type": "string"},
        {"type": "string", "format": "uuid"},
        {"type": ["string", "null"], "format": "date-time"},
    )
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {"success": {"type": "boolean"}, "error": string, "field": string},
        },
        "OrganizationIn": {"type": "object", "required": ["name"], "properties": {"name": string}},
        "ApiKey": {
            "type": "object",
            "properties": {"id": uuid_, "key": string, "prefix": string, "organizationId": uuid_},
        },
        "ApiKeyInfo": {
            "type": "object",
            "properties": {
                "id": uuid_,
                "organizationId": uuid_,
                "name": string,
                "prefix": string,
                "createdAt": when,
                "lastUsedAt": when,
                "revokedAt": when,
            },
        },
        "TreeFlowIn": {
            "type": "object",
            "required": ["name", "steps"],
            "properties": {
                "name": string,
                "objective": string,
                "steps": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["id"]}},
                "outcomes": {"type": "object"},
            },
            "description": "See README: The SDR's script (TreeFlow)",
        },
        "AgentIn": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": string,
                "prompt": string,
                "treeFlowId": uuid_,
                "active": {"type": "boolean"},
                "whatsapp": {
                    "type": "object",
                    "properties": {
                        "instanceName": string,
                        "phone": string,
                        "serverUrl": {"type": "string", "format": "uri"},
                        "apiKey": string,
                        "active": {"type": "boolean"},
                        "webhookToken": string,
                        "metadata": {"type": "object"},
                    },
                },
            },
        },
        "Contact": {
            "type": "object",
            "properties": {
                "id": uuid_,
                "organizationId": uuid_,
                "companyId": uuid_,
                "name": string,
                "firstName": string,
                "lastName": string,
                "email": {"type": ["string", "null"]},
                "phone": string,
                "mobilePhone": string,
                "whatsappLid": string,
                "whatsappJid": string,
                "leadSource": string,
                "origin": string,
                "optedOutAt": when,
                "createdAt": when,
            },
        },
        "Talk": {
            "type": "object",
            "properties": {
                "id": uuid_,
                "organizationId": uuid_,
                "contactId": uuid_,
                "agentId": uuid_,
                "agents": {"type": "array", "items": uuid_},
                "subject": string,
                "channel": {"type": "integer"},
                "status": {"type": "integer"},
                "paused": {"type": "boolean"},
                "needsHuman": {"type": "boolean"},
                "talkFlow": {"type": ["object", "null"]},
                "whatsappRemoteJid": string,
                "dateLastMessage": when,
            },
        },
        "ContactExport": {
            "type": "object",
            "properties": {
                "contact": _ref("Contact"),
                "talks": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            _ref("Talk"),
                            {
                                "type": "object",
                                "properties": {"messages": {"type": "array", "items": _ref("TalkMessage")}},
                            },
                        ]
                    },
                },
                "messagesInSharedChats": {"type": "array", "items": _ref("TalkMessage")},
            },
        },
        "TalkMessage": {
            "type": "object",
            "properties": {
                "id": uuid_,
                "talkId": uuid_,
                "direction": {"enum": ["inbound", "outbound"]},
                "channel": string,
                "body": string,
                "messageType": string,
                "fromContactId": uuid_,
                "fromAgentId": uuid_,
                "whatsappMessageId": string,
                "metadata": {"type": "object"},
                "sendStatus": string,
                "sendAttempts": {"type": "integer"},
                "sentAt": when,
                "deliveredAt": when,
                "readAt": when,
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "luminai-actors admin API", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
