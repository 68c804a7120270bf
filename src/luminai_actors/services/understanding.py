"""What a turn understood from the lead's new messages: the values to record and whether they opted out.

The one place a brain's extraction meets the lead's words:
- the brain is asked for the current step's fields only (`talkflow.fields_to_extract`); the script's other
  fields are taken when their value is literally there (`talkflow.volunteer_fields`, by the offline
  patterns), so a lead who answers ahead or corrects an earlier e-mail is heard;
- the offline extractor's reading is the floor under any brain's: an e-mail written in the message, or
  "sim" to the question just asked, is kept even when a model missed it or answered it with a paragraph
  (measured on SmolLM2-135M: e-mail accuracy 0.22 without this floor);
- every value is grounded (`domain.grounding`): what the lead's text does not support is dropped, and shown
  in the reply's metadata as `ungrounded`;
- opt-out needs the lead's own words (`domain.optout.is_opt_out`), or a model's judgement on words that at
  least sound like one (`has_stop_cue`): a model saying `optOut: true` alone never ends a conversation.
With no field to ask and no stop cue in the messages, no extraction is asked for at all (no LLM call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from luminai_actors.ai.brain import Brain, Extraction, ExtractionRequest, HistoryLine
from luminai_actors.domain import talkflow
from luminai_actors.domain.fields import extract_offline, normalize
from luminai_actors.domain.grounding import ground
from luminai_actors.domain.optout import has_stop_cue, is_opt_out


@dataclass(frozen=True, slots=True)
class Understanding:
    values: dict[str, Any]
    extraction: Extraction | None
    opt_out: bool
    ungrounded: dict[str, Any] = field(default_factory=dict)
    model_said_opt_out: bool = False


def understand(
    brain: Brain,
    definition: dict[str, Any],
    state: dict[str, Any],
    texts: list[str],
    history: list[HistoryLine],
    region: str | None,
    persona: str | None = None,
) -> Understanding:
    asked = state.get("askedField")
    step_fields = talkflow.fields_to_extract(definition, state)
    joined = "\n".join(texts)
    cue = any(has_stop_cue(text) for text in texts)
    extraction = None
    if step_fields or cue:
        extraction = brain.extract(
            ExtractionRequest(
                fields=step_fields,
                messages=texts,
                asked_field=asked,
                region=region,
                last_question=next((line.text for line in reversed(history) if line.role == "agent"), None),
                persona=persona,
                acknowledge=True,
            )
        )
    kept, dropped = ground(
        step_fields, extraction.values if extraction else {}, joined, asked=asked, region=region
    )
    # The floor: what the deterministic rules read (patterns anywhere, the whole answer for the asked
    # field), grounded too; a brain's grounded reading wins where it has one.
    every_field = step_fields + talkflow.volunteer_fields(definition, state)
    floor = extract_offline(every_field, joined, asked=asked, region=region)
    read = ground(every_field, floor, joined, asked=asked, region=region)[0]
    specs = {spec["name"]: spec for spec in step_fields}
    for name in [n for n in kept if n in read]:  # a model's unusable answer ("{") never hides a valid one
        if not normalize(specs[name], kept[name], region=region).ok:
            kept[name] = read[name]
    said = bool(extraction and extraction.opt_out)
    return Understanding(
        values={**read, **kept},
        extraction=extraction,
        opt_out=any(is_opt_out(text) for text in texts) or (said and cue),
        ungrounded=dropped,
        model_said_opt_out=said,
    )
