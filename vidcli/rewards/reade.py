"""The full ReaDe reward (SPEC §5), for ``grpo`` and ``score``.

    R = R_format + R_content
    R_content = α·R_user + ρ·R_detail + γ·R_supp − λ·R_contra     (α=1.0, ρ=1.0, γ=0.8, λ=0.7)

R_user, R_detail and R_supp are the coverage fractions (see :mod:`vidcli.rewards.coverage`)
of the key-info groups U (``user``), S (``supplementary``) and Z (``imaginative``), in
that order, as SPEC §5 lists them: R_detail is over S and R_supp over Z, although the
names might suggest otherwise. R_contra is 1 when the caption contradicts itself.

Only the ``<answer>`` block is judged (:func:`judged_caption`). A completion without a
usable answer (no block, an unclosed block, several blocks) gets R_content = 0: coverage
parts 0.0 and no contradiction penalty; its format reward still counts.

Where a part cannot be had, the result says so and the total uses a documented fallback,
so a training step never stops on a judge hiccup:

- a judge failure for a part (backend gave up, unreadable reply) puts the message in
  ``errors[part]``, the part is ``None`` and its term contributes 0;
- a judge that cannot detect contradictions (the offline ``embed`` matcher) gives
  ``contra = None`` and ``contra_available = False``: the total is computed without the
  λ term, which is stated, not hidden as a 0.

A part whose key-info group is empty (S of a text-only request) does not apply: it is
listed in ``not_applicable`` with the reason, and for the total it counts as covered
(:data:`~vidcli.rewards.coverage.EMPTY_COVERAGE`), which keeps every record's reward on
one scale. ``score`` reports such a part as ``null`` instead (not a number it measured).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vidcli.decompose.reade import parse_key_info
from vidcli.interpreter.format import answer_block_problem, generator_prompt, parse_output
from vidcli.rewards.coverage import CoverageJudge, group_elements
from vidcli.rewards.format import format_reward
from vidcli.settings import setting

PARTS = ("format", "user", "detail", "supp", "contra")
# Reward part → key-info group, in SPEC §5's order (U, S, Z).
GROUP_OF_PART = {"user": "user", "detail": "supplementary", "supp": "imaginative"}
_LETTER = {"user": "U", "supplementary": "S", "imaginative": "Z"}


@dataclass(frozen=True)
class RewardWeights:
    """α (user), ρ (detail), γ (supp), λ (contradiction penalty)."""

    alpha: float = setting(1.0, type=float, help="Weight of R_user.")
    rho: float = setting(1.0, type=float, help="Weight of R_detail (over S).")
    gamma: float = setting(0.8, type=float, help="Weight of R_supp (over Z).")
    lam: float = setting(0.7, type=float, flag="--lambda", name="lam", help="Weight of the R_contra penalty.")


@dataclass
class RewardResult:
    """One completion's reward.

    ``parts`` holds ``format``, ``user``, ``detail``, ``supp`` (fractions) and ``contra``
    (1.0 / 0.0), each ``None`` when unavailable or failed; ``errors`` maps a failed part
    to its one-line reason; ``not_applicable`` maps a coverage part whose element set is
    empty to the reason; ``total`` applies the fallbacks of the module docstring.
    """

    total: float
    parts: dict[str, float | None]
    contra_available: bool
    answer_found: bool
    errors: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every part that the judge can give was given."""
        return not self.errors

    @property
    def content(self) -> float:
        """R_content (the total without the format reward)."""
        return self.total - (self.parts["format"] or 0.0)


def judged_caption(completion: str) -> str | None:
    """The text the judge reads: the ``<answer>`` block, or None when there is no usable one.

    Usable means one unambiguous block (:func:`~vidcli.interpreter.format.answer_block_problem`):
    with several ``<answer>`` tags, or one left open, the text between the first opening
    and the next closing tag is no answer, and judging it pays a policy for repeating
    the tags around many guesses — a GRPO run from the toy world's interpreter start
    point learned exactly that within 30 steps (docs/toyworld.md).

    When the block parses into caption parts, their texts are joined in caption order
    (after any preamble) without the "3. Background caption:" labels, which are not
    content and would only add noise (the embedding matcher would match "camera"
    elements against the label "Camera caption"). Otherwise the block's text as is.
    """
    parsed = parse_output(completion)
    if answer_block_problem(completion) or parsed.answer is None or not parsed.answer.strip():
        return None
    caption = parsed.caption
    if caption is None or not any(text.strip() for text in caption.parts.values()):
        return parsed.answer
    joined = generator_prompt(caption.parts, "structured")
    return f"{caption.preamble} {joined}" if caption.preamble else joined


class ReadeReward:
    """R_format + R_content for batches of completions, judged by ``judge``."""

    def __init__(self, judge: CoverageJudge, weights: RewardWeights = RewardWeights()) -> None:
        self.judge = judge
        self.weights = weights

    def score(self, completion: str, key_info: dict) -> RewardResult:
        """The reward of one completion (prefer :meth:`score_many`: one judge batch for all)."""
        return self.score_many([completion], [key_info])[0]

    def score_many(self, completions: list[str], key_infos: list[dict]) -> list[RewardResult]:
        """One result per completion, in order; all judge questions go out as one batch.

        Raises ValueError when the lists differ in length or a key-info is malformed
        (bad data, not a judge failure).
        """
        if len(completions) != len(key_infos):
            raise ValueError(f"{len(completions)} completions but {len(key_infos)} key-infos")
        infos = []
        for i, info in enumerate(key_infos):
            try:
                infos.append(parse_key_info(info))
            except ValueError as exc:
                raise ValueError(f"key_infos[{i}]: {exc}") from None
        captions = [judged_caption(c) for c in completions]
        answered = [i for i, caption in enumerate(captions) if caption is not None]

        tasks = [(captions[i], group_elements(infos[i][group])) for i in answered
                 for group in GROUP_OF_PART.values()]
        verdicts = iter(self.judge.coverage(tasks))
        coverage = {i: {part: next(verdicts) for part in GROUP_OF_PART} for i in answered}
        available = self.judge.detects_contradiction
        contra = dict(zip(answered, self.judge.contradictions([captions[i] for i in answered]))) \
            if available and answered else {}

        results = []
        for i, completion in enumerate(completions):
            empty = {part: f"no {group} ({_LETTER[group]}) elements: nothing in key_info to check"
                     for part, group in GROUP_OF_PART.items() if not group_elements(infos[i][group])}
            parts: dict[str, float | None] = {"format": format_reward(completion)}
            errors: dict[str, str] = {}
            if i not in coverage:
                parts.update(user=0.0, detail=0.0, supp=0.0, contra=0.0 if available else None)
            else:
                for part, verdict in coverage[i].items():
                    parts[part] = verdict.fraction
                    if verdict.error:
                        errors[part] = verdict.error
                parts["contra"] = None
                if available:
                    answer = contra[i]
                    if answer.error:
                        errors["contra"] = answer.error
                    else:
                        parts["contra"] = 1.0 if answer.value else 0.0
            results.append(RewardResult(self._total(parts), parts, available, i in coverage, errors, empty))
        return results

    def _total(self, parts: dict[str, float | None]) -> float:
        w = self.weights
        terms = (
            (1.0, parts["format"]), (w.alpha, parts["user"]), (w.rho, parts["detail"]),
            (w.gamma, parts["supp"]), (-w.lam, parts["contra"]),
        )
        return sum(weight * value for weight, value in terms if value is not None)
