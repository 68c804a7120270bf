"""The OpenAI brain against the servers people run (issue 20's first part): servers that refuse or ignore
`json_schema`, answers that are not chat completions, and a model that says optOut on a greeting.

`FakeOpenAI(structured_output="json_object")` answers a json_schema request the way llama-cpp-python
0.3's server does (HTTP 500, "Input should be 'text' or 'json_object'")."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from luminai_actors.ai.brain import ExtractionRequest, HistoryLine, TurnContext
from luminai_actors.ai.openai_brain import OpenAIBrain
from luminai_actors.errors import BrainError
from luminai_actors.testing import FakeOpenAI, LuminaiHarness

FIELDS = [{"name": "budget", "type": "number"}, {"name": "email", "type": "email"}]


def request(*messages: str) -> ExtractionRequest:
    return ExtractionRequest(fields=FIELDS, messages=list(messages), asked_field="budget", region="BR")


def context() -> TurnContext:
    return TurnContext(
        agent_name="SDR",
        agent_prompt="",
        flow_name="Q",
        flow_objective=None,
        action="ask",
        step_id="budget",
        step_name=None,
        step_objective=None,
        question="Qual é o seu orçamento?",
        answers={},
        history=[HistoryLine("lead", "Oi")],
        new_messages=["Oi"],
        lead_first_name=None,
        first_contact=True,
    )


def brain_for(fake: FakeOpenAI) -> Iterator[OpenAIBrain]:
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.url + "/v1", max_retries=0)
    try:
        yield OpenAIBrain(client, "local-model")
    finally:
        client.close()


def formats(fake: FakeOpenAI) -> list[str | None]:
    return [(body.get("response_format") or {}).get("type") for body in fake.chat_requests()]


@pytest.mark.parametrize("status", [500, 400])
def test_a_server_that_refuses_json_schema_gets_json_object_at_once_and_it_is_remembered(status: int) -> None:
    with FakeOpenAI(structured_output="json_object", reject_status=status) as fake:
        for brain in brain_for(fake):
            fake.script('{"budget": 5000, "email": null, "optOut": false}')
            first = brain.extract(request("uns 5 mil"))
            fake.script('{"budget": null, "email": "ana@acme.com.br", "optOut": false}')
            second = brain.extract(request("ana@acme.com.br"))
            mode = brain.structured_mode

    assert first.values == {"budget": 5000}
    assert second.values == {"email": "ana@acme.com.br"}
    assert formats(fake) == ["json_schema", "json_object", "json_object"]  # one refused call, then remembered
    assert mode == "json_object"
    # llama.cpp's extension: the schema rides along, so its server constrains the answer with a grammar
    assert fake.chat_requests()[-1]["response_format"]["schema"]["properties"]["budget"]


def test_one_broken_json_answer_moves_on_that_request_only_and_the_mode_is_kept() -> None:
    with FakeOpenAI(structured_output="json_object") as fake:
        for brain in brain_for(fake):
            # a small model's answer cut by max_tokens, then the same request as a forced tool call
            fake.script('{"budget": 5000, "email": "ana@', {"budget": 5000, "email": None, "optOut": False})
            first = brain.extract(request("uns 5 mil"))
            fake.script('{"budget": null, "email": "ana@acme.com.br", "optOut": false}')
            second = brain.extract(request("ana@acme.com.br"))
            kept = brain.structured_mode
            for _ in range(3):  # every answer broken in this mode: given up after NO_JSON_STRIKES in a row
                fake.script('{"budget": 1', {"budget": None, "email": None, "optOut": False})
                brain.extract(request("hmm"))
            given_up = brain.structured_mode
    assert (first.values, second.values) == ({"budget": 5000}, {"email": "ana@acme.com.br"})
    assert formats(fake)[:4] == ["json_schema", "json_object", None, "json_object"]
    assert kept == "json_object"
    assert given_up == "tools"


def test_a_server_without_response_format_gets_a_forced_tool_call() -> None:
    with FakeOpenAI(structured_output="tools") as fake:
        for brain in brain_for(fake):
            fake.script({"budget": 5000, "email": None, "optOut": False})
            first = brain.extract(request("uns 5 mil"))
            fake.script({"budget": None, "email": "ana@acme.com.br", "optOut": False})
            second = brain.extract(request("ana@acme.com.br"))
            mode = brain.structured_mode
    last = fake.chat_requests()[-1]
    assert (first.values, second.values) == ({"budget": 5000}, {"email": "ana@acme.com.br"})
    assert formats(fake) == ["json_schema", "json_object", None, None]
    assert mode == "tools"
    assert last["tool_choice"] == {"type": "function", "function": {"name": "record_lead_fields"}}


def test_a_server_that_ignores_response_format_is_asked_in_the_prompt_and_prose_around_json_is_read() -> None:
    with FakeOpenAI(structured_output="ignored") as fake:
        for brain in brain_for(fake):
            fake.script(
                "Claro! O orçamento é 5000.",
                "Não sei.",
                "Hmm.",
                'Aqui está: {"budget": 5000, "optOut": false}',
            )
            extraction = brain.extract(request("uns 5 mil"))
            mode = brain.structured_mode
    assert extraction.values == {"budget": 5000}
    assert mode == "prompt"
    assert "JSON schema" in fake.chat_requests()[-1]["messages"][0]["content"]


def test_when_no_mode_gives_json_the_offline_extractor_fills_in_and_the_turn_goes_on() -> None:
    with FakeOpenAI(structured_output="ignored") as fake:
        for brain in brain_for(fake):
            fake.script("hmm", "hmm", "hmm", "hmm")
            asked_nothing = ExtractionRequest(FIELDS, ["meu email é ana@acme.com.br"], None, "BR")
            extraction = brain.extract(asked_nothing)
    assert extraction.values == {"email": "ana@acme.com.br"}
    assert extraction.model.startswith("offline")


def test_every_call_bounds_its_tokens_and_temperature() -> None:
    with FakeOpenAI() as fake:
        for brain in brain_for(fake):
            brain.extract(request("uns 5 mil"))
            brain.compose(context())
    for body in fake.chat_requests():
        assert 0 < body["max_tokens"] <= 400
        assert 0 <= body["temperature"] <= 0.3


def test_an_answer_that_is_not_a_chat_completion_is_a_brain_error_not_a_crash() -> None:
    with FakeOpenAI() as fake:
        for brain in brain_for(fake):
            fake.garbage_next(1)
            with pytest.raises(BrainError, match="not a chat completion"):
                brain.compose(context())


def test_a_model_saying_opt_out_on_a_greeting_does_not_end_the_conversation() -> None:
    with LuminaiHarness(openai=True, ai_one_call=False) as luminai:
        assert luminai.openai is not None
        luminai.openai.script('{"need": null, "optOut": true}', "Olá! Como posso ajudar?")
        org = luminai.admin.create_organization("Acme")
        step = {"id": "need", "fields": [{"name": "need", "question": "O que busca?"}]}
        flow = {"name": "Q", "steps": [step]}
        luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, flow))
        luminai.say("acme", "Oi, boa tarde! Vi o anúncio")
        luminai.drain()
        [contact] = luminai.admin.contacts(org)
        [talk] = luminai.talks(org)
        [reply] = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
        replies = luminai.replies("acme")

    assert contact["optedOutAt"] is None
    assert replies == ["Olá! Como posso ajudar?"]
    assert reply["metadata"]["ai"]["modelSaidOptOut"] is True


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("Oi, boa tarde! Vi o anúncio", False),
        ("Quero saber o preço", False),
        ("Por favor, parem de me escrever", True),
        ("não quero mais isso", True),
        ("please don't text me again", True),
    ],
)
def test_a_models_opt_out_needs_words_that_sound_like_one(text: str, cue: bool) -> None:
    from luminai_actors.domain.optout import has_stop_cue

    assert has_stop_cue(text) is cue


def test_the_closing_goes_out_verbatim_and_a_lead_writing_after_it_is_handed_to_a_person() -> None:
    flow = {
        "name": "Q",
        "steps": [
            {"id": "budget", "fields": [{"name": "budget", "type": "number", "question": "Orçamento?"}]}
        ],
        "closing": "Obrigado! Nosso time fala com você amanhã.",
    }
    with LuminaiHarness(openai=True, ai_one_call=False) as luminai:
        assert luminai.openai is not None
        org = luminai.admin.create_organization("Acme")
        agent = luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, flow))
        assert agent
        luminai.openai.script('{"budget": null, "optOut": false}', "Qual é o seu orçamento?")
        luminai.say("acme", "Oi", message_id="3EB0C1")
        luminai.drain()
        luminai.openai.script(
            '{"budget": 5000, "optOut": false}', "A reworded closing the model must not send"
        )
        luminai.say("acme", "5000", message_id="3EB0C2")
        luminai.drain()
        calls_before = len(luminai.openai.chat_requests())
        luminai.say("acme", "mais uma coisa", message_id="3EB0C3")
        luminai.drain()
        luminai.say("acme", "alô?", message_id="3EB0C4")
        luminai.drain()
        calls_after = len(luminai.openai.chat_requests())
        [talk] = luminai.talks(org)
        replies = luminai.replies("acme")

    assert replies == [
        "Qual é o seu orçamento?",
        "Obrigado! Nosso time fala com você amanhã.",
        "Vou passar você para um colega que continua daqui.",  # once: the person has the talk now
    ]
    assert calls_after == calls_before  # no LLM call once the script ended
    assert (talk["paused"], talk["needsHuman"]) == (True, True)


@pytest.mark.parametrize(
    ("text", "unsafe"),
    [
        ("Olá! Qual é o seu orçamento?", None),
        ("Hi [Your Name], what is your budget?", "template placeholder '[Your Name]'"),
        ("Olá {{nome}}!", "template placeholder '{{nome}}'"),
        ('{"reply": "Oi"}', "JSON or code instead of a message"),
        ("According to the script, I must ask your budget.", "speaks of 'script'"),
        ("x" * 1001, "longer than 1000 characters"),
    ],
)
def test_replies_unfit_for_a_lead_are_named(text: str, unsafe: str | None) -> None:
    from luminai_actors.services.reply_parts import unsafe_reply

    assert unsafe_reply(text) == unsafe


def test_an_unfit_model_reply_is_replaced_by_the_steps_question_as_written() -> None:
    flow = {
        "name": "Q",
        "steps": [{"id": "b", "fields": [{"name": "budget", "type": "number", "question": "Quanto?"}]}],
    }
    with LuminaiHarness(openai=True, ai_one_call=False) as luminai:
        assert luminai.openai is not None
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, flow))
        luminai.openai.script(
            '{"budget": null, "optOut": false}',
            "Hi [Your Name]! As per the script: budget?",
            '{"reply": "Quanto?"}',  # the corrected retry is unfit too
        )
        luminai.say("acme", "Oi")
        luminai.drain()
        [talk] = luminai.talks(org)
        [reply] = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]

    assert reply["body"] == "Hi Lead! I'm SDR. Quanto?"
    assert reply["metadata"]["ai"]["model"].startswith("script (model reply template placeholder")


def test_an_unfit_model_reply_is_asked_for_once_more_with_the_reason() -> None:
    flow = {
        "name": "Q",
        "steps": [{"id": "b", "fields": [{"name": "budget", "type": "number", "question": "Quanto?"}]}],
    }
    with LuminaiHarness(openai=True, ai_one_call=False) as luminai:
        assert luminai.openai is not None
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, flow))
        luminai.openai.script(
            '{"budget": null, "optOut": false}', "Olá [Nome]! Quanto?", "Olá! Qual é o seu orçamento?"
        )
        luminai.say("acme", "Oi")
        luminai.drain()
        [talk] = luminai.talks(org)
        [reply] = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
        retry = luminai.openai.chat_requests()[-1]

    assert reply["body"] == "Olá! Qual é o seu orçamento?"
    assert reply["metadata"]["ai"]["replyCorrected"] == "template placeholder '[Nome]'"
    assert "could not be sent (template placeholder '[Nome]')" in retry["messages"][0]["content"]


def test_the_reply_prompt_is_bounded_and_its_history_starts_with_the_lead() -> None:
    from luminai_actors.ai.openai_brain import bounded_history

    history = [HistoryLine("agent", "Olá!")] + [
        HistoryLine("lead" if i % 2 else "agent", f"{i} " + "x" * 300) for i in range(1, 40)
    ]
    kept = bounded_history(history, 2000)
    assert kept[0].role == "lead"
    assert kept[-1] == history[-1]
    assert sum(len(line.text) for line in kept) <= 2000
    assert (
        bounded_history([HistoryLine("agent", "Oi"), HistoryLine("lead", "y" * 5000)], 500)[0].text
        == "y" * 500
    )


@pytest.mark.parametrize(
    ("reply", "asks"),
    [
        ("Pode me passar seu email?", True),
        ("Perfeito! Qual é o seu e-mail?", True),
        ("I'm happy to help you with your business. What can I do for you?", False),
        ("Olá! Como posso ajudar?", False),
    ],
)
def test_a_reply_must_ask_what_the_step_asks(reply: str, asks: bool) -> None:
    from luminai_actors.services.reply_parts import asks_for

    assert asks_for(reply, "Qual é o seu e-mail?", "email") is asks


def test_a_model_reading_not_in_the_leads_words_gives_way_to_the_offline_rules() -> None:
    flow = {
        "name": "Q",
        "steps": [{"id": "c", "fields": [{"name": "name", "question": "Com quem eu falo?"}]}],
    }
    with LuminaiHarness(openai=True, ai_one_call=False) as luminai:
        fake = luminai.openai
        assert fake is not None
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, flow))
        fake.script({"name": None, "optOut": False}, "Olá! Com quem eu falo?")
        luminai.say("acme", "Oi", message_id="3EB0F1")
        luminai.drain()
        fake.script(
            {"name": "Sarah Jones is a professional with ten years in the industry", "optOut": False},
            "Obrigado, Sarah! Com quem mais eu falo?",
        )
        luminai.say("acme", "sarah jones", message_id="3EB0F2")
        luminai.drain()
        [talk] = luminai.talks(org)

    assert talk["talkFlow"]["collected"]["name"]["value"] == "sarah jones"


def test_one_call_per_turn_the_models_acknowledgement_then_the_scripts_question() -> None:
    flow = {
        "name": "Q",
        "language": "pt",
        "steps": [
            {
                "id": "c",
                "fields": [
                    {"name": "name", "question": "Com quem eu falo?"},
                    {"name": "email", "type": "email", "question": "Qual é o seu e-mail?"},
                ],
            },
            {"id": "b", "fields": [{"name": "budget", "type": "number", "question": "Qual é o orçamento?"}]},
        ],
    }
    with LuminaiHarness(openai=True) as luminai:
        fake = luminai.openai
        assert fake is not None
        org = luminai.admin.create_organization("Acme")
        luminai.admin.create_agent(org, "acme", tree_flow=luminai.admin.create_tree_flow(org, flow))
        fake.script(
            {"name": None, "email": None, "optOut": False, "ack": "Que bom ter você aqui!"},
            {"name": "Maria", "email": None, "optOut": False, "ack": "Prazer, Maria!"},
            {"name": None, "email": "maria@tiny.io", "optOut": False, "ack": "Posso te ligar amanhã?"},
        )
        for number, text in enumerate(["Oi", "Maria", "maria@tiny.io"]):
            luminai.say("acme", text, message_id=f"3EB0A{number}")
            luminai.drain()
        requests = fake.chat_requests()
        replies = luminai.replies("acme")

    assert len(requests) == 3  # one call per turn
    assert "ack" in requests[0]["response_format"]["json_schema"]["schema"]["required"]
    assert replies == [
        "Olá Lead! Sou SDR. Com quem eu falo?",  # first contact: the script's greeting, no acknowledgement
        "Prazer, Maria! Qual é o seu e-mail?",
        "Qual é o orçamento?",  # an acknowledgement that asks or promises something is left out
    ]
