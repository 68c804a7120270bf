from luminai_actors.testing import LuminaiHarness


def test_a_lead_is_greeted_and_asked_the_first_question(luminai: LuminaiHarness) -> None:
    org = luminai.admin.create_organization("Acme")
    flow = luminai.admin.create_tree_flow(org, {"name": "Q", "steps": [{"id": "q", "question": "Budget?"}]})
    luminai.admin.create_agent(org, "acme", tree_flow=flow)
    assert luminai.say("acme", "Oi, quero agendar").status_code == 200
    luminai.drain()
    assert luminai.replies("acme") == ["Hi Lead! I'm SDR. Budget?"]
