"""The frozen VLM critic of an edit (``revise-tune``, SPEC §8): Δ = ℓ(Yes) − ℓ(No) at its verdict.

Given (edited frames, source frames, instruction) the critic is asked to check edit
accuracy, preservation (not for ``subset: icvg`` triplets, whose target is a new shot:
as in ``score --metric rve``), motion and realism.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from vidcli.errors import InputError

# --critic-reasoning: the prompt of each form. "first" reasons, then gives the verdict after VERDICT_CUE.
CRITIC_PROMPTS = {"first": "critic_revise", "none": "critic_revise_verdict_first"}
CRITIC_REASONING = tuple(CRITIC_PROMPTS)
VERDICT_CUE = "\nVerdict:"
_CHECKS = {
    "accuracy": "Edit accuracy: the edited video carries out what the instruction asks for, including the change "
                "it implies.",
    "preservation": "Preservation: everything the instruction does not touch (people, objects, background, "
                    "framing) stays as in the original.",
    "motion": "Motion: movement in the edited video is smooth and physically natural, without jumps, flicker or "
              "warping.",
    "realism": "Realism: the edited video looks like real footage, with plausible light, texture and detail.",
}
_ICVG_NOTE = ("The edited video is a new shot that uses the original only as context: it is not meant to keep the "
              "original's content, so preservation does not count here.")


def critic_checks(subset: str | None) -> str:
    """What the critic is asked to check: all four points, or without preservation for ICVG
    (as ``score --metric rve`` leaves PC out there)."""
    names = [n for n in _CHECKS if not (subset == "icvg" and n == "preservation")]
    count = {3: "three", 4: "four"}[len(names)]
    listed = "\n".join(f"{i}. {_CHECKS[n]}" for i, n in enumerate(names, 1))
    return (f"{_ICVG_NOTE}\n" if subset == "icvg" else "") + f"Check these {count} things:\n{listed}"


class Judgement(NamedTuple):
    delta: torch.Tensor  # ℓ(Yes) − ℓ(No) at the verdict position
    reasoning: str | None  # what the critic wrote before its verdict (None: verdict first)


class Critic:
    """The frozen VLM judge of an edit: Δ = ℓ(Yes) − ℓ(No) at its verdict, given (edited, source, instruction).

    ``reasoning="first"`` (the paper's order): the critic first writes a short reasoning
    (greedy, at most ``max_tokens`` tokens, no gradient; cut where it starts a verdict of
    its own), then one forward over [prompt + that reasoning + ``VERDICT_CUE``] gives the
    logits of the verdict word that follows. ``"none"``: the prompt asks for the verdict
    as the first word of the reply and Δ is read there — one forward, no generation.
    """

    def __init__(self, scorer, *, reasoning: str = "first", max_tokens: int = 64) -> None:
        self.scorer = scorer
        self.reasoning = reasoning
        self.max_tokens = max_tokens
        self.cue_ids: list[int] = []
        if scorer.processor is None:  # built to be sized (vidcli.weights): it is never asked anything
            self.yes_id = self.no_id = None
            return
        tok = scorer.processor.tokenizer
        if reasoning == "none":
            # The verdict is the reply's first token; each word's first token stands for it.
            self.yes_id, self.no_id = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
        else:
            self.cue_ids = tok(VERDICT_CUE, add_special_tokens=False)["input_ids"]
            self.yes_id, self.no_id = (self._word_after_cue(tok, w) for w in ("Yes", "No"))
        if self.yes_id == self.no_id:
            raise InputError("the critic's tokenizer starts 'Yes' and 'No' with the same token")

    def _word_after_cue(self, tok, word: str) -> int:
        """The first token of `` word`` after the cue, as the tokenizer splits "cue word"."""
        ids = tok(f"{VERDICT_CUE} {word}", add_special_tokens=False)["input_ids"]
        if ids[:len(self.cue_ids)] != self.cue_ids:
            raise InputError(f"the critic's tokenizer joins {VERDICT_CUE!r} with the verdict word")
        return ids[len(self.cue_ids)]

    def question(self, instruction: str, subset: str | None = None) -> str:
        from vidcli.prompts import render_text

        return render_text(CRITIC_PROMPTS[self.reasoning], instruction=instruction, checks=critic_checks(subset))

    def judge(self, edited: torch.Tensor, source: torch.Tensor, instruction: str, *, subset: str | None = None,
              fps: tuple[float, float] = (2.0, 2.0)) -> Judgement:
        """Δ for (F, 3, H, W) edited and source frames in [0, 1] shown at ``fps`` (edited, source);
        differentiable in ``edited``."""
        scorer = self.scorer
        videos = [scorer.video_pixels(edited, fps[0]), scorer.video_pixels(source, fps[1])]
        ids = scorer.prompt_ids(videos, self.question(instruction, subset))
        reasoning = None
        if self.reasoning == "first":
            reasoning = self.reason(videos, ids)
            ids = ids + scorer.processor.tokenizer(reasoning, add_special_tokens=False)["input_ids"] + self.cue_ids
        logits = scorer.model(**scorer.model_inputs(videos, ids), logits_to_keep=1).logits[0, -1].float()
        return Judgement(logits[self.yes_id] - logits[self.no_id], reasoning)

    def reason(self, videos: list, prompt_ids: list[int]) -> str:
        """The critic's short reasoning after ``prompt_ids``: greedy, bounded, without gradient."""
        from transformers import GenerationConfig

        model, tok = self.scorer.model, self.scorer.processor.tokenizer
        config = GenerationConfig(do_sample=False, max_new_tokens=self.max_tokens,
                                  eos_token_id=model.generation_config.eos_token_id,
                                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        with torch.no_grad():
            out = model.generate(**self.scorer.model_inputs(videos, prompt_ids), generation_config=config)
        text = tok.decode(out[0, len(prompt_ids):], skip_special_tokens=True)
        # A verdict the critic starts itself is dropped: Δ is read after our own cue.
        cut = text.lower().find(VERDICT_CUE.strip().lower())
        return (text if cut < 0 else text[:cut]).strip()
