"""Generator-in-the-loop feedback: R_video against the diffusers pipeline and the VLM scorer, and in GRPO."""
from __future__ import annotations

import json

import pytest
import torch

from tests.test_grpo import grpo_kit, make_config  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
from vidcli.interpreter.format import build_target
from vidcli.rewards.reade import RewardResult
from vidcli.rewards.video_feedback import (VideoFeedback, VideoFeedbackConfig, render_seed, video_questions,
                                           yes_probabilities)
from vidcli.train.grpo import GRPORecipe, completion_mask

INSTRUCTION = "a brown dog running"
KEY_INFO = {"user": {"objects": [{"name": "dog", "attributes": ["brown"]}], "actions": ["runs"]},
            "supplementary": {"camera": ["pans left"]}, "imaginative": {"style": ["cinematic"]}}
CAPTION = dict(dense="a brown dog runs across the grass", main_object="a brown dog", background="a green lawn",
               movement="the dog runs", style="realistic", camera="static shot")
DOG = build_target("the user wants a dog", CAPTION)
CAT = build_target("a cat instead", {**CAPTION, "dense": "a grey cat sleeps on a sofa"})
RENDER = dict(steps=2, frames=5, height=32, width=32, guidance=2.0, vlm_frames=3, batch=4)


@pytest.fixture(scope="module")
def feedback(tiny_models):
    config = VideoFeedbackConfig(generator=str(tiny_models["wan"]), vlm=f"hf:{tiny_models['vlm']}", **RENDER)
    return VideoFeedback.load(config)


def test_questions_are_the_instruction_then_the_user_elements_only():
    asked = video_questions(INSTRUCTION, KEY_INFO)
    assert [about for about, _ in asked] == ["instruction", "dog", "dog: brown", "runs"]  # no S or Z element
    assert INSTRUCTION in asked[0][1] and "dog: brown" in asked[2][1]
    assert [about for about, _ in video_questions("  ", KEY_INFO)] == ["dog", "dog: brown", "runs"]


def test_render_seed_is_a_function_of_seed_data_slot_and_row():
    seeds = {render_seed(*where) for where in [(0, 1, 0), (1, 1, 0), (0, 2, 0), (0, 1, 1)]}
    assert len(seeds) == 4 and render_seed(0, 1, 0) == render_seed(0, 1, 0)


def test_r_video_is_the_mean_yes_probability_of_the_pipeline_render(feedback, tiny_models):
    """Each answer's render equals WanPipeline's for its seed; R_video = mean exp(yes_logprob)."""
    from diffusers import WanPipeline

    from vidcli.diffusion.rollout import uniform_frame_indices

    renders = []
    original = feedback.render
    feedback.render = lambda prompts, seeds: renders.append(list(prompts)) or original(prompts, seeds)
    seeds = [11, 12, 13]
    try:
        scores = feedback.score_many([DOG, "no answer here", CAT], [INSTRUCTION] * 3, [KEY_INFO] * 3, seeds)
    finally:
        del feedback.render
    # The answerless completion gets 0 and is not rendered; the two others go in one pipeline call.
    assert renders == [[CAPTION["dense"], "a grey cat sleeps on a sofa"]]
    assert scores[1].value == 0.0 and scores[1].prompt is None and scores[1].p_yes == []

    pipe = WanPipeline.from_pretrained(tiny_models["wan"])
    pipe.set_progress_bar_config(disable=True)
    scorer, questions = feedback.scorer, [q for _, q in video_questions(INSTRUCTION, KEY_INFO)]
    for row in (0, 2):
        video = pipe(scores[row].prompt, num_inference_steps=2, guidance_scale=2.0, num_frames=5, height=32,
                     width=32, generator=torch.Generator().manual_seed(seeds[row]), output_type="pt").frames[0]
        pixels = scorer.video_pixels(video[uniform_frame_indices(5, 3)], 2.0)
        with torch.no_grad():
            expected = [scorer.yes_logprob([pixels], q).exp().item() for q in questions]
        assert scores[row].p_yes == pytest.approx(expected, rel=1e-4)
        assert scores[row].value == pytest.approx(sum(expected) / len(expected), rel=1e-4)
        assert scores[row].parts()["video_elements"] == pytest.approx(sum(expected[1:]) / 3, rel=1e-4)
        assert scores[row].seed == seeds[row]
    assert scores[0].p_yes != pytest.approx(scores[2].p_yes, rel=1e-3)  # different videos, different answers


def test_batched_yes_probabilities_equal_one_row_at_a_time(feedback):
    scorer = feedback.scorer
    videos = [scorer.video_pixels(torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(i)))
              for i in range(2)]
    items = [(videos[0], "Is it red?"), (videos[1], "Is there a very long and detailed question here about it?"),
             (videos[1], "Dog?")]
    with torch.no_grad():
        expected = [scorer.yes_logprob([v], q).exp().item() for v, q in items]
    assert yes_probabilities(scorer, items, batch=3) == pytest.approx(expected, rel=1e-4)


def test_nothing_to_ask_means_no_term_and_no_render(feedback):
    feedback.render = lambda *args: pytest.fail("rendered with nothing to ask")
    try:
        empty = {"user": {}, "supplementary": {}, "imaginative": {}}
        (score,) = feedback.score_many([DOG], [None], [empty], [0])
    finally:
        del feedback.render
    assert score.value is None and score.parts() == {"video": None, "video_instruction": None,
                                                     "video_elements": None}


class FixedReward:
    """A stand-in for the ReaDe reward: a value per completion text."""

    def score_many(self, completions: list[str], key_infos: list[dict]) -> list[RewardResult]:
        return [RewardResult(0.25 + len(text) % 7 / 10, {"format": 0.25, "user": len(text) % 7 / 10, "detail": None,
                                                         "supp": None, "contra": None}, False, True)
                for text in completions]


def test_grpo_total_is_reade_plus_weighted_r_video(grpo_kit, tiny_models, tmp_path):
    data = tmp_path / "rl.jsonl"
    data.write_text(json.dumps({"id": "dog", "instruction": INSTRUCTION, "key_info": KEY_INFO}) + "\n")
    video = VideoFeedbackConfig(generator=str(tiny_models["wan"]), vlm=f"hf:{tiny_models['vlm']}", weight=3.0,
                                **RENDER)
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=data, num_generations=2, seed=5,
                                    video_feedback=video), FixedReward())
    recipe.setup()
    tokenizer = recipe.interpreter.processor.tokenizer

    def fixed_sample(indices, seed, epoch=0):  # the policy's own samples would never hold an answer block
        batch = recipe.interpreter.encode(recipe.requests(indices))
        stop = recipe.stop_ids()[0]
        rows = [tokenizer(text, add_special_tokens=False)["input_ids"] + [stop] for text in (DOG, "plain text")]
        width = max(len(row) for row in rows)
        ids = torch.tensor([row + [stop] * (width - len(row)) for row in rows])
        return batch, ids, completion_mask(ids, recipe.stop_ids())

    recipe.sample = fixed_sample
    recipe.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    texts = [row["completion"] for row in rows]
    expected = recipe.video.score_many(texts, [INSTRUCTION] * 2, [KEY_INFO] * 2,
                                       [render_seed(5, recipe.order.stream_index(0), row) for row in range(2)])
    for row, reade, score in zip(rows, FixedReward().score_many(texts, [KEY_INFO] * 2), expected):
        assert row["parts"]["video"] == pytest.approx(score.value, rel=1e-5)
        assert row["reward"] == pytest.approx(reade.total + 3.0 * score.value, rel=1e-5)
        assert row["video"]["seed"] == score.seed and row["parts"]["user"] == reade.parts["user"]
    assert rows[0]["parts"]["video"] > 0 and rows[0]["video"]["prompt"] == CAPTION["dense"]
    assert len(rows[0]["video"]["questions"]) == 4 and rows[0]["parts"]["video_instruction"] is not None
    assert rows[1]["parts"]["video"] == 0.0 and rows[1]["video"] == {"prompt": None, "seed": None, "questions": []}
    assert recipe.metrics["reward/video"] == pytest.approx((rows[0]["parts"]["video"] + 0.0) / 2, rel=1e-5)
    info = json.loads((tmp_path / "run" / "vidcli.json").read_text())
    assert info["reward"]["kind"] == "video-feedback"
    assert info["reward"]["video_feedback"]["generator"] == str(tiny_models["wan"])
    assert info["reward"]["video_feedback"]["weight"] == 3.0
    recipe.cleanup()


def test_a_drf_tune_lora_output_renders_with_its_adapter_fused(tiny_models, tmp_path):
    """A drf-tune --finetune lora folder (links to the base, adapter file beside) loads as base + adapter."""
    import os

    from diffusers import WanPipeline, WanTransformer3DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from vidcli.rewards.video_feedback import load_generator
    from vidcli.diffusion import LORA_WEIGHTS

    base, out = tiny_models["wan"], tmp_path / "drf"
    out.mkdir()
    for entry in base.iterdir():  # the layout drf-tune's save_pipeline writes
        if entry.name == "model_index.json":
            (out / entry.name).write_bytes(entry.read_bytes())
        elif entry.is_dir():
            os.symlink(entry.resolve(), out / entry.name, target_is_directory=True)
    dit = WanTransformer3DModel.from_pretrained(base, subfolder="transformer")
    lora = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k"], init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dit.add_adapter(lora)
    WanPipeline.save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(dit), weight_name=LORA_WEIGHTS,
                                  transformer_lora_adapter_metadata=lora.to_dict())
    loaded = load_generator(out).pipe.transformer
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 4, 4), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 8, 32), return_dict=False)
    with torch.no_grad():
        got, tuned = loaded(**inputs)[0], dit(**inputs)[0]
        dit.disable_adapters()
        plain = dit(**inputs)[0]
    assert (got - tuned).abs().max() < 1e-5 and (got - plain).abs().max() > 1e-2
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_resume_refuses_a_checkpoint_trained_with_another_reward(grpo_kit, tiny_models, tmp_path):
    from vidcli.errors import InputError
    from vidcli.train.checkpoint import read_run_info

    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    (folder / "vidcli.json").write_text(json.dumps({"finetune": "lora", "reward": {"kind": "video-feedback"}}))
    saved = read_run_info(folder)
    GRPORecipe(make_config(grpo_kit, tmp_path / "a", finetune="lora", video_feedback=VideoFeedbackConfig(
        generator=str(tiny_models["wan"]), vlm=f"hf:{tiny_models['vlm']}")))._check_same_run(folder, saved)
    with pytest.raises(InputError, match="was trained with --reward video-feedback"):
        GRPORecipe(make_config(grpo_kit, tmp_path / "b", finetune="lora"))._check_same_run(folder, saved)
