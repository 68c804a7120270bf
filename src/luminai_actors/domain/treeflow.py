"""TreeFlow (the agent's script) and TalkFlow (a talk's position in it): validation and deterministic steps.

A TreeFlow definition is JSON: `{"name", "objective"?, "steps": [{"id", "question" | "questions", "name"?,
"objective"?, "next"?}], "closing"?}`. Steps run in order unless a step names its `next`. The TalkFlow state
kept on `talk.talk_flow` records the current step, whether its question was asked, the answers with the ids of
the messages they came from, the step history and the outcome. Which step comes next is decided here, by
code; a brain only phrases the reply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from luminai_actors.errors import ValidationError

STATUS_ACTIVE, STATUS_COMPLETED = "active", "completed"


def validate_definition(document: object) -> dict[str, Any]:
    """A clean copy of a TreeFlow document, or ValidationError naming the first bad path."""
    if not isinstance(document, dict):
        raise ValidationError("$", "must be a JSON object")
    name = document.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name", "is required and must be a non-empty string")
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValidationError("steps", "must be a non-empty list")
    seen: set[str] = set()
    clean_steps: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not isinstance(step, dict):
            raise ValidationError(path, "must be an object")
        step_id = step.get("id")
        if not isinstance(step_id, str) or not step_id.strip():
            raise ValidationError(f"{path}.id", "is required and must be a non-empty string")
        if step_id in seen:
            raise ValidationError(f"{path}.id", f"duplicates step id {step_id!r}")
        seen.add(step_id)
        questions = step.get("questions")
        question = step.get("question")
        if question is not None and (not isinstance(question, str) or not question.strip()):
            raise ValidationError(f"{path}.question", "must be a non-empty string")
        if questions is None:
            if not isinstance(question, str) or not question.strip():
                raise ValidationError(f"{path}.question", "is required and must be a non-empty string")
            questions = [question]
        elif (
            not isinstance(questions, list)
            or not questions
            or not all(isinstance(q, str) and q.strip() for q in questions)
        ):
            raise ValidationError(f"{path}.questions", "must be a non-empty list of non-empty strings")
        for key in ("name", "objective", "next"):
            if key in step and step[key] is not None and not isinstance(step[key], str):
                raise ValidationError(f"{path}.{key}", "must be a string")
        clean = dict(step)
        clean["questions"] = list(questions)
        clean.setdefault("question", questions[0])
        clean_steps.append(clean)
    for index, step in enumerate(clean_steps):
        target = step.get("next")
        if target is not None and target not in seen:
            raise ValidationError(f"steps[{index}].next", f"names unknown step {target!r}")
    for key in ("objective", "closing"):
        if key in document and document[key] is not None and not isinstance(document[key], str):
            raise ValidationError(key, "must be a string")
    clean_doc = dict(document)
    clean_doc["name"] = name.strip()
    clean_doc["steps"] = clean_steps
    return clean_doc


def initial_state(tree_flow_id: str | None, definition: dict[str, Any] | None) -> dict[str, Any]:
    """The TalkFlow of a new talk: at the first step, nothing asked, nothing collected."""
    steps = (definition or {}).get("steps") or []
    return {
        "treeFlowId": tree_flow_id,
        "status": STATUS_ACTIVE if steps else STATUS_COMPLETED,
        "currentStepId": steps[0]["id"] if steps else None,
        "askedStepId": None,
        "answers": {},
        "history": [],
        "outcome": None if steps else "no_script",
    }


@dataclass(frozen=True, slots=True)
class NextAction:
    """What the reply must do: ask a step's question, or close the script."""

    kind: str  # "ask" | "close"
    step: dict[str, Any] | None
    question: str | None
    first_contact: bool


def _step(definition: dict[str, Any], step_id: str | None) -> dict[str, Any] | None:
    for step in definition.get("steps") or []:
        if step["id"] == step_id:
            return dict(step)
    return None


def _next_step_id(definition: dict[str, Any], step_id: str) -> str | None:
    steps = definition.get("steps") or []
    for index, step in enumerate(steps):
        if step["id"] == step_id:
            if step.get("next"):
                return str(step["next"])
            return str(steps[index + 1]["id"]) if index + 1 < len(steps) else None
    return None


def advance(
    definition: dict[str, Any] | None,
    state: dict[str, Any] | None,
    inbound: list[tuple[str, str]],
    now_iso: str,
) -> tuple[dict[str, Any], NextAction]:
    """Apply the lead's new messages (id, text) to the TalkFlow and say what the reply must do next.

    When the current step's question was asked, the new messages answer it and the flow moves on; otherwise
    (first contact, or a changed script) the current question is asked.
    """
    definition = definition or {"steps": []}
    new = copy.deepcopy(state) if state else initial_state(None, definition)
    first_contact = not new.get("history") and new.get("askedStepId") is None
    current = new.get("currentStepId")
    if new.get("status") == STATUS_ACTIVE and current and new.get("askedStepId") == current and inbound:
        new["answers"][current] = {
            "value": "\n".join(text for _, text in inbound),
            "messageIds": [message_id for message_id, _ in inbound],
            "at": now_iso,
        }
        new["history"].append({"stepId": current, "completedAt": now_iso})
        following = _next_step_id(definition, current)
        new["currentStepId"] = following
        if following is None:
            new["status"] = STATUS_COMPLETED
            new["outcome"] = str(definition.get("outcome") or "completed")
    if new.get("status") != STATUS_ACTIVE or new.get("currentStepId") is None:
        return new, NextAction("close", None, None, first_contact)
    step = _step(definition, new["currentStepId"])
    if step is None:  # the script changed under a running talk: close rather than guess
        new["status"], new["outcome"] = STATUS_COMPLETED, "script_changed"
        return new, NextAction("close", None, None, first_contact)
    new["askedStepId"] = step["id"]
    questions = step.get("questions") or [step.get("question")]
    return new, NextAction("ask", step, str(questions[0]), first_contact)
