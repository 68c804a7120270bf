"""Hold the eval set's conversations through the whole service and score them.

Each run starts a `LuminaiHarness` (SQLite, the memory broker, the fake Evolution API) on the brain being
measured, gives every conversation its own agent, posts the lead's messages one at a time (each answered
before the next, as a lead waits for the reply) and reads what the service kept: the TalkFlow's collected
values and outcome, the contact's opt-out, every reply sent.

A conversation passes a run when every message got a reply, no reply was unfit for a lead
(`reply_parts.unsafe_reply`: a placeholder, JSON, talk of the script), the collected values are exactly the
expected ones, the outcome is the expected one and the contact is opted out exactly when it must be.
`pass^k` is the share of conversations that pass all k runs (Sierra's tau-bench measure of consistency).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from luminai_actors.evaluation.eval_set import CONVERSATIONS, FLOWS, Conversation
from luminai_actors.services.reply_parts import unsafe_reply
from luminai_actors.testing.harness import LuminaiHarness

HarnessFactory = Callable[[], LuminaiHarness]


@dataclass(slots=True)
class Held:
    """One conversation in one run."""

    id: str
    collected: dict[str, Any]
    outcome: str | None
    opted_out: bool
    replies: list[str]
    messages: int
    expected: Conversation
    turn_ms: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    llm_calls: int = 0  # chat calls the brain made while this conversation was held

    @property
    def answered(self) -> bool:
        return len(self.replies) >= self.messages

    @property
    def unfit(self) -> list[str]:
        return [text for text in self.replies if unsafe_reply(text) is not None]

    @property
    def invented(self) -> dict[str, Any]:
        return {k: v for k, v in self.collected.items() if k not in self.expected.expect}

    @property
    def passed(self) -> bool:
        return (
            self.answered
            and not self.unfit
            and self.collected == self.expected.expect
            and self.outcome == self.expected.outcome
            and self.opted_out == self.expected.opted_out
        )


def hold(luminai: LuminaiHarness, org: str, conversation: Conversation, index: int, timeout: float) -> Held:
    instance = f"eval-{index}"
    flow = luminai.admin.create_tree_flow(org, FLOWS[conversation.flow])
    agent = luminai.admin.create_agent(org, instance, tree_flow=flow, name="Sofia")
    phone = f"55119{index:08d}"
    calls_before = getattr(luminai.container.brain, "calls", 0)
    for number, text in enumerate(conversation.messages):
        luminai.say(instance, text, phone=phone, message_id=f"3EB0E{index:04d}{number:02d}", push_name="Lead")
        luminai.drain(timeout=timeout)
    [talk] = [t for t in luminai.talks(org) if t["agentId"] == agent]
    flow_state = talk["talkFlow"] or {}
    outbound = [m for m in luminai.messages(talk["id"]) if m["direction"] == "outbound"]
    contact = next(c for c in luminai.admin.contacts(org) if c["id"] == talk["contactId"])
    ai = [m["metadata"].get("ai") or {} for m in outbound]
    return Held(
        id=conversation.id,
        collected={k: v["value"] for k, v in (flow_state.get("collected") or {}).items()},
        outcome=flow_state.get("outcome"),
        opted_out=contact["optedOutAt"] is not None,
        replies=[m["body"] for m in outbound],
        messages=len(conversation.messages),
        expected=conversation,
        turn_ms=[float(a.get("latencyMs") or 0) for a in ai],
        prompt_tokens=[int((a.get("usage") or {}).get("promptTokens") or 0) for a in ai],
        llm_calls=getattr(luminai.container.brain, "calls", 0) - calls_before,
    )


def run_once(
    factory: HarnessFactory, conversations: Sequence[Conversation] = CONVERSATIONS, timeout: float = 180.0
) -> list[Held]:
    with factory() as luminai:
        org = luminai.admin.create_organization("Eval")
        return [hold(luminai, org, c, i, timeout) for i, c in enumerate(conversations)]


def score(runs: list[list[Held]]) -> dict[str, Any]:
    """Per-field accuracy, false opt-outs, invented values kept, unfit replies, unanswered turns, pass^1 and
    pass^k over `runs` (each a list of the same conversations)."""
    fields: dict[str, list[int]] = {}
    for run in runs:
        for held in run:
            for name, value in held.expected.expect.items():
                right = fields.setdefault(name, [0, 0])
                right[0] += held.collected.get(name) == value
                right[1] += 1
    every = [held for run in runs for held in run]
    ids = [held.id for held in runs[0]]
    passes = {i: [run[n].passed for run in runs] for n, i in enumerate(ids)}
    turns = [ms for held in every for ms in held.turn_ms if ms > 0]
    tokens = [t for held in every for t in held.prompt_tokens if t > 0]
    return {
        "conversations": len(ids),
        "runs": len(runs),
        "fieldAccuracy": {name: round(right / total, 3) for name, (right, total) in fields.items()},
        "falseOptOuts": sum(h.opted_out and not h.expected.opted_out for h in every),
        "missedOptOuts": sum(h.expected.opted_out and not h.opted_out for h in every),
        "inventedValuesKept": sum(len(h.invented) for h in every),
        "unfitRepliesSent": sum(len(h.unfit) for h in every),
        "unansweredConversations": sum(not h.answered for h in every),
        "outcomeAccuracy": round(sum(h.outcome == h.expected.outcome for h in every) / len(every), 3),
        "pass^1": round(sum(p[0] for p in passes.values()) / len(ids), 3),
        f"pass^{len(runs)}": round(sum(all(p) for p in passes.values()) / len(ids), 3),
        "brainMsPerTurn": _spread(turns),
        "promptTokensPerTurn": _spread([float(t) for t in tokens]),
        "llmCallsPerTurn": round(sum(h.llm_calls for h in every) / sum(h.messages for h in every), 2),
        "failed": {i: _why(runs[0][n]) for n, i in enumerate(ids) if not all(passes[i])},
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
        "max": round(ordered[-1], 1),
    }


def _why(held: Held) -> str:
    reasons = []
    if not held.answered:
        reasons.append(f"{held.messages - len(held.replies)} message(s) unanswered")
    if held.unfit:
        reasons.append(f"unfit reply sent: {held.unfit[0][:80]!r}")
    wrong = {k: held.collected.get(k) for k, v in held.expected.expect.items() if held.collected.get(k) != v}
    if wrong:
        reasons.append(f"wrong or missing {wrong}")
    if held.invented:
        reasons.append(f"invented {held.invented}")
    if held.outcome != held.expected.outcome:
        reasons.append(f"outcome {held.outcome} (expected {held.expected.outcome})")
    if held.opted_out != held.expected.opted_out:
        reasons.append("opted out" if held.opted_out else "not opted out")
    return "; ".join(reasons)
