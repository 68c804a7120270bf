"""TreeFlow validation, TalkFlow step logic, field normalisation and opt-out detection (pure domain code)."""

from __future__ import annotations

from typing import Any

import pytest

from luminai_actors.domain.fields import extract_offline, normalize, region_of
from luminai_actors.domain.language import guess
from luminai_actors.domain.optout import is_opt_out
from luminai_actors.domain.talkflow import advance, fields_to_extract, initial_state, volunteer_fields
from luminai_actors.domain.treeflow import normalize_definition, validate_definition
from luminai_actors.errors import ValidationError

NOW = "2025-10-21T14:00:00+00:00"

SALES = validate_definition(
    {
        "name": "Sales qualification",
        "objective": "Qualify inbound leads and book a meeting",
        "steps": [
            {
                "id": "contact",
                "name": "Contact details",
                "questions": ["Who am I talking to?"],
                "fields": [
                    {"name": "name", "type": "text", "description": "full name"},
                    {"name": "email", "type": "email", "question": "What is your email?"},
                ],
                "next": "size",
            },
            {
                "id": "size",
                "question": "How many people work at your company?",
                "fields": [{"name": "company_size", "type": "enum", "values": ["1-10", "11-50", "51+"]}],
                "transitions": [
                    {"when": {"field": "company_size", "equals": "1-10"}, "outcome": "disqualified"}
                ],
            },
            {
                "id": "budget",
                "question": "What monthly budget do you have?",
                "fields": [{"name": "budget", "type": "number"}],
                "transitions": [{"when": {"field": "budget", "lt": 500}, "outcome": "handoff"}],
            },
            {
                "id": "meeting",
                "question": "Shall we book a call?",
                "fields": [{"name": "wants_meeting", "type": "boolean"}],
                "transitions": [
                    {"when": {"field": "wants_meeting", "equals": True}, "outcome": "meeting_requested"}
                ],
                "outcome": "qualified",
            },
        ],
        "outcomes": {"disqualified": {"message": "Thanks, we will keep in touch."}},
    }
)


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], "$"),
        ({"steps": [{"id": "a", "question": "?"}]}, "name"),
        ({"name": "x", "steps": []}, "steps"),
        ({"name": "x", "steps": ["a"]}, "steps[0]"),
        ({"name": "x", "steps": [{"question": "?"}]}, "steps[0].id"),
        ({"name": "x", "steps": [{"id": "a", "question": "?"}, {"id": "a", "question": "?"}]}, "steps[1].id"),
        ({"name": "x", "steps": [{"id": "a"}]}, "steps[0].question"),
        ({"name": "x", "steps": [{"id": "a", "question": 5}]}, "steps[0].question"),
        ({"name": "x", "steps": [{"id": "a", "questions": []}]}, "steps[0].questions"),
        (
            {"name": "x", "steps": [{"id": "a", "fields": [{"name": "f", "type": "colour"}]}]},
            "steps[0].fields[0].type",
        ),
        ({"name": "x", "steps": [{"id": "a", "fields": [{"type": "text"}]}]}, "steps[0].fields[0].name"),
        (
            {"name": "x", "steps": [{"id": "a", "fields": [{"name": "f", "type": "enum"}]}]},
            "steps[0].fields[0].values",
        ),
        (
            {"name": "x", "steps": [{"id": "a", "fields": [{"name": "f", "required": "yes"}]}]},
            "steps[0].fields[0].required",
        ),
        ({"name": "x", "steps": [{"id": "a", "question": "?", "next": "zz"}]}, "steps[0].next"),
        ({"name": "x", "steps": [{"id": "a", "question": "?", "outcome": "party"}]}, "steps[0].outcome"),
        (
            {
                "name": "x",
                "steps": [
                    {
                        "id": "a",
                        "question": "?",
                        "transitions": [{"when": {"field": "nope", "equals": 1}, "then": "a"}],
                    }
                ],
            },
            "steps[0].transitions[0].when.field",
        ),
        (
            {
                "name": "x",
                "steps": [
                    {"id": "a", "question": "?", "transitions": [{"when": {"field": "a", "equals": 1}}]}
                ],
            },
            "steps[0].transitions[0]",
        ),
        (
            {
                "name": "x",
                "steps": [
                    {
                        "id": "a",
                        "question": "?",
                        "transitions": [{"when": {"field": "a", "in": 3}, "then": "a"}],
                    }
                ],
            },
            "steps[0].transitions[0].when.in",
        ),
    ],
)
def test_an_invalid_definition_names_the_bad_path(document: Any, path: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_definition(document)
    assert raised.value.field == path


def test_the_minimal_format_collects_one_free_text_answer_per_step() -> None:
    flow = validate_definition({"name": "Q", "steps": [{"id": "need", "question": "What do you need?"}]})
    [step] = flow["steps"]
    assert step["fields"] == [{"name": "need", "type": "text", "required": True}]
    assert step["question"] == "What do you need?"


def test_normalize_definition_tolerates_an_empty_or_broken_row() -> None:
    assert normalize_definition(None)["steps"] == []
    assert normalize_definition({"name": "x", "steps": [{"id": 1}]})["steps"] == []


# --- step logic -------------------------------------------------------------------------------------------


def test_first_contact_asks_the_first_missing_field_with_the_steps_question() -> None:
    state, action = advance(SALES, initial_state("tf", SALES), {}, [], NOW)
    assert (action.kind, action.field["name"] if action.field else None) == ("ask", "name")
    assert action.question == "Who am I talking to?"
    assert action.first_contact is True
    assert state["askedField"] == "name"
    assert action.missing == ["name", "email"]


def test_the_next_question_is_the_first_required_field_still_empty() -> None:
    state, action = advance(SALES, initial_state("tf", SALES), {"name": "Maria"}, ["m1"], NOW)
    assert action.field is not None
    assert action.field["name"] == "email"
    assert action.question == "What is your email?"
    assert state["collected"]["name"] == {
        "value": "Maria",
        "messageIds": ["m1"],
        "stepId": "contact",
        "at": NOW,
    }


def test_everything_in_one_message_completes_several_steps_at_once() -> None:
    extracted = {"name": "Maria", "email": "MARIA@ACME.COM", "company_size": "51+", "budget": "2k"}
    state, action = advance(SALES, initial_state("tf", SALES), extracted, ["m1"], NOW)
    assert state["currentStepId"] == "meeting"
    assert [h["stepId"] for h in state["history"]] == ["contact", "size", "budget"]
    assert state["collected"]["email"]["value"] == "maria@acme.com"
    assert state["collected"]["budget"]["value"] == 2000
    assert action.question == "Shall we book a call?"


def test_an_invalid_value_is_refused_and_asked_again_then_corrected() -> None:
    state, _ = advance(SALES, initial_state("tf", SALES), {"name": "Maria"}, ["m1"], NOW)
    state, action = advance(SALES, state, {"email": "maria@acme"}, ["m2"], NOW)
    assert "email" not in state["collected"]
    assert state["invalid"]["email"]["value"] == "maria@acme"
    assert action.field is not None
    assert action.field["name"] == "email"
    assert "not a valid email" in action.invalid["email"]
    state, action = advance(SALES, state, {"email": "maria@acme.com"}, ["m3"], NOW)
    assert state["collected"]["email"]["value"] == "maria@acme.com"
    assert state["invalid"] == {}
    assert action.field is not None
    assert action.field["name"] == "company_size"


def test_a_conditional_transition_ends_with_its_outcome_and_message() -> None:
    state, _ = advance(SALES, initial_state("tf", SALES), {"name": "M", "email": "m@a.io"}, ["m1"], NOW)
    state, action = advance(SALES, state, {"company_size": "1-10"}, ["m2"], NOW)
    assert (state["status"], state["outcome"]) == ("completed", "disqualified")
    assert (action.kind, action.closing, action.handoff) == ("close", "Thanks, we will keep in touch.", False)


def test_a_handoff_outcome_asks_for_a_human() -> None:
    start = {"name": "M", "email": "m@a.io", "company_size": "11-50", "budget": 100}
    state, action = advance(SALES, initial_state("tf", SALES), start, ["m1"], NOW)
    assert (state["outcome"], action.handoff) == ("handoff", True)


def test_a_last_step_ends_with_its_own_outcome_or_the_transitions() -> None:
    base = {"name": "M", "email": "m@a.io", "company_size": "51+", "budget": 5000}
    yes, action_yes = advance(
        SALES, initial_state("tf", SALES), {**base, "wants_meeting": "sim, claro"}, ["m"], NOW
    )
    no, action_no = advance(SALES, initial_state("tf", SALES), {**base, "wants_meeting": "no"}, ["m"], NOW)
    assert (yes["outcome"], no["outcome"]) == ("meeting_requested", "qualified")
    assert action_yes.closing
    assert action_no.closing
    assert action_yes.closing != action_no.closing


def test_a_completed_flow_keeps_closing() -> None:
    state, _ = advance(
        SALES,
        initial_state("tf", SALES),
        {"name": "M", "email": "m@a.io", "company_size": "1-10"},
        ["m"],
        NOW,
    )
    again, action = advance(SALES, state, {"name": "Other"}, ["m2"], NOW)
    assert action.kind == "close"
    assert again["collected"]["name"]["value"] == "M"


def test_a_brain_is_asked_for_the_current_steps_fields_and_the_rest_are_taken_only_when_volunteered() -> None:
    state, _ = advance(SALES, initial_state("tf", SALES), {"name": "M"}, ["m1"], NOW)
    assert [f["name"] for f in fields_to_extract(SALES, state)] == ["name", "email"]
    assert [f["name"] for f in volunteer_fields(SALES, state)] == ["company_size", "budget", "wants_meeting"]
    state, _ = advance(SALES, state, {"email": "m@a.io"}, ["m2"], NOW)
    assert [f["name"] for f in fields_to_extract(SALES, state)] == ["company_size"]
    # an earlier step's fields stay correctable by what the lead literally writes
    assert [f["name"] for f in volunteer_fields(SALES, state)] == ["name", "email", "budget", "wants_meeting"]


def test_a_step_the_script_no_longer_has_closes_the_flow() -> None:
    state = {**initial_state("tf", SALES), "currentStepId": "gone"}
    new, action = advance(SALES, state, {}, [], NOW)
    assert (new["outcome"], action.kind) == ("script_changed", "close")


# --- fields -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        ({"type": "email"}, "my email is Maria.S@Acme.com.br thanks", "maria.s@acme.com.br"),
        ({"type": "phone"}, "(11) 98765-4321", "+5511987654321"),
        ({"type": "phone"}, "+1 415 555 2671", "+14155552671"),
        ({"type": "number"}, "about 2.500,50 reais", 2500.5),
        ({"type": "number"}, "10k", 10000),
        ({"type": "number"}, "2 mil", 2000),
        ({"type": "number"}, 42, 42),
        ({"type": "enum", "values": ["Starter", "Pro"]}, "the PRO plan please", "Pro"),
        ({"type": "enum", "values": ["São Paulo", "Rio"]}, "sao paulo", "São Paulo"),
        ({"type": "boolean"}, "Sim, quero!", True),
        ({"type": "boolean"}, "no thanks", False),
        ({"type": "boolean"}, True, True),
        ({"type": "date"}, "2025-11-03", "2025-11-03"),
        ({"type": "date"}, "can we do 03/11/2025?", "2025-11-03"),
        ({"type": "text"}, "  anything  ", "anything"),
    ],
)
def test_values_are_normalized(field: dict[str, Any], raw: Any, value: Any) -> None:
    result = normalize(field, raw, region="BR")
    assert result.ok, result.error
    assert result.value == value


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ({"type": "email"}, "maria@acme"),
        ({"type": "phone"}, "call me"),
        ({"type": "number"}, "a lot"),
        ({"type": "enum", "values": ["Starter", "Pro"]}, "Enterprise"),
        ({"type": "boolean"}, "maybe"),
        ({"type": "date"}, "31/02/2025"),
        ({"type": "date"}, "next week"),
    ],
)
def test_bad_values_say_why(field: dict[str, Any], raw: Any) -> None:
    result = normalize(field, raw, region="BR")
    assert not result.ok
    assert result.error


def test_offline_extraction_finds_patterns_anywhere_and_free_text_only_for_the_asked_field() -> None:
    fields = SALES["steps"][0]["fields"] + SALES["steps"][1]["fields"] + SALES["steps"][2]["fields"]
    text = "Hi, my name is Maria Souza, my email is maria@acme.com and we are 51+ people"
    found = extract_offline(fields, text, asked="name", region="BR")
    assert found == {"name": "Maria Souza", "email": "maria@acme.com", "company_size": text}
    assert extract_offline(fields, "12", asked="budget", region="BR") == {"budget": "12"}
    assert extract_offline(fields, "12", asked="name", region="BR") == {"name": "12"}
    assert "budget" not in extract_offline(fields, "we are 12", asked="name", region="BR")


def test_region_of_a_phone() -> None:
    assert region_of("+5511987654321") == "BR"
    assert region_of(None) is None


# --- opt-out ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["STOP", "pare", "Sair.", "não quero mais receber isso", "Unsubscribe", "please stop messaging me"],
)
def test_opt_out_requests_are_recognised(text: str) -> None:
    assert is_opt_out(text)


@pytest.mark.parametrize(
    "text", ["Can you stop by tomorrow?", "Quero saber o preço", "sair de casa cedo amanhã"]
)
def test_ordinary_messages_are_not_opt_outs(text: str) -> None:
    assert not is_opt_out(text)


def test_the_confirmation_follows_the_leads_language() -> None:
    assert guess(["PARE"]) == "pt"
    assert guess(["stop"]) == "en"


def test_a_validated_definition_validates_again_when_its_steps_only_have_fields() -> None:
    document = {"name": "Q", "steps": [{"id": "s", "fields": [{"name": "email", "type": "email"}]}]}
    once = validate_definition(document)
    assert once["steps"][0]["questions"] == []
    assert validate_definition(once) == once
    assert normalize_definition(once)["steps"]  # not silently emptied at AI-turn time
    _, action = advance(once, initial_state("tf", once), {}, [], NOW)
    assert action.kind == "ask"
    assert action.question == "What is your email?"
