"""The interpreter's answer format: ``<think>…</think><answer>six-part caption</answer>``.

The six parts, in order, are :data:`vidcli.records.CAPTION_PARTS`. The canonical
rendering is six numbered, labelled paragraphs separated by blank lines::

    1. Dense caption: …

    2. Main object caption: …
    …
    6. Camera caption: …

:func:`parse_caption` reads that back and tolerates what models commonly vary: case,
extra spaces, missing or wrong numbers, "Main-object caption", a label without the
word "caption" ("Style: …"), markdown bold or headings, list bullets, all parts on
one line, and a part whose text spans several lines.

A label is recognised only where a part can plausibly begin, so that ordinary prose
such as "a noir style: deep shadows" is not split: at the start of a line, or in the
middle of a line when it carries a number ("3. Background:") or the word "caption".
The flip side: a line of a part's own text that starts with a bare label and a colon
("Style: …") starts that part.

Pure Python on purpose: the format reward runs inside the GRPO loop and in ``score``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from vidcli.records import CAPTION_PARTS

LABELS = {
    "dense": "Dense",
    "main_object": "Main object",
    "background": "Background",
    "movement": "Movement",
    "style": "Style",
    "camera": "Camera",
}
PROMPT_STYLES = ("dense", "structured", "full")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAG = re.compile(r"</?(?:think|answer)>")

_BOLD = r"(?:\*\*|__)?"
_HEADER = re.compile(
    r"(?<!\S)"  # at the start or after whitespace: never inside a word ("lifestyle:")
    r"(?:[-*+][ \t]+)?"  # a list bullet
    r"(?:\#{1,6}[ \t]*)?"  # a markdown heading
    + _BOLD + r"[ \t]*"
    r"(?:(?P<num>\d{1,2})[ \t]*[.)][ \t]*)?"
    + _BOLD + r"[ \t]*"
    r"(?P<label>dense|main[ \t_-]*objects?|background|movement|style|camera)"
    r"(?P<word>[ \t]+caption)?"
    r"[ \t]*" + _BOLD + r"[ \t]*:[ \t]*" + _BOLD,
    re.IGNORECASE,
)


@dataclass
class ParsedCaption:
    """What :func:`parse_caption` found.

    ``parts`` maps each part found to its text (stripped; possibly empty). ``missing``
    lists the parts not found and ``empty`` those found with no text, both in caption
    order. When a label occurs twice the first occurrence wins and the part is listed
    in ``duplicates``. ``order`` lists the parts found in the order they appear (first
    occurrences). ``preamble`` is any text before the first label.
    """

    parts: dict[str, str]
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    preamble: str = ""
    order: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """All six parts present and non-empty (the caption half of the answer format)."""
        return not self.missing and not self.empty


@dataclass
class ParsedOutput:
    """A model output split into reasoning and answer, with the two format checks.

    ``think`` / ``answer`` are the stripped texts of the first ``<think>…</think>`` /
    ``<answer>…</answer>`` pair (``None`` when there is none), extracted even when the
    format check fails; ``caption`` parses ``answer``. ``think_problem`` /
    ``answer_problem`` say why a check failed (``None`` when it holds).
    """

    think: str | None
    answer: str | None
    caption: ParsedCaption | None
    think_problem: str | None
    answer_problem: str | None

    @property
    def think_ok(self) -> bool:
        return self.think_problem is None

    @property
    def answer_ok(self) -> bool:
        return self.answer_problem is None


# ------------------------------------------------------------------------ captions


def _part_name(label: str) -> str:
    label = label.lower()
    return "main_object" if label.startswith("main") else label


def _is_header(text: str, match: re.Match) -> bool:
    line_start = text.rfind("\n", 0, match.start()) + 1
    at_line_start = not text[line_start : match.start()].strip()
    return at_line_start or bool(match.group("num") or match.group("word"))


def parse_caption(text: str) -> ParsedCaption:
    """Split a structured caption into its parts (see the module docstring for what is accepted)."""
    headers = [m for m in _HEADER.finditer(text) if _is_header(text, m)]
    preamble = text[: headers[0].start()] if headers else text
    parts: dict[str, str] = {}
    duplicates: list[str] = []
    ends = [m.start() for m in headers[1:]] + [len(text)]
    for match, end in zip(headers, ends):
        name = _part_name(match.group("label"))
        if name in parts:
            duplicates.append(name)
            continue
        parts[name] = text[match.end() : end].strip()
    return ParsedCaption(
        parts=parts,
        missing=[p for p in CAPTION_PARTS if p not in parts],
        empty=[p for p in CAPTION_PARTS if p in parts and not parts[p]],
        duplicates=duplicates,
        preamble=preamble.strip(),
        order=list(parts),
    )


def _render(parts: Mapping[str, str], *, skip_empty: bool) -> str:
    blocks = []
    for number, name in enumerate(CAPTION_PARTS, start=1):
        body = (parts.get(name) or "").strip()
        if skip_empty and not body:
            continue
        blocks.append(f"{number}. {LABELS[name]} caption: {body}".rstrip())
    return "\n\n".join(blocks)


def render_caption(parts: Mapping[str, str]) -> str:
    """The canonical six-paragraph text of a caption. Every part must be given, as a
    string (empty is allowed and renders a bare label); unknown keys are refused so a
    misspelt part name cannot vanish silently."""
    unknown = sorted(set(parts) - set(CAPTION_PARTS))
    if unknown:
        raise ValueError(f"unknown caption parts: {', '.join(unknown)}")
    missing = [p for p in CAPTION_PARTS if p not in parts]
    if missing:
        raise ValueError(f"caption is missing parts: {', '.join(missing)}")
    for name in CAPTION_PARTS:
        if not isinstance(parts[name], str):
            raise ValueError(f"caption part '{name}' must be a string, got {type(parts[name]).__name__}")
    return _render(parts, skip_empty=False)


def generator_prompt(parts: Mapping[str, str], style: str = "dense") -> str:
    """The prompt handed to a video generator (``--prompt-style``).

    ``dense``: the dense part only. ``structured``: the non-empty parts in order joined
    into one paragraph (line breaks folded, each part closed with a full stop when it
    has no final punctuation). ``full``: the structured text, skipping empty parts.
    Raises ValueError for an unknown style or when nothing usable is left.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    texts = {p: (parts.get(p) or "").strip() for p in CAPTION_PARTS}
    if style == "dense":
        if not texts["dense"]:
            raise ValueError("the caption has no dense part")
        return texts["dense"]
    if not any(texts.values()):
        raise ValueError("the caption has no non-empty part")
    if style == "full":
        return _render(texts, skip_empty=True)
    sentences = []
    for name in CAPTION_PARTS:
        sentence = " ".join(texts[name].split())
        if sentence:
            sentences.append(sentence if sentence[-1] in ".!?" else sentence + ".")
    return " ".join(sentences)


# ------------------------------------------------------------------------- outputs


def _first_block(text: str, open_tag: str, close_tag: str) -> str | None:
    start = text.find(open_tag)
    if start < 0:
        return None
    end = text.find(close_tag, start + len(open_tag))
    return None if end < 0 else text[start + len(open_tag) : end].strip()


def _tags(text: str, *names: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _TAG.finditer(text) if m.group() in names]


def _count_problem(opens: list, closes: list, open_tag: str, close_tag: str) -> str | None:
    if not opens and not closes:
        return f"no {open_tag} block"
    if len(opens) != 1 or len(closes) != 1:
        return (f"expected exactly one {open_tag}…{close_tag} block, found "
                f"{len(opens)} '{open_tag}' and {len(closes)} '{close_tag}'")
    if closes[0][0] < opens[0][0]:
        return f"'{close_tag}' comes before '{open_tag}'"
    return None


def _think_problem(text: str) -> str | None:
    opens, closes = _tags(text, THINK_OPEN), _tags(text, THINK_CLOSE)
    problem = _count_problem(opens, closes, THINK_OPEN, THINK_CLOSE)
    if problem:
        return problem
    (_, inner_start), (inner_end, block_end) = opens[0], closes[0]
    answer_tags = [start for start, _ in _tags(text, ANSWER_OPEN, ANSWER_CLOSE)]
    if any(inner_start <= s < inner_end for s in answer_tags):
        return "an answer tag inside the think block"
    if any(s < block_end for s in answer_tags):
        return "the think block does not come before the answer"
    if not text[inner_start:inner_end].strip():
        return "the think block is empty"
    return None


def answer_block_problem(text: str) -> str | None:
    """Why ``text`` has no single, unambiguous answer block (None when it has one).

    The block part of the answer format: exactly one ``<answer>`` and one ``</answer>``,
    in that order, no think tag inside, not inside a think block. The caption inside is
    not checked. An output that fails this has no answer to judge: with several blocks
    or an unclosed one, "the answer" would be whatever text lies between the first
    opening and the next closing tag.
    """
    opens, closes = _tags(text, ANSWER_OPEN), _tags(text, ANSWER_CLOSE)
    problem = _count_problem(opens, closes, ANSWER_OPEN, ANSWER_CLOSE)
    if problem:
        return problem
    (start, inner_start), (inner_end, _) = opens[0], closes[0]
    if _tags(text[inner_start:inner_end], THINK_OPEN, THINK_CLOSE):
        return "a think tag inside the answer block"
    # A think region runs from '<think>' to the next '</think>', or to the end if unclosed.
    for think_start, think_end in _tags(text, THINK_OPEN):
        close = text.find(THINK_CLOSE, think_end)
        if think_start < start and (close < 0 or close > start):
            return "the answer block is inside the think block"
    return None


def _answer_problem(text: str) -> str | None:
    problem = answer_block_problem(text)
    if problem:
        return problem
    (_, inner_start), (inner_end, _) = _tags(text, ANSWER_OPEN)[0], _tags(text, ANSWER_CLOSE)[0]
    caption = parse_caption(text[inner_start:inner_end])
    if caption.missing:
        return f"caption parts missing: {', '.join(caption.missing)}"
    if caption.empty:
        return f"caption parts empty: {', '.join(caption.empty)}"
    if caption.duplicates:
        return f"caption part given twice: {', '.join(dict.fromkeys(caption.duplicates))}"
    misplaced = next(((a, b) for a, b in zip(caption.order, caption.order[1:])
                      if CAPTION_PARTS.index(a) > CAPTION_PARTS.index(b)), None)
    if misplaced:
        return (f"caption parts out of order: {misplaced[0]} comes before {misplaced[1]} "
                f"(the order is {', '.join(CAPTION_PARTS)})")
    return None


def parse_output(text: str) -> ParsedOutput:
    """Split ``<think>…</think><answer>…</answer>`` and run the SPEC §1 format checks.

    Think format: exactly one ``<think>`` and one ``</think>`` tag, in that order, with
    non-blank text between them, no answer tag inside, and every answer tag after it.
    Answer format: exactly one ``<answer>`` and one ``</answer>`` tag, in that order,
    no think tag inside and not inside a think block, and a caption with all six parts
    present, non-empty, each given once and in SPEC §1's order (a reordered or repeated
    part is still parsed, but fails the check). Tags are matched exactly (lower case, no spaces). Text
    outside the two blocks is not constrained by either check.
    """
    answer = _first_block(text, ANSWER_OPEN, ANSWER_CLOSE)
    return ParsedOutput(
        think=_first_block(text, THINK_OPEN, THINK_CLOSE),
        answer=answer,
        caption=parse_caption(answer) if answer is not None else None,
        think_problem=_think_problem(text),
        answer_problem=_answer_problem(text),
    )


def build_target(think: str, caption: Mapping[str, str] | str) -> str:
    """The canonical training target ``<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>``.

    ``caption`` is a six-part mapping (rendered with :func:`render_caption`) or an
    already structured text. Raises ValueError for blank reasoning or text that
    contains one of the format's tags, since the result would not parse back.
    """
    think = think.strip()
    if not think:
        raise ValueError("the reasoning text is empty")
    answer = render_caption(caption) if isinstance(caption, Mapping) else caption.strip()
    for name, body in (("reasoning", think), ("caption", answer)):
        found = _TAG.search(body)
        if found:
            raise ValueError(f"the {name} text contains the tag {found.group()!r}")
    return f"{THINK_OPEN}\n{think}\n{THINK_CLOSE}\n{ANSWER_OPEN}\n{answer}\n{ANSWER_CLOSE}"
