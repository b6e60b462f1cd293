"""The differentiable VLM reward path against the official Qwen2.5-VL processor and model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidcli.media import load_video
from vidcli.rewards.vlm import (VANILLA_QUESTION, VERDICT_PREFIX, VLMScorer, reference_answer, vanilla_reward,
                                video_pixels, vqa_loss)

BALL = Path(__file__).resolve().parent.parent / "examples" / "media" / "ball.mp4"
FPS = 4.0

TA = {"dim": "TA", "key": "objects", "question": "Look at the video. Is there a red car?",
      "reference": {"answer": "Yes", "explanation": "The red car drives through the street.", "source": "elements"}}
VQ = {"dim": "VQ", "key": "quality", "question": "Compared with the second video, is the first one blurry?",
      "reference": {"answer": "No", "issue": "none", "explanation": "The frames are sharp.", "source": "vlm"}}
PHY = {"dim": "Phy", "key": "physics", "question": "Compared with the second video, does the first break physics?",
       "reference": {"aspects": {"liquid_flow": "No", "deformation": "Yes", "material": "No", "motion": "No",
                                 "interpenetration": "No"},
                     "answer": "Yes", "explanation": "The ball squashes like clay.", "source": "vlm"}}


@pytest.fixture(scope="module")
def paths():
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models(["vlm", "wan", "qwen2vl"])


@pytest.fixture(scope="module")
def scorer(paths):
    return VLMScorer.from_pretrained(paths["vlm"])


def as_float(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 → (T, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255


def official(scorer, videos: list[np.ndarray], text: str):
    """The processor's own inputs for a prompt text (with or without an answer appended)."""
    metadata = [{"total_num_frames": len(v), "fps": FPS, "frames_indices": list(range(len(v)))} for v in videos]
    return scorer.processor(text=[text], videos=videos, video_metadata=metadata, return_tensors="pt")


def prompt_text(scorer, n_videos: int, question: str) -> str:
    conversation = [{"role": "user", "content": [{"type": "video"}] * n_videos + [{"type": "text", "text": question}]}]
    return scorer.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def plain_token_logprobs(scorer, videos, pixels, question, answer) -> torch.Tensor:
    """Per-token log p of the answer from one ordinary forward over the processor-built prompt + answer,
    with the processor's pixels swapped for ours (same pixels on both sides)."""
    inputs = official(scorer, videos, prompt_text(scorer, len(videos), question) + answer)
    inputs["pixel_values_videos"] = torch.cat([p.pixel_values for p in pixels]).detach()
    n = len(scorer.processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = scorer.model(**inputs).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    ids = inputs["input_ids"][0]
    length = len(ids)
    return torch.stack([logp[i - 1, ids[i]] for i in range(length - n, length)])


# --- preprocessing -------------------------------------------------------------------


def test_patch_layout_is_exact_when_no_resize_is_needed(scorer):
    # 84x56 is already a multiple of 28 within the pixel limits: only normalise + patchify.
    frames = load_video(BALL, num_frames=9, size=(84, 56)).frames  # 9 frames: the last one is repeated
    ref = scorer.processor.video_processor(videos=[frames], return_tensors="pt")
    mine = video_pixels(scorer.processor.video_processor, as_float(frames))
    assert mine.grid_thw.tolist() == ref["video_grid_thw"][0].tolist() == [5, 4, 6]
    assert torch.allclose(mine.pixel_values, ref["pixel_values_videos"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("size, frames, grid", [(None, 10, [5, 4, 6]), ((32, 32), 9, [5, 4, 4])])
def test_resized_pixels_match_the_processor(scorer, size, frames, grid):
    # Native 96x64 is shrunk to 84x56; 32x32 is enlarged to 56x56 (the minimum pixel count).
    clip = load_video(BALL, num_frames=frames, size=size).frames
    vp = scorer.processor.video_processor
    ref = vp(videos=[clip], return_tensors="pt")
    mine = video_pixels(vp, as_float(clip))
    assert mine.grid_thw.tolist() == ref["video_grid_thw"][0].tolist() == grid
    # The processor resizes uint8 pixels (rounded, fixed-point antialias kernel); we stay in
    # float. Tolerance: 1.5 grey levels after normalisation by the smallest std.
    tolerance = 1.5 / 255 / min(vp.image_std)
    diff = (mine.pixel_values - ref["pixel_values_videos"]).abs()
    assert diff.max() <= tolerance
    assert diff.mean() < 0.25 * tolerance


def test_prompt_tokens_and_positions_match_the_processor(scorer):
    clips = [load_video(BALL, num_frames=10, size=(32, 32)).frames, load_video(BALL, num_frames=6).frames]
    pixels = [scorer.video_pixels(as_float(c), fps=FPS) for c in clips]
    ids = scorer.prompt_ids(pixels, VQ["question"])
    ref = official(scorer, clips, prompt_text(scorer, 2, VQ["question"]))
    assert ids == ref["input_ids"][0].tolist()
    inputs = scorer.model_inputs(pixels, ids)
    for key in ("video_grid_thw", "mm_token_type_ids", "attention_mask"):
        assert inputs[key].tolist() == ref[key].tolist(), key
    assert torch.allclose(inputs["second_per_grid_ts"], ref["second_per_grid_ts"].float())


# --- scores --------------------------------------------------------------------------


def test_yes_logprob_equals_the_models_own_log_softmax(scorer):
    clip = load_video(BALL, num_frames=10, size=(32, 32)).frames
    pixels = [scorer.video_pixels(as_float(clip), fps=FPS)]
    question = VANILLA_QUESTION.format(prompt="a yellow ball rolls down the street")
    got = scorer.yes_logprob(pixels, question)
    expected = plain_token_logprobs(scorer, [clip], pixels, question, "Yes")
    assert len(expected) == 1  # "Yes" is one token: this is log_softmax at the verdict position
    assert abs(got.item() - expected.item()) <= 1e-5
    assert got.item() < 0



def test_qwen2_vl_scores_like_its_own_forward(paths):
    # The first generation: no second_per_grid_ts, plain temporal positions.
    scorer = VLMScorer.from_pretrained(paths["qwen2vl"])
    clip = load_video(BALL, num_frames=8, size=(32, 32)).frames
    pixels = [scorer.video_pixels(as_float(clip), fps=FPS)]
    assert "second_per_grid_ts" not in scorer.model_inputs(pixels, [0])
    question = VANILLA_QUESTION.format(prompt="a ball")
    expected = plain_token_logprobs(scorer, [clip], pixels, question, "Yes")
    assert abs(scorer.yes_logprob(pixels, question).item() - expected.sum().item()) <= 1e-5

def test_answer_loglikelihood_matches_a_plain_forward(scorer):
    gen = load_video(BALL, num_frames=10, size=(32, 32)).frames
    real = load_video(BALL, num_frames=10).frames
    pixels = [scorer.video_pixels(as_float(gen), fps=FPS), scorer.video_pixels(as_float(real), fps=FPS)]
    answer = reference_answer(VQ)
    assert answer.startswith('{"answer": "No", "issue": "none"')
    per_token = plain_token_logprobs(scorer, [gen, real], pixels, VQ["question"], answer)
    whole = scorer.answer_logprob(pixels, VQ["question"], answer)
    assert abs(whole.item() - per_token.sum().item()) <= 1e-4
    # A span scores the tokens whose characters overlap it ("No" here), nothing after them.
    start = answer.index('"No"') + 1
    encoded = scorer.processor.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    verdict_positions = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < start + 2 and b > start]
    verdict = scorer.answer_logprob(pixels, VQ["question"], answer, span=(start, start + 2))
    assert abs(verdict.item() - per_token[verdict_positions].sum().item()) <= 1e-5
    first_three = scorer.answer_logprobs(pixels, VQ["question"], answer, max_tokens=3)
    assert torch.allclose(first_three, per_token[:3], atol=1e-5)


def test_binary_reward_reads_each_verdict_before_any_reference_aspect(scorer):
    """Phy asks for five aspects before its verdict; the binary reward must not teacher-force them."""
    gen = load_video(BALL, num_frames=10, size=(32, 32)).frames
    real = load_video(BALL, num_frames=10).frames
    pixels = [scorer.video_pixels(as_float(gen), fps=FPS), scorer.video_pixels(as_float(real), fps=FPS)]
    assert reference_answer(PHY).startswith('{"aspects": {"liquid_flow": "No", "deformation": "Yes"')
    expected = 0.0
    for question in (TA, PHY, VQ):
        videos, shown = ([gen], pixels[:1]) if question["dim"] == "TA" else ([gen, real], pixels)
        answer = VERDICT_PREFIX + question["reference"]["answer"]
        with_verdict = plain_token_logprobs(scorer, videos, shown, question["question"], answer)
        # The verdict's tokens: from the first that differs from the opening's own tokens.
        tok = scorer.processor.tokenizer
        opening, ids = tok(VERDICT_PREFIX)["input_ids"], tok(answer)["input_ids"]
        common = next((i for i, (a, b) in enumerate(zip(opening, ids)) if a != b), len(opening))
        expected -= with_verdict[common:].sum().item()
    binary = vqa_loss(scorer, as_float(gen), [TA, PHY, VQ], reference_frames=as_float(real), fps=FPS,
                      verdict_only=True)
    assert abs(binary.item() - expected) <= 1e-4
    rich = vqa_loss(scorer, as_float(gen), [TA, PHY, VQ], reference_frames=as_float(real), fps=FPS)
    assert 0 < binary.item() < rich.item()


def test_vqa_loss_sums_the_questions_with_the_right_contexts(scorer):
    gen = load_video(BALL, num_frames=10, size=(32, 32)).frames
    real = load_video(BALL, num_frames=10).frames
    g, r = scorer.video_pixels(as_float(gen), fps=FPS), scorer.video_pixels(as_float(real), fps=FPS)
    expected = 0.0
    for question, videos, pixels in ((TA, [gen], [g]), (VQ, [gen, real], [g, r])):
        expected -= plain_token_logprobs(scorer, videos, pixels, question["question"],
                                         reference_answer(question)).sum().item()
    loss = vqa_loss(scorer, as_float(gen), [TA, VQ], reference_frames=as_float(real), fps=FPS)
    assert abs(loss.item() - expected) <= 1e-4
    with pytest.raises(ValueError, match="reference video"):
        vqa_loss(scorer, as_float(gen), [VQ], fps=FPS)


def test_gradients_reach_the_frames(scorer):
    frames = as_float(load_video(BALL, num_frames=10, size=(32, 32)).frames).requires_grad_(True)
    vqa_loss(scorer, frames, [TA], fps=FPS).backward()
    assert frames.grad is not None and torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0
    assert all(p.grad is None for p in scorer.model.parameters())  # the VLM stays frozen


def test_checkpointed_vlm_gives_the_same_loss_and_gradient_and_keeps_less(paths):
    from vidcli.plan.meter import LiveTensors

    frames = as_float(load_video(BALL, num_frames=10, size=(32, 32)).frames)
    results = []
    for checkpointed in (False, True):
        scorer = VLMScorer.from_pretrained(paths["vlm"])
        if checkpointed:
            scorer.checkpoint_activations()
        pixels = frames.clone().requires_grad_(True)
        with LiveTensors() as meter:
            loss = vqa_loss(scorer, pixels, [TA], fps=FPS)
            held = meter.current
            loss.backward()
        results.append((loss.item(), pixels.grad, held))
        assert all(p.grad is None for p in scorer.model.parameters())  # still frozen
    (plain_loss, plain_grad, plain_held), (ckpt_loss, ckpt_grad, ckpt_held) = results
    assert abs(ckpt_loss - plain_loss) <= 1e-5 and torch.allclose(ckpt_grad, plain_grad, atol=1e-6)
    assert ckpt_held < 0.8 * plain_held  # only each layer's input waits for backward


def test_gradients_reach_the_wan_dit_through_decode_and_the_last_step(scorer, paths):
    from vidcli.diffusion.rollout import truncated_rollout
    from vidcli.diffusion.wan import WanAdapter

    adapter = WanAdapter.from_pretrained(paths["wan"])
    latents = truncated_rollout(adapter, ["a yellow ball rolls"], steps=3, guidance=3.0, k_grad=1, seed=0,
                                height=32, width=32, frames=9)
    frames = adapter.decode(latents, frame_indices=[0, 2, 4, 6, 8, 8])[0]  # N_f = 6 frames for the VLM
    reward = vanilla_reward(scorer, frames, "a yellow ball rolls", fps=FPS)
    (-reward).backward()
    grads = [p.grad for p in adapter.trainable_module().parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in adapter.pipe.vae.parameters())
