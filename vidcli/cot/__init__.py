"""ReaDe stage-1 data: four-step chain-of-thought targets for the instruction interpreter.

:func:`make_cot_batch` takes a batch of request records through the steps of
:mod:`vidcli.cot.steps` and returns one :class:`~vidcli.stream.Outcome` per record.
Each model role makes one ``generate_json`` call per batch (so an OpenAI-compatible
backend answers the whole batch concurrently and a local one batched), in this order:
gold structuring (LLM, only for plain-text gold), condition descriptions (VLM),
camera-only captions (VLM, ``camera_from_video``), intent (LLM), alignment (LLM),
supplement (LLM); then, for records with conditions, the same three text steps once
more without the instruction (the intent inferred from the conditions alone). A
record that fails a stage skips the later ones.

make-cot owns ``gold`` structuring: a plain-text ``gold`` is split into the six parts
by the LLM and replaced by them; the original string is kept in ``gold_text``. The
record also gets ``cot``: ``{steps: {intent, nontext, alignment, supplement}, target,
descriptions, no_instruction}``, where ``descriptions`` holds step 2's text for each
condition, in the order of ``conditions``, and ``no_instruction`` (records with
conditions only) is ``{steps: {intent, alignment, supplement}, target}``: the chain
the teacher writes when the user gave no text (step 1 inferred from the conditions
alone, steps 3 and 4 built on it; step 2 and the answer are the record's), and its
target — what SFT trains on when instruction dropout hides the text, so the model is
never taught to state a request it did not see.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable

from vidcli.backends.base import ChatModel, Conversation, Sampling
from vidcli.backends.jsonreply import generate_json
from vidcli.cot import steps
from vidcli.errors import InputError, MediaError
from vidcli.jsonl import Source
from vidcli.stream import Outcome


@dataclass
class CotOptions:
    frames: int = 8
    camera_from_video: bool = False
    attempts: int = 3
    llm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=1024)
    vlm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=512)
    media_root: str | None = None
    allow_escape: bool = False


@dataclass
class _Record:
    """One record in flight: its inputs and what the steps have produced so far."""

    record: dict
    instruction: str
    conditions: list[dict]
    gold: dict[str, str] | str
    works: list[steps.ConditionWork]
    steps: dict[str, str] = field(default_factory=dict)
    blind: dict[str, str] = field(default_factory=dict)  # steps 1, 3, 4 without the text (records with conditions)


def make_cot_batch(sources: list[Source], llm: ChatModel, vlm: ChatModel | None,
                   opts: CotOptions) -> list[Outcome]:
    """One Outcome per source, in order (see the module docstring for the stages)."""
    return _Batch(sources, llm, vlm, opts).run()


class _Batch:
    """The records of one batch moving through the stages; ``live`` holds those not failed."""

    def __init__(self, sources: list[Source], llm: ChatModel, vlm: ChatModel | None, opts: CotOptions) -> None:
        self.llm, self.vlm, self.opts = llm, vlm, opts
        self.outcomes: list[Outcome | None] = [None] * len(sources)
        self.live: dict[int, _Record] = {}
        for i, src in enumerate(sources):
            try:
                self.live[i] = _prepare(src, vlm, opts)
            except _StageError as exc:
                self.outcomes[i] = Outcome.fail(exc.stage, exc.message)

    def run(self) -> list[Outcome]:
        live = self.live
        split = self._ask("llm", "gold", steps.parse_gold_parts,
                          {i: steps.structure_prompt(r.gold) for i, r in live.items() if isinstance(r.gold, str)})
        for i, value in split.items():
            live[i].record["gold_text"] = live[i].gold
            live[i].gold = steps.parse_gold_parts(value)

        described = self._ask("vlm", "nontext", steps.text_field("description"),
                              {(i, k): w.request for i, r in live.items()
                               for k, w in enumerate(r.works) if w.request is not None})
        for (i, k), value in described.items():
            live[i].works[k].text = value["description"].strip()
        cameras = self._ask("vlm", "nontext", steps.text_field("camera"),
                            {(i, k): w.camera_request for i, r in live.items()
                             for k, w in enumerate(r.works) if w.camera_request is not None})
        for (i, k), value in cameras.items():
            live[i].works[k].camera_clauses = steps.camera_clauses(value["camera"])
        for r in live.values():
            r.steps["nontext"] = steps.nontext_text(r.works)

        prompts = {
            "intent": lambda r: steps.intent_prompt(r.instruction, r.conditions),
            "alignment": lambda r: steps.alignment_prompt(r.instruction, r.steps["intent"], r.steps["nontext"]),
            "supplement": lambda r: steps.supplement_prompt(r.instruction, r.steps["alignment"],
                                                            _render_gold(r.gold)),
        }
        for key, prompt in prompts.items():  # in step order: each needs the one before
            replies = self._ask("llm", key, steps.text_field(key), {i: prompt(r) for i, r in live.items()})
            for i, value in replies.items():
                live[i].steps[key] = value[key].strip()

        no_text = steps.NO_INSTRUCTION_TEXT
        blind_prompts = {
            "intent": lambda r: steps.inferred_intent_prompt(r.steps["nontext"]),
            "alignment": lambda r: steps.alignment_prompt(no_text, r.blind["intent"], r.steps["nontext"]),
            "supplement": lambda r: steps.supplement_prompt(no_text, r.blind["alignment"], _render_gold(r.gold)),
        }
        for key, prompt in blind_prompts.items():
            replies = self._ask("llm", f"{key} (no instruction)", steps.text_field(key),
                                {i: prompt(r) for i, r in live.items() if r.conditions})
            for i, value in replies.items():
                live[i].blind[key] = value[key].strip()

        for i, r in live.items():
            self.outcomes[i] = _finish(r)
        return self.outcomes  # type: ignore[return-value]  # every index is set by now

    def _ask(self, role: str, stage: str, validate: Callable[[object], None],
             requests: dict[Hashable, Conversation]) -> dict[Hashable, object]:
        """Parsed answers by key: a record index, or (record index, condition index). A
        failed request fails its record, whose other answers are then left out. ``role``
        is llm or vlm (a record only asks the VLM when there is one: see plan_conditions)."""
        if not requests:
            return {}
        model, sampling = (self.vlm, self.opts.vlm_sampling) if role == "vlm" else (self.llm, self.opts.llm_sampling)
        keys = list(requests)
        results = generate_json(model, [requests[k] for k in keys], sampling, validate=validate,
                                attempts=self.opts.attempts)
        for key, res in zip(keys, results):
            i = _index(key)
            if res.error and i in self.live:
                where = f"conditions[{key[1]}]: " if isinstance(key, tuple) else ""
                self.outcomes[i] = Outcome.fail(stage, where + res.error)
                del self.live[i]
        return {k: res.value for k, res in zip(keys, results) if _index(k) in self.live}


class _StageError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.message = stage, message


def _index(key: Hashable) -> int:
    return key[0] if isinstance(key, tuple) else key  # type: ignore[return-value]


def _render_gold(gold: dict[str, str]) -> str:
    from vidcli.interpreter.format import render_caption

    return render_caption(gold)


def _prepare(src: Source, vlm: ChatModel | None, opts: CotOptions) -> _Record:
    """Check the record and load its media; raise _StageError naming the stage at fault."""
    record = dict(src.record)
    try:
        instruction, conditions, gold = steps.instruction_of(record), steps.conditions_of(record), steps.gold_of(record)
    except InputError as exc:
        raise _StageError("input", exc.message) from None
    ctx = steps.MediaContext(src.base_dir, media_root=opts.media_root, allow_escape=opts.allow_escape,
                             vlm_spec=vlm.spec if vlm is not None else None, frames=opts.frames,
                             camera_from_video=opts.camera_from_video)
    try:
        works = steps.plan_conditions(conditions, ctx)
    except MediaError as exc:
        raise _StageError("media", str(exc)) from None
    except InputError as exc:
        raise _StageError("nontext", exc.message) from None
    return _Record(record=record, instruction=instruction, conditions=conditions, gold=gold, works=works)


def _finish(r: _Record) -> Outcome:
    """The targets built and checked against the answer format; a failure is a rejection."""
    chain = {k: r.steps[k] for k in steps.STEP_KEYS}
    try:
        target = _checked_target(chain, r.gold)
        cot = {"steps": chain, "target": target, "descriptions": [w.description for w in r.works]}
        if r.blind:
            cot["no_instruction"] = {"steps": dict(r.blind), "target": _checked_target({**chain, **r.blind}, r.gold)}
    except ValueError as exc:
        return Outcome.fail("format", str(exc))
    return Outcome.ok({**r.record, "gold": r.gold, "cot": cot})


def _checked_target(chain: dict[str, str], gold: dict[str, str]) -> str:
    """The target of these steps, checked against the answer format; ValueError says why not."""
    from vidcli.interpreter.format import build_target, parse_output

    target = build_target(steps.think_text(chain), gold)
    parsed = parse_output(target)
    problem = parsed.think_problem or parsed.answer_problem
    if problem is None and parsed.caption.parts != gold:
        changed = [k for k in gold if parsed.caption.parts.get(k) != gold[k]]
        problem = "the gold caption does not read back as its six parts (" + ", ".join(changed) + ")"
    if problem is not None:
        raise ValueError(problem)
    return target
