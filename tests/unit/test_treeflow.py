"""TreeFlow definitions are validated path by path; TalkFlow advances one step per answered turn."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from luminai_actors.domain.treeflow import advance, initial_state, validate_definition
from luminai_actors.errors import ValidationError

NOW = "2025-10-21T11:40:00+00:00"
LATER = "2025-10-21T11:45:00+00:00"

RAW: dict[str, Any] = {
    "name": "  Qualify  ",
    "objective": "Qualify the lead",
    "steps": [
        {"id": "name", "name": "Name", "question": "What is your name?"},
        {"id": "budget", "questions": ["What is your budget?", "Roughly?"]},
        {"id": "timing", "question": "When do you want to start?"},
    ],
    "closing": "Thanks, we will call you.",
}


@pytest.fixture
def definition() -> dict[str, Any]:
    return validate_definition(copy.deepcopy(RAW))


def test_validate_returns_a_clean_copy(definition: dict[str, Any]) -> None:
    assert definition["name"] == "Qualify"
    assert [s["questions"] for s in definition["steps"]] == [
        ["What is your name?"],
        ["What is your budget?", "Roughly?"],
        ["When do you want to start?"],
    ]
    assert definition["steps"][1]["question"] == "What is your budget?"
    assert RAW["name"] == "  Qualify  "  # the input is not modified


def _with(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(RAW)
    document.update(changes)
    return document


def _with_step(index: int, **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(RAW)
    document["steps"][index].update(changes)
    for key, value in changes.items():
        if value is ...:
            del document["steps"][index][key]
    return document


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "$"),
        (_with(name=None), "name"),
        (_with(name="   "), "name"),
        (_with(name=7), "name"),
        (_with(steps=[]), "steps"),
        (_with(steps="step"), "steps"),
        (_with(steps=["step"]), "steps[0]"),
        (_with_step(1, id=...), "steps[1].id"),
        (_with_step(1, id=""), "steps[1].id"),
        (_with_step(2, id="name"), "steps[2].id"),
        (_with_step(0, question=...), "steps[0].question"),
        (_with_step(0, question="  "), "steps[0].question"),
        (_with_step(1, questions=[]), "steps[1].questions"),
        (_with_step(1, questions=["ok", ""]), "steps[1].questions"),
        (_with_step(1, questions="What?"), "steps[1].questions"),
        (_with_step(0, next="nowhere"), "steps[0].next"),
        (_with_step(0, next=3), "steps[0].next"),
        (_with_step(0, name=3), "steps[0].name"),
        (_with(closing=["bye"]), "closing"),
    ],
)
def test_validate_names_the_first_bad_path(document: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_definition(document)
    assert caught.value.field == field


def test_duplicate_step_id_names_the_duplicate() -> None:
    with pytest.raises(ValidationError, match="duplicates step id 'name'"):
        validate_definition(_with_step(2, id="name"))


def test_next_may_name_a_later_step() -> None:
    assert validate_definition(_with_step(0, next="timing"))["steps"][0]["next"] == "timing"


def test_initial_state_is_at_the_first_step_with_nothing_asked(definition: dict[str, Any]) -> None:
    assert initial_state("tf-1", definition) == {
        "treeFlowId": "tf-1",
        "status": "active",
        "currentStepId": "name",
        "askedStepId": None,
        "answers": {},
        "history": [],
        "outcome": None,
    }


def test_first_contact_asks_step_one(definition: dict[str, Any]) -> None:
    state, action = advance(definition, initial_state("tf-1", definition), [("m1", "Oi")], NOW)

    assert (action.kind, action.step and action.step["id"], action.question) == (
        "ask",
        "name",
        "What is your name?",
    )
    assert action.first_contact is True
    assert state["askedStepId"] == "name"
    assert state["answers"] == {}  # a greeting does not answer a question nobody asked


def test_an_answer_moves_to_the_next_step(definition: dict[str, Any]) -> None:
    asked, _ = advance(definition, initial_state("tf-1", definition), [("m1", "Oi")], NOW)
    state, action = advance(definition, asked, [("m2", "Maria")], LATER)

    assert state["answers"] == {"name": {"value": "Maria", "messageIds": ["m2"], "at": LATER}}
    assert state["history"] == [{"stepId": "name", "completedAt": LATER}]
    assert (state["currentStepId"], state["askedStepId"]) == ("budget", "budget")
    assert (action.kind, action.question, action.first_contact) == ("ask", "What is your budget?", False)
    assert asked["answers"] == {}  # advance works on a copy


def test_several_messages_in_one_turn_are_one_answer(definition: dict[str, Any]) -> None:
    asked, _ = advance(definition, initial_state("tf-1", definition), [("m1", "Oi")], NOW)
    state, _ = advance(definition, asked, [("m2", "Maria"), ("m3", "da Silva"), ("m4", "Souza")], LATER)

    assert state["answers"]["name"]["value"] == "Maria\nda Silva\nSouza"
    assert state["answers"]["name"]["messageIds"] == ["m2", "m3", "m4"]
    assert len(state["history"]) == 1
    assert state["currentStepId"] == "budget"


def test_next_jumps_over_steps() -> None:
    definition = validate_definition(_with_step(0, next="timing"))
    asked, _ = advance(definition, initial_state(None, definition), [("m1", "Oi")], NOW)
    state, action = advance(definition, asked, [("m2", "Maria")], LATER)

    assert state["currentStepId"] == "timing"
    assert action.question == "When do you want to start?"


def test_last_answer_completes_the_flow_with_an_outcome(definition: dict[str, Any]) -> None:
    state, _ = advance(definition, initial_state("tf-1", definition), [("m1", "Oi")], NOW)
    for index, answer in enumerate(["Maria", "10k", "next month"]):
        state, action = advance(definition, state, [(f"a{index}", answer)], LATER)

    assert (state["status"], state["outcome"], state["currentStepId"]) == ("completed", "completed", None)
    assert list(state["answers"]) == ["name", "budget", "timing"]
    assert (action.kind, action.step, action.question) == ("close", None, None)


def test_definition_outcome_names_the_completion() -> None:
    definition = validate_definition(_with(steps=[{"id": "only", "question": "Ok?"}], outcome="qualified"))
    asked, _ = advance(definition, None, [("m1", "Oi")], NOW)
    state, action = advance(definition, asked, [("m2", "yes")], LATER)
    assert (state["outcome"], action.kind) == ("qualified", "close")


def test_a_completed_flow_keeps_closing(definition: dict[str, Any]) -> None:
    state, _ = advance(definition, initial_state("tf-1", definition), [("m1", "Oi")], NOW)
    for answer in ("Maria", "10k", "soon"):
        state, _ = advance(definition, state, [("x", answer)], LATER)
    again, action = advance(definition, state, [("late", "one more thing")], LATER)

    assert action.kind == "close"
    assert again["answers"] == state["answers"]


@pytest.mark.parametrize("definition", [None, {"name": "empty", "steps": []}])
def test_no_steps_closes_at_once(definition: dict[str, Any] | None) -> None:
    state = initial_state(None, definition)
    assert (state["status"], state["outcome"], state["currentStepId"]) == ("completed", "no_script", None)

    new, action = advance(definition, state, [("m1", "Oi")], NOW)
    assert (action.kind, action.question, action.first_contact) == ("close", None, True)
    assert new["outcome"] == "no_script"


def test_a_step_removed_from_the_script_closes_rather_than_guesses(definition: dict[str, Any]) -> None:
    state = dict(initial_state("tf-1", definition), currentStepId="gone")
    new, action = advance(definition, state, [("m1", "Oi")], NOW)
    assert (new["status"], new["outcome"], action.kind) == ("completed", "script_changed", "close")


def test_a_non_string_question_beside_questions_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_definition(_with_step(1, question=5))
    assert caught.value.field == "steps[1].question"


def test_advance_accepts_a_step_with_only_question() -> None:
    # The documented format allows `question` alone; rows not written through validate_definition have it.
    raw = {"name": "Raw", "steps": [{"id": "name", "question": "What is your name?"}]}

    _, action = advance(raw, None, [("m1", "Oi")], NOW)

    assert action.question == "What is your name?"
