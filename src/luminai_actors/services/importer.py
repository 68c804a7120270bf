"""`run.py import FILE`: organizations, tree flows and agents from one JSON or YAML document, idempotently.

```yaml
organizations:
  - name: Acme
    treeFlows:
      - {name: Sales qualification, steps: [{id: need, question: "What do you need?"}]}
    agents:
      - name: Sofia
        prompt: You are Sofia, a friendly SDR for Acme.
        treeFlow: Sales qualification          # by name, within the organization
        whatsapp: {instanceName: acme-sdr, phone: "+5511912345678", serverUrl: https://evo.example.com,
                   apiKey: "...", active: true, webhookToken: "..."}
```

Organizations are matched by name, tree flows by name within their organization, agents by instance name
(else by name): what exists is updated, what does not is created. Everything is validated exactly as the
admin API does before anything is written, in one transaction; a bad document changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from luminai_actors.domain.ids import uuid7
from luminai_actors.domain.treeflow import validate_definition
from luminai_actors.errors import ValidationError
from luminai_actors.persistence.tables import Agent, Organization, TreeFlow
from luminai_actors.persistence.uow import SqlAlchemyUnitOfWork, UnitOfWorkFactory
from luminai_actors.services.admin import (
    new_version,
    new_webhook_token,
    parse_agent,
)


def load_document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValidationError(
            "$", f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(path, "must be a list")
    return value


def import_document(uow_factory: UnitOfWorkFactory, document: Any) -> dict[str, int]:
    """Create or update everything the document describes; returns counts of what was created and updated."""
    if not isinstance(document, dict):
        raise ValidationError("$", "must be an object with an organizations list")
    counts = {
        "organizationsCreated": 0,
        "organizationsUpdated": 0,
        "treeFlowsCreated": 0,
        "treeFlowsUpdated": 0,
        "agentsCreated": 0,
        "agentsUpdated": 0,
    }
    with uow_factory() as uow:
        assert isinstance(uow, SqlAlchemyUnitOfWork)
        assert uow.session is not None
        session = uow.session
        for o_index, org_doc in enumerate(_list(document.get("organizations"), "organizations")):
            path = f"organizations[{o_index}]"
            if (
                not isinstance(org_doc, dict)
                or not isinstance(org_doc.get("name"), str)
                or not org_doc["name"].strip()
            ):
                raise ValidationError(f"{path}.name", "is required")
            org = session.scalar(select(Organization).where(Organization.name == org_doc["name"]).limit(1))
            if org is None:
                org = Organization(id=uuid7(), name=org_doc["name"])
                session.add(org)
                session.flush()
                counts["organizationsCreated"] += 1
            else:
                counts["organizationsUpdated"] += 1
            flows: dict[str, TreeFlow] = {}
            for f_index, flow_doc in enumerate(_list(org_doc.get("treeFlows"), f"{path}.treeFlows")):
                f_path = f"{path}.treeFlows[{f_index}]"
                try:
                    definition = validate_definition(flow_doc)
                except ValidationError as exc:
                    raise ValidationError(f"{f_path}.{exc.field}", exc.message) from exc
                flow = session.scalar(
                    select(TreeFlow).where(
                        TreeFlow.organization_id == org.id, TreeFlow.name == definition["name"]
                    )
                )
                if flow is None:
                    flow = TreeFlow(
                        id=uuid7(), organization_id=org.id, name=definition["name"], definition={}, version=0
                    )
                    session.add(flow)
                    session.flush()
                    new_version(session, flow, definition)
                    counts["treeFlowsCreated"] += 1
                else:
                    if {
                        k: v for k, v in flow.definition.items() if k not in ("version", "treeFlowId")
                    } != definition:
                        new_version(session, flow, definition)  # talks under way keep their version
                    counts["treeFlowsUpdated"] += 1
                session.flush()
                flows[definition["name"]] = flow
            for a_index, agent_doc in enumerate(_list(org_doc.get("agents"), f"{path}.agents")):
                a_path = f"{path}.agents[{a_index}]"
                if not isinstance(agent_doc, dict):
                    raise ValidationError(a_path, "must be an object")
                flow_name = agent_doc.get("treeFlow")
                body = {k: v for k, v in agent_doc.items() if k != "treeFlow"}
                try:
                    columns, _ = parse_agent(body)
                except ValidationError as exc:
                    raise ValidationError(f"{a_path}.{exc.field}", exc.message) from exc
                flow_id = None
                if flow_name is not None:
                    flow = flows.get(flow_name) or session.scalar(
                        select(TreeFlow).where(TreeFlow.organization_id == org.id, TreeFlow.name == flow_name)
                    )
                    if flow is None:
                        raise ValidationError(f"{a_path}.treeFlow", f"no tree flow named {flow_name!r} here")
                    flow_id = flow.id
                instance = columns["whatsapp_instance_name"]
                agent = (
                    session.scalar(select(Agent).where(Agent.whatsapp_instance_name == instance))
                    if instance
                    else None
                ) or session.scalar(
                    select(Agent).where(Agent.organization_id == org.id, Agent.name == columns["name"])
                )
                if agent is not None and agent.organization_id != org.id:
                    raise ValidationError(
                        f"{a_path}.whatsapp.instanceName", f"{instance!r} belongs to another organization"
                    )
                if agent is None:
                    columns["whatsapp_webhook_token"] = (
                        columns["whatsapp_webhook_token"] or new_webhook_token()
                    )
                    session.add(Agent(id=uuid7(), organization_id=org.id, tree_flow_id=flow_id, **columns))
                    counts["agentsCreated"] += 1
                else:
                    if not columns[
                        "whatsapp_webhook_token"
                    ]:  # a file without the secret keeps the stored one
                        columns["whatsapp_webhook_token"] = (
                            agent.whatsapp_webhook_token or new_webhook_token()
                        )
                    for key, value in columns.items():
                        setattr(agent, key, value)
                    agent.tree_flow_id = flow_id
                    counts["agentsUpdated"] += 1
                session.flush()
        uow.commit()
    return counts
