"""``mine-triplets --mode rave``: literal edit instructions → implicit reasoning cues.

Input records are existing edit pairs::

    {"id": ..., "source": {"video": PATH, "start"?: s, "end"?: s, "caption"?: text},
     "target": {"video": PATH, "start"?: s, "end"?: s, "caption"?: text},
     "instruction": "remove the boat"}

(times in seconds; a side without them is its whole video). The LLM rewrites the
literal instruction into a cue of one reasoning type (temporal, spatial, physical,
semantic) that implies the same edit without naming it, guided by hand-written
examples (``--examples``: JSONL of ``{reasoning_type, literal, implicit}``). A reply
that repeats the literal command is re-asked. The result keeps every input field,
replaces ``instruction`` by the cue, and adds ``literal_instruction``,
``reasoning_type`` and ``subset: rave``; video paths are resolved (absolute).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vidcli.backends.base import ChatModel, Conversation, Sampling
from vidcli.backends.jsonreply import JsonResult, generate_json
from vidcli.errors import InputError, MediaError
from vidcli.jsonl import Source
from vidcli.mining.triplets import instruction_validator, resolve_video, type_notes
from vidcli.prompts import render
from vidcli.records import require
from vidcli.stream import Outcome

RAVE_TYPES = ("temporal", "spatial", "physical", "semantic")
RAVE_NOTES = {
    "temporal": "temporal: the cue places the scene at another moment (later, earlier, after something "
                "has happened), and the edit is what that moment looks like.",
    "spatial": "spatial: the cue speaks of positions, room or lines of sight, and the edit is what "
               "the new arrangement requires.",
    "physical": "physical: the cue names a physical cause (weather, force, heat, light), and the edit is "
                "its consequence.",
    "semantic": "semantic: the cue states a purpose, role or meaning, and the edit is what fits it.",
}


@dataclass
class RaveOptions:
    types: tuple[str, ...] = RAVE_TYPES
    attempts: int = 3
    llm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=512)
    media_root: str | None = None
    allow_escape: bool = False


def load_examples(path: str | Path, types: Sequence[str] = RAVE_TYPES) -> list[dict]:
    """The few-shot examples of ``types`` from a JSONL file; InputError names a bad line."""
    from vidcli.jsonl import read_sources

    examples = []
    for src in read_sources([str(path)]):
        if src.error is not None:
            raise src.error
        try:
            kind = require(src.record, "reasoning_type")
            if kind not in RAVE_TYPES:
                raise InputError(f"reasoning_type must be one of {', '.join(RAVE_TYPES)}, got {kind!r}")
            example = {"reasoning_type": kind, "literal": require(src.record, "literal").strip(),
                       "implicit": require(src.record, "implicit").strip()}
        except InputError as exc:
            raise exc.located(file=src.file, line=src.line) from None
        if kind in types:
            examples.append(example)
    if not examples:
        raise InputError(f"no examples of type {', '.join(types)}", file=str(path))
    return examples


def format_examples(examples: Sequence[dict]) -> str:
    """The examples as prompt lines, grouped by type in the order of RAVE_TYPES."""
    ordered = sorted(examples, key=lambda e: RAVE_TYPES.index(e["reasoning_type"]))
    return "\n".join(f"- [{e['reasoning_type']}] literal: {json.dumps(e['literal'])} -> implicit: "
                     f"{json.dumps(e['implicit'])}" for e in ordered)


def rave_prompt(literal: str, source: dict, target: dict, examples: Sequence[dict],
                types: Sequence[str]) -> Conversation:
    """The rewrite request; the sides' captions, when given, tell the LLM what must stay true."""
    context = ""
    if source.get("caption") or target.get("caption"):
        context = (f"Before the edit the video shows: {source.get('caption') or '(not described)'}\n"
                   f"After the edit it shows: {target.get('caption') or '(not described)'}\n")
    return render("mine_rave", literal=literal, context=context, types=", ".join(types),
                  type_notes=type_notes(types, RAVE_NOTES), examples=format_examples(examples))


def _side(src: Source, name: str, opts: RaveOptions) -> dict:
    from vidcli.media import probe_video

    side = require(src.record, name, dict)
    path = resolve_video(side.get("video"), src, opts.media_root, opts.allow_escape)
    start = side.get("start", 0.0)
    end = side.get("end")
    if end is None:
        end = probe_video(path).duration_s
    for key, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{name}.{key} must be a non-negative number of seconds, got {value!r}")
    if end <= start:
        raise InputError(f"{name}: end ({end}) must come after start ({start})")
    return {**side, "video": str(path), "start": float(start), "end": float(end)}


def rave_batch(sources: list[Source], llm: ChatModel, examples: Sequence[dict], opts: RaveOptions) -> list[Outcome]:
    """One Outcome per source, in order: the record rewritten (see the module docstring)."""
    outcomes: list[Outcome | None] = [None] * len(sources)
    ready: dict[int, tuple[dict, str]] = {}
    for i, src in enumerate(sources):
        try:
            literal = require(src.record, "instruction").strip()
            sides = {name: _side(src, name, opts) for name in ("source", "target")}
        except MediaError as exc:
            outcomes[i] = Outcome.fail("media", str(exc))
            continue
        except InputError as exc:
            outcomes[i] = Outcome.fail("input", exc.message)
            continue
        ready[i] = ({**src.record, **sides}, literal)
    keys = list(ready)
    convs = [rave_prompt(ready[i][1], ready[i][0]["source"], ready[i][0]["target"], examples, opts.types)
             for i in keys]
    results = rewrite(llm, convs, [ready[i][1] for i in keys], opts)
    for i, res in zip(keys, results):
        record, literal = ready[i]
        if res.error:
            outcomes[i] = Outcome.fail("instruction", res.error)
            continue
        outcomes[i] = Outcome.ok({**record, "instruction": res.value["instruction"].strip(),
                                  "literal_instruction": literal, "reasoning_type": res.value["reasoning_type"],
                                  "subset": "rave"})
    return outcomes  # type: ignore[return-value]  # every index is set by now


def rewrite(llm: ChatModel, convs: list[Conversation], literals: list[str], opts: RaveOptions) -> list[JsonResult]:
    """generate_json, with each reply also checked against its own literal command.

    generate_json's ``validate`` sees only the value, not which request it answers, so
    the rounds are run here: each asks the still-failing conversations once, with the
    bad reply and the reason appended (a new request, which the cache cannot replay).
    """
    results: list[JsonResult | None] = [None] * len(convs)
    current = [list(c) for c in convs]
    pending = list(range(len(convs)))
    for round_no in range(1, opts.attempts + 1):
        if not pending:
            break
        checks = {k: instruction_validator(opts.types, literals[k]) for k in pending}
        replies = generate_json(llm, [current[k] for k in pending], opts.llm_sampling, attempts=1)
        failing = []
        for k, res in zip(pending, replies):
            reason = res.error
            if res.ok:
                try:
                    checks[k](res.value)
                except ValueError as exc:
                    reason = str(exc)
            if reason is None:
                results[k] = JsonResult(res.value, None, res.raw, round_no)
            elif res.raw is None or round_no == opts.attempts:
                results[k] = JsonResult(None, f"no usable reply after {round_no} attempt(s): {reason}",
                                        res.raw, round_no)
            else:
                current[k] += [{"role": "assistant", "content": res.raw},
                               {"role": "user", "content": f"That reply cannot be used: {reason}. "
                                                           "Answer again with only the JSON."}]
                failing.append(k)
        pending = failing
    return results  # type: ignore[return-value]  # every index is filled by the last round
