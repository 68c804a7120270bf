"""TreeFlow: the agent's qualification script, its documented JSON format and its validation.

```json
{"name": "Sales qualification", "objective": "Qualify inbound leads and book a meeting",
 "steps": [
   {"id": "contact", "name": "Contact details", "objective": "Know who we talk to",
    "questions": ["Who am I talking to?"],
    "fields": [{"name": "name", "type": "text", "required": true, "description": "full name",
                "question": "What is your name?"},
               {"name": "email", "type": "email", "required": true}],
    "next": "size"},
   {"id": "size", "question": "How many people work at your company?",
    "fields": [{"name": "company_size", "type": "enum", "values": ["1-10", "11-50", "51+"]}],
    "transitions": [{"when": {"field": "company_size", "equals": "1-10"}, "outcome": "disqualified"}],
    "next": "meeting"},
   {"id": "meeting", "question": "Shall we book a call?",
    "fields": [{"name": "wants_meeting", "type": "boolean"}],
    "transitions": [{"when": {"field": "wants_meeting", "equals": true}, "outcome": "meeting_requested"}],
    "outcome": "qualified"}],
 "outcomes": {"disqualified": {"message": "Thanks! We will keep in touch."},
              "handoff": {"handoff": true, "message": "A colleague will take it from here."}}}
```

`language` (optional: `en`, `pt`, `es`) is the language of what the service writes itself around the script
(greeting, refusals, default questions and closings); without it, the lead's own words decide
(`domain.language`).

Field types: text, email, phone, number, enum (with `values`), boolean, date; `required` defaults to true. A
step without fields collects one free-text answer under the step's id (the minimal format
`{"id", "question"}`). A step is complete when every required field is filled; then its `transitions` are
tried in order (conditions `equals`, `notEquals`, `in`, `gt`, `gte`, `lt`, `lte`, `exists` on a collected
field) and lead to a step (`then`) or an outcome (`outcome`); otherwise `next`, else the step's `outcome`,
else the following step, else outcome `completed`. Outcomes `qualified`, `disqualified`,
`meeting_requested`, `handoff` (pauses the bot for a human) or any name declared in `outcomes`.
"""

from __future__ import annotations

from typing import Any

from luminai_actors.domain.fields import FIELD_TYPES, language_code
from luminai_actors.errors import ValidationError

KNOWN_OUTCOMES = ("qualified", "disqualified", "meeting_requested", "handoff", "completed")
CONDITION_OPERATORS = ("equals", "notEquals", "in", "gt", "gte", "lt", "lte", "exists")


def _text(value: Any, path: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise ValidationError(path, "is required and must be a non-empty string")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(path, "must be a non-empty string")
    return value.strip()


def _field(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError(path, "must be an object")
    name = _text(raw.get("name"), f"{path}.name", required=True)
    kind = raw.get("type", "text")
    if kind not in FIELD_TYPES:
        raise ValidationError(f"{path}.type", f"must be one of {', '.join(FIELD_TYPES)}")
    field: dict[str, Any] = {**raw, "name": name, "type": kind, "required": raw.get("required", True)}
    if not isinstance(field["required"], bool):
        raise ValidationError(f"{path}.required", "must be true or false")
    for key in ("description", "question"):
        _text(raw.get(key), f"{path}.{key}", required=False)
    if kind == "enum":
        values = raw.get("values")
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v.strip() for v in values)
        ):
            raise ValidationError(f"{path}.values", "an enum needs a non-empty list of strings")
    return field


def _condition(raw: Any, path: str, field_names: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError(path, 'must be an object like {"field": "budget", "gte": 1000}')
    if raw.get("field") not in field_names:
        raise ValidationError(f"{path}.field", "must name a field of the script")
    operators = [op for op in CONDITION_OPERATORS if op in raw]
    if len(operators) != 1:
        raise ValidationError(path, f"needs exactly one of {', '.join(CONDITION_OPERATORS)}")
    if operators[0] == "in" and not isinstance(raw["in"], list):
        raise ValidationError(f"{path}.in", "must be a list")
    return dict(raw)


def validate_definition(document: object) -> dict[str, Any]:
    """A clean copy of a TreeFlow document, or ValidationError naming the first bad path."""
    if not isinstance(document, dict):
        raise ValidationError("$", "must be a JSON object")
    name = _text(document.get("name"), "name", required=True)
    for key in ("objective", "closing"):
        _text(document.get(key), key, required=False)
    language = document.get("language")
    if language is not None and language_code(language) is None:
        raise ValidationError("language", 'must be "en", "pt" or "es" (a tag like "pt-BR" is read as "pt")')
    outcomes = document.get("outcomes") or {}
    if not isinstance(outcomes, dict) or not all(isinstance(v, dict) for v in outcomes.values()):
        raise ValidationError("outcomes", 'must map outcome names to objects like {"message": "..."}')
    outcome_names = set(KNOWN_OUTCOMES) | set(outcomes)
    steps = document.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValidationError("steps", "must be a non-empty list")
    clean_steps: list[dict[str, Any]] = []
    step_ids: set[str] = set()
    field_names: set[str] = set()
    for index, step in enumerate(steps):
        path = f"steps[{index}]"
        if not isinstance(step, dict):
            raise ValidationError(path, "must be an object")
        step_id = _text(step.get("id"), f"{path}.id", required=True)
        assert step_id is not None
        if step_id in step_ids:
            raise ValidationError(f"{path}.id", f"duplicates step id {step_id!r}")
        step_ids.add(step_id)
        for key in ("name", "objective", "next", "outcome"):
            if step.get(key) is not None and not isinstance(step[key], str):
                raise ValidationError(f"{path}.{key}", "must be a string")
        question = _text(step.get("question"), f"{path}.question", required=False)
        questions = step.get("questions")
        # An empty list is what validation itself stores for a step whose fields carry the questions, so a
        # validated definition validates again (it is re-checked when an AI turn loads it).
        if questions is not None and (
            not isinstance(questions, list)
            or (not questions and not step.get("fields"))
            or not all(isinstance(q, str) and q.strip() for q in questions)
        ):
            raise ValidationError(f"{path}.questions", "must be a non-empty list of non-empty strings")
        raw_fields = step.get("fields")
        if raw_fields is not None and (not isinstance(raw_fields, list) or not raw_fields):
            raise ValidationError(f"{path}.fields", "must be a non-empty list of fields")
        fields = [_field(f, f"{path}.fields[{i}]") for i, f in enumerate(raw_fields or [])]
        if not fields:
            if not (question or questions):
                raise ValidationError(f"{path}.question", "is required when a step has no fields")
            fields = [{"name": step_id, "type": "text", "required": True}]
        for i, field in enumerate(fields):
            if field["name"] in field_names:
                raise ValidationError(f"{path}.fields[{i}].name", f"duplicates field {field['name']!r}")
            field_names.add(field["name"])
        questions = list(questions or ([question] if question else []))
        clean_steps.append(
            {
                **step,
                "id": step_id,
                "fields": fields,
                "questions": questions,
                "question": question or (questions[0] if questions else None),
            }
        )
    for index, step in enumerate(clean_steps):
        path = f"steps[{index}]"
        if step.get("next") is not None and step["next"] not in step_ids:
            raise ValidationError(f"{path}.next", f"names unknown step {step['next']!r}")
        if step.get("outcome") is not None and step["outcome"] not in outcome_names:
            raise ValidationError(
                f"{path}.outcome", f"unknown outcome {step['outcome']!r}; declare it in outcomes"
            )
        transitions = step.get("transitions") or []
        if not isinstance(transitions, list):
            raise ValidationError(f"{path}.transitions", "must be a list")
        clean_transitions = []
        for t_index, transition in enumerate(transitions):
            t_path = f"{path}.transitions[{t_index}]"
            if not isinstance(transition, dict):
                raise ValidationError(t_path, "must be an object")
            when = _condition(transition.get("when"), f"{t_path}.when", field_names)
            target, outcome = transition.get("then"), transition.get("outcome")
            if (target is None) == (outcome is None):
                raise ValidationError(t_path, "needs exactly one of then (a step id) or outcome")
            if target is not None and target not in step_ids:
                raise ValidationError(f"{t_path}.then", f"names unknown step {target!r}")
            if outcome is not None and outcome not in outcome_names:
                raise ValidationError(
                    f"{t_path}.outcome", f"unknown outcome {outcome!r}; declare it in outcomes"
                )
            clean_transitions.append({**transition, "when": when})
        step["transitions"] = clean_transitions
    return {**document, "name": name, "steps": clean_steps, "outcomes": outcomes}


def normalize_definition(definition: dict[str, Any] | None) -> dict[str, Any]:
    """A stored definition in the validated shape (rows written before validation existed included)."""
    if not definition or not definition.get("steps"):
        return {"name": (definition or {}).get("name") or "conversation", "steps": [], "outcomes": {}}
    try:
        return validate_definition(definition)
    except ValidationError:
        return {"name": definition.get("name") or "conversation", "steps": [], "outcomes": {}}


def step_by_id(definition: dict[str, Any], step_id: str | None) -> dict[str, Any] | None:
    return next((step for step in definition.get("steps") or [] if step["id"] == step_id), None)


def all_fields(definition: dict[str, Any]) -> list[dict[str, Any]]:
    return [field for step in definition.get("steps") or [] for field in step["fields"]]
