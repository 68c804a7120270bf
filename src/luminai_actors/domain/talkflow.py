"""TalkFlow: one talk's position in its TreeFlow, advanced by code from the values extracted from the lead.

State (kept on `talk.talk_flow`, shown by the admin API): `currentStepId`, `askedField` (what the last reply
asked for), `collected` (field → value, the messages it came from, the step, when), `invalid` (field → what
the lead said and why it was refused), `history` (completed steps), `status` and `outcome`. The next
question is the first required field of the current step that is invalid or still empty (Rasa's forms); a
step is complete when none is; transitions decide what follows. The brain never decides any of this.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from luminai_actors.domain.fields import Language, normalize
from luminai_actors.domain.language import ASK_FIELD
from luminai_actors.domain.language import closing as default_closing
from luminai_actors.domain.treeflow import all_fields, step_by_id

STATUS_ACTIVE, STATUS_COMPLETED = "active", "completed"


def initial_state(tree_flow_id: str | None, definition: dict[str, Any]) -> dict[str, Any]:
    steps = definition.get("steps") or []
    return {
        "treeFlowId": tree_flow_id,
        # The version the talk started with, which it keeps following when the flow is edited.
        "treeFlowVersion": definition.get("version", 1) if tree_flow_id else None,
        "status": STATUS_ACTIVE if steps else STATUS_COMPLETED,
        "currentStepId": steps[0]["id"] if steps else None,
        "askedField": None,
        "collected": {},
        "invalid": {},
        "history": [],
        "outcome": None if steps else "completed",
    }


def pinned_version(state: dict[str, Any] | None) -> tuple[str, int] | None:
    """(tree flow id, version) a talk follows, or None when it follows no flow. Talks that began before
    flows had versions follow version 1, the definition they began with."""
    if not state or not state.get("treeFlowId"):
        return None
    version = state.get("treeFlowVersion")
    return str(state["treeFlowId"]), version if isinstance(version, int) and version > 0 else 1


@dataclass(frozen=True, slots=True)
class NextAction:
    kind: str  # "ask" | "close"
    step: dict[str, Any] | None = None
    field: dict[str, Any] | None = None
    question: str | None = None
    missing: list[str] = dataclass_field(default_factory=list)
    invalid: dict[str, str] = dataclass_field(default_factory=dict)
    first_contact: bool = False
    outcome: str | None = None
    closing: str | None = None
    handoff: bool = False


def fields_to_extract(definition: dict[str, Any], state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What a brain is asked for: the current step's fields, collected ones too (a later answer corrects an
    earlier one). Asking for the whole script invites a small model to fill in what the lead never said."""
    current = step_by_id(definition, (state or {}).get("currentStepId"))
    return list(current["fields"]) if current else []


def volunteer_fields(definition: dict[str, Any], state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The script's other fields: taken only when their value is literally in the lead's words
    (`fields.extract_offline` with nothing asked), so a lead who answers ahead, or corrects an earlier
    step's e-mail, is not asked again."""
    current = {f["name"] for f in fields_to_extract(definition, state)}
    return [f for f in all_fields(definition) if f["name"] not in current]


def _holds(condition: dict[str, Any], collected: dict[str, Any]) -> bool:
    entry = collected.get(condition["field"])
    if "exists" in condition:
        return (entry is not None) == bool(condition["exists"])
    if entry is None:
        return False
    value = entry["value"]
    if "equals" in condition:
        return bool(value == condition["equals"])
    if "notEquals" in condition:
        return bool(value != condition["notEquals"])
    if "in" in condition:
        return value in condition["in"]
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    for op, test in (
        ("gt", value.__gt__),
        ("gte", value.__ge__),
        ("lt", value.__lt__),
        ("lte", value.__le__),
    ):
        if op in condition:
            return bool(test(condition[op]))
    return False


def _following(
    definition: dict[str, Any], step: dict[str, Any], collected: dict[str, Any]
) -> tuple[str, str]:
    """Where a complete step leads: ("step", id) or ("outcome", name)."""
    for transition in step.get("transitions") or []:
        if _holds(transition["when"], collected):
            if transition.get("then"):
                return "step", str(transition["then"])
            return "outcome", str(transition["outcome"])
    if step.get("next"):
        return "step", str(step["next"])
    if step.get("outcome"):
        return "outcome", str(step["outcome"])
    steps = definition["steps"]
    index = next(i for i, s in enumerate(steps) if s["id"] == step["id"])
    return ("step", steps[index + 1]["id"]) if index + 1 < len(steps) else ("outcome", "completed")


def _question_for(step: dict[str, Any], field: dict[str, Any], language: Language) -> str:
    if field.get("question"):
        return str(field["question"])
    questions = step.get("questions") or []
    index = next(i for i, f in enumerate(step["fields"]) if f["name"] == field["name"])
    if index < len(questions):
        return str(questions[index])
    if questions and index == 0:
        return str(questions[0])
    label = field.get("description") or field["name"].replace("_", " ")
    return ASK_FIELD[language].format(label=label)


def _close(
    definition: dict[str, Any], state: dict[str, Any], first_contact: bool, language: Language
) -> NextAction:
    outcome = state.get("outcome") or "completed"
    spec = (definition.get("outcomes") or {}).get(outcome) or {}
    closing = spec.get("message") or definition.get("closing") or default_closing(outcome, language)
    handoff = outcome == "handoff" or bool(spec.get("handoff"))
    return NextAction("close", first_contact=first_contact, outcome=outcome, closing=closing, handoff=handoff)


def advance(
    definition: dict[str, Any],
    state: dict[str, Any] | None,
    extracted: dict[str, Any],
    message_ids: list[str],
    now_iso: str,
    *,
    region: str | None = None,
    language: Language = "en",
) -> tuple[dict[str, Any], NextAction]:
    """Record the extracted values, move through complete steps, and say what the reply must do; what the
    service writes itself (refusals, default questions and closings) is in the lead's `language`."""
    new = copy.deepcopy(state) if state else initial_state(None, definition)
    for key, default in (("collected", {}), ("invalid", {}), ("history", []), ("askedField", None)):
        new.setdefault(key, copy.deepcopy(default))
    first_contact = not new["history"] and new["askedField"] is None and not new["collected"]
    if new.get("status") != STATUS_ACTIVE:
        return new, _close(definition, new, first_contact, language)
    owners = {f["name"]: (s["id"], f) for s in definition["steps"] for f in s["fields"]}
    for name, raw in extracted.items():
        if name not in owners:
            continue
        step_id, spec = owners[name]
        result = normalize(spec, raw, region=region, language=language)
        if result.ok:
            new["collected"][name] = {
                "value": result.value,
                "messageIds": message_ids,
                "stepId": step_id,
                "at": now_iso,
            }
            new["invalid"].pop(name, None)
        elif result.error:
            new["invalid"][name] = {"value": str(raw)[:200], "error": result.error}
    for _ in range(len(definition["steps"]) + 1):  # each step is left at most once per turn
        step = step_by_id(definition, new["currentStepId"])
        if step is None:
            new["status"], new["outcome"] = STATUS_COMPLETED, "script_changed"
            break
        if any(f["required"] and f["name"] not in new["collected"] for f in step["fields"]):
            break
        kind, target = _following(definition, step, new["collected"])
        new["history"].append({"stepId": step["id"], "completedAt": now_iso})
        if kind == "outcome":
            new["status"], new["outcome"], new["currentStepId"] = STATUS_COMPLETED, target, None
            break
        new["currentStepId"] = target
    if new["status"] != STATUS_ACTIVE:
        new["askedField"] = None
        return new, _close(definition, new, first_contact, language)
    step = step_by_id(definition, new["currentStepId"])
    assert step is not None
    missing = [f["name"] for f in step["fields"] if f["required"] and f["name"] not in new["collected"]]
    invalid = {name: new["invalid"][name]["error"] for name in missing if name in new["invalid"]}
    asked = next(f for f in step["fields"] if f["name"] == missing[0])
    new["askedField"] = asked["name"]
    return new, NextAction(
        "ask",
        step=step,
        field=asked,
        question=_question_for(step, asked, language),
        missing=missing,
        invalid=invalid,
        first_contact=first_contact,
    )
