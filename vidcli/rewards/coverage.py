"""Coverage of key-info elements by a caption, and the judges that decide it (SPEC §5).

**Elements.** A key-info group (``decompose --schema reade``) is
``{objects: [{name, attributes}], actions, camera, style}``. Its elements, in this order:
each object's name ("woman"), each attribute of an object written as a checkable
statement about that object ("woman: short black hair"), each action as given,
each camera phrase as "camera: …" and each style phrase as "style: …". An object's name
counts as an element of its own (the caption must mention the woman at all), besides
each of its attributes; this is the count :func:`vidcli.decompose.reade.count_elements`
reports.

**Empty groups.** A group with no elements (a text-only request has no supplementary
facts) has coverage :data:`EMPTY_COVERAGE` = 1.0: nothing was asked, nothing is missing.
This keeps the reward's maximum the same for every record (format 1 + α + ρ + γ), so
rewards of records with and without conditions stay on one scale; within a GRPO group
all completions share one key-info, so the choice does not move advantages.

**Judges** (``--judge``):

- :class:`LLMJudge` over any chat backend (``openai:MODEL``, ``hf:PATH``), in one of two
  modes. ``elements`` (default) asks one yes/no question per (caption, element);
  coverage is the fraction of "yes". ``number`` asks once per (caption, element group)
  for a single coverage number, as the paper did (temperature 0.3, at most 50 new
  tokens). Both can also ask whether a caption contradicts itself.
- :class:`EmbedJudge`, the offline MiniLM matcher: an element is supported when its best
  cosine against the caption's sentences and word windows reaches the threshold. It
  cannot detect contradictions (``detects_contradiction`` is False).

All questions of one call go to the backend in one ``generate`` batch (concurrent for
``openai:``, batched for ``hf:``), identical questions are asked once, and the backend's
reply cache serves repeats. A failure (the backend gave up, or a reply stays unreadable
after ``attempts`` tries, each retry carrying the bad reply and a correction) is a
:class:`Verdict` with ``error`` set, never an exception.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol

from vidcli.backends.base import ChatModel, Conversation, Sampling
from vidcli.decompose.reade import LISTS
from vidcli.prompts import render

EMPTY_COVERAGE = 1.0
JUDGE_MODES = ("elements", "number")
# What a user who gave no --judge is told: there is no silent default, since the only
# judge that needs nothing (embed) is a weak one.
CHOOSE_A_JUDGE = (
    "choose a judge with --judge: openai:MODEL, an LLM behind an OpenAI-compatible endpoint (the paper's setting, "
    "with --judge-mode number: one coverage number per element set at temperature 0.3, at most 50 tokens); "
    "hf:PATH, a local Hugging Face model; or embed: the offline MiniLM matcher, for smoke runs only - it cannot "
    "detect contradictions, and it counts a contradicting fact as supported when the words are close "
    "(against 'a woman in a blue coat', 'woman: red coat' passes)")
# The paper's judge settings for one coverage number; a yes/no needs only a word or two.
NUMBER_SAMPLING = Sampling(temperature=0.3, max_tokens=50)
ELEMENT_SAMPLING = Sampling(temperature=0.0, max_tokens=16)

_LIST_PREFIX = {"actions": "", "camera": "camera: ", "style": "style: "}
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_WORD = re.compile(r"[a-z]+")
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")
_RATIO = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")


def group_elements(group: dict) -> list[str]:
    """The elements of one key-info group as short checkable statements (module docstring)."""
    elements: list[str] = []
    for obj in group["objects"]:
        elements.append(obj["name"])
        elements += [f"{obj['name']}: {attribute}" for attribute in obj["attributes"]]
    for key in LISTS:
        elements += [_LIST_PREFIX[key] + phrase for phrase in group[key]]
    return elements


# ------------------------------------------------------------------ reply parsing


def _visible(text: str) -> str:
    """The reply without reasoning blocks; a reasoning block cut off by the token limit is unreadable."""
    text = _THINK_BLOCK.sub(" ", text)
    if "<think>" in text:
        raise ValueError("the reply is an unfinished <think> block")
    return text


def parse_yes_no(text: str) -> bool:
    """True for a "yes", False for a "no": the first word, or the only one of the two present."""
    words = _WORD.findall(_visible(text).lower())
    if words and words[0] in ("yes", "no"):
        return words[0] == "yes"
    said = {w for w in words if w in ("yes", "no")}
    if len(said) == 1:
        return said.pop() == "yes"
    raise ValueError("expected yes or no" if not said else "the reply says both yes and no")


def _one_value(values: list[float], form: str) -> float:
    if len(set(values)) > 1:
        raise ValueError(f"several different {form} values in the reply")
    return values[0]


def parse_fraction(text: str) -> float:
    """A coverage number in [0, 1] from a judge reply.

    Read in this order: a percentage ("70%"), else a ratio ("7/10"), else a bare number
    ("0.7", "Coverage: 0.7"). A form that occurs with different values, a bare number
    beside other numbers ("0.7, 7 of 10"), or a value out of range is unreadable: a
    wrong guess would be worse than a recorded failure.
    """
    visible = _visible(text)
    percents = [float(p) for p in _PERCENT.findall(visible)]
    if percents:
        value = _one_value(percents, "percentage") / 100
    else:
        ratios = [int(a) / int(b) if int(b) else float("inf") for a, b in _RATIO.findall(visible)]
        if ratios:
            value = _one_value(ratios, "ratio")
        else:
            numbers = [float(n) for n in _NUMBER.findall(visible)]
            if not numbers:
                raise ValueError("no number in the reply")
            value = _one_value(numbers, "number")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"coverage {value:g} is outside [0, 1]")
    return value


# ------------------------------------------------------------------------ verdicts


@dataclass
class Verdict:
    """A coverage fraction (with per-element decisions where the judge gives them), or why not."""

    fraction: float | None
    supported: list[bool] | None = None
    error: str | None = None


@dataclass
class Answer:
    """One parsed judge reply, or the reason there is none."""

    value: object = None
    error: str | None = None


def ask(model: ChatModel, conversations: list[Conversation], sampling: Sampling,
        parse: Callable[[str], object], correction: str, attempts: int = 2) -> list[Answer]:
    """Ask every conversation in one batch; re-ask unreadable replies with a correction.

    A transport failure (the backend already retried) ends that question at once.
    """
    answers: list[Answer] = [Answer() for _ in conversations]
    current = [list(c) for c in conversations]
    pending = list(range(len(conversations)))
    for round_no in range(1, attempts + 1):
        if not pending:
            break
        unreadable = []
        for i, reply in zip(pending, model.generate([current[i] for i in pending], sampling), strict=True):
            if not reply.ok:
                answers[i] = Answer(error=f"judge call failed: {reply.error or 'empty reply'}")
                continue
            try:
                answers[i] = Answer(parse(reply.text))
            except ValueError as exc:
                if round_no == attempts:
                    shown = " ".join(reply.text.split())[:80]
                    answers[i] = Answer(error=f"unreadable judge reply after {attempts} attempt(s) ({exc}): {shown!r}")
                else:
                    current[i] += [{"role": "assistant", "content": reply.text},
                                   {"role": "user", "content": f"That reply could not be read ({exc}). {correction}"}]
                    unreadable.append(i)
        pending = unreadable
    return answers


class CoverageJudge(Protocol):
    """What the reward needs from a judge."""

    spec: str
    detects_contradiction: bool

    def coverage(self, tasks: list[tuple[str, list[str]]]) -> list[Verdict]:
        """One verdict per (caption, elements) task, in order."""
        ...

    def contradictions(self, captions: list[str]) -> list[Answer]:
        """Per caption: ``Answer(True)`` when it contradicts itself. Only when ``detects_contradiction``."""
        ...

    def close(self) -> None: ...


class LLMJudge:
    """A chat model as coverage and contradiction judge (modes: module docstring)."""

    detects_contradiction = True

    def __init__(self, model: ChatModel, mode: str = "elements", *, sampling: Sampling | None = None,
                 attempts: int = 2) -> None:
        if mode not in JUDGE_MODES:
            raise ValueError(f"unknown judge mode {mode!r}; choose one of {', '.join(JUDGE_MODES)}")
        self.model = model
        self.mode = mode
        self.spec = model.spec
        self.sampling = sampling or (NUMBER_SAMPLING if mode == "number" else ELEMENT_SAMPLING)
        self.attempts = attempts

    def _yes_no(self, conversations: list[Conversation]) -> list[Answer]:
        return ask(self.model, conversations, self.sampling, parse_yes_no,
                   "Answer with one word: yes or no.", self.attempts)

    def coverage(self, tasks: list[tuple[str, list[str]]]) -> list[Verdict]:
        return self._by_element(tasks) if self.mode == "elements" else self._by_number(tasks)

    def _by_element(self, tasks: list[tuple[str, list[str]]]) -> list[Verdict]:
        index: dict[tuple[str, str], int] = {}
        for caption, elements in tasks:
            for element in elements:
                index.setdefault((caption, element), len(index))
        answers = self._yes_no([render("judge_element", caption=c, element=e) for c, e in index])
        verdicts = []
        for caption, elements in tasks:
            if not elements:
                verdicts.append(Verdict(EMPTY_COVERAGE, []))
                continue
            got = [answers[index[(caption, e)]] for e in elements]
            failed = next(((e, a.error) for e, a in zip(elements, got) if a.error), None)
            if failed:
                verdicts.append(Verdict(None, error=f"element {failed[0]!r}: {failed[1]}"))
            else:
                supported = [bool(a.value) for a in got]
                verdicts.append(Verdict(sum(supported) / len(supported), supported))
        return verdicts

    def _by_number(self, tasks: list[tuple[str, list[str]]]) -> list[Verdict]:
        index: dict[tuple[str, tuple[str, ...]], int] = {}
        for caption, elements in tasks:
            if elements:
                index.setdefault((caption, tuple(elements)), len(index))
        conversations = [render("judge_coverage_number", caption=caption, count=str(len(elements)),
                                elements="\n".join(f"- {e}" for e in elements)) for caption, elements in index]
        answers = ask(self.model, conversations, self.sampling, parse_fraction,
                      "Answer with one number between 0 and 1 and nothing else.", self.attempts)
        verdicts = []
        for caption, elements in tasks:
            if not elements:
                verdicts.append(Verdict(EMPTY_COVERAGE, []))
                continue
            answer = answers[index[(caption, tuple(elements))]]
            verdicts.append(Verdict(answer.value, error=answer.error))
        return verdicts

    def contradictions(self, captions: list[str]) -> list[Answer]:
        unique = list(dict.fromkeys(captions))
        answers = self._yes_no([render("judge_contradiction", caption=c) for c in unique])
        by_caption = dict(zip(unique, answers))
        return [by_caption[c] for c in captions]

    def close(self) -> None:
        self.model.close()


class EmbedJudge:
    """The offline MiniLM matcher as a coverage judge; it cannot judge contradictions."""

    detects_contradiction = False
    spec = "embed"

    def __init__(self, embedder, threshold: float | None = None) -> None:
        self.embedder = embedder
        self.threshold = embedder.DEFAULT_SUPPORT_THRESHOLD if threshold is None else threshold

    def coverage(self, tasks: list[tuple[str, list[str]]]) -> list[Verdict]:
        """The rule of :meth:`Embedder.support`, with every text of the batch embedded once."""
        from vidcli.backends.embed import caption_units

        units = {caption: caption_units(caption) for caption, elements in tasks if elements}
        texts = list(dict.fromkeys([e for _, elements in tasks for e in elements]
                                   + [u for found in units.values() for u in found]))
        row = {text: i for i, text in enumerate(texts)}
        vectors = self.embedder.embed(texts)
        verdicts = []
        for caption, elements in tasks:
            if not elements:
                verdicts.append(Verdict(EMPTY_COVERAGE, []))
                continue
            if not units[caption]:
                verdicts.append(Verdict(0.0, [False] * len(elements)))
                continue
            sims = vectors[[row[e] for e in elements]] @ vectors[[row[u] for u in units[caption]]].T
            supported = [score >= self.threshold for score in sims.max(dim=1).values.tolist()]
            verdicts.append(Verdict(sum(supported) / len(supported), supported))
        return verdicts

    def contradictions(self, captions: list[str]) -> list[Answer]:
        raise NotImplementedError("the embedding matcher cannot detect contradictions; check detects_contradiction")

    def close(self) -> None:
        """Nothing to release: the embedder lives as long as this object."""


def load_judge(spec: str, *, mode: str = "elements", threshold: float | None = None,
               sampling: Sampling | None = None, attempts: int = 2, device: str = "cpu",
               **backend_options) -> CoverageJudge:
    """The judge named by ``spec``: ``embed``, ``openai:MODEL`` or ``hf:PATH``.

    ``backend_options`` go to :func:`vidcli.backends.load_chat_model` (base_url,
    concurrency, use_cache, ...). ``threshold`` applies to ``embed`` only; ``mode``,
    ``sampling`` and ``attempts`` to chat judges only.
    """
    from vidcli.backends import load_chat_model, load_embedder

    if spec == "embed":
        return EmbedJudge(load_embedder(spec, device=device), threshold)
    if threshold is not None:
        raise ValueError("a support threshold applies to the embed judge only")
    return LLMJudge(load_chat_model(spec, device=device, **backend_options), mode, sampling=sampling,
                    attempts=attempts)
