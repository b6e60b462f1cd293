"""The GRPO recipe on the tiny Qwen2.5-VL: rewards reach the loss, loss values, reference, masks, resume."""
from __future__ import annotations

import gc
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from vidcli.errors import BackendError, InputError
from vidcli.rewards.reade import RewardResult
from vidcli.train.core import OptimConfig, RunConfig, seeded_uniform
from vidcli.train.grpo import GRPOConfig, GRPORecipe, completion_mask, run_grpo
from vidcli.train.grpo_loss import grpo_loss
from vidcli.train.interpreter_tuning import record_request

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MEDIA = Path(__file__).parents[1] / "examples" / "media"
KEY_INFO = {"user": {"objects": [{"name": "dog", "attributes": ["brown"]}], "actions": ["runs"]},
            "supplementary": {"objects": [], "camera": ["pans left"]}, "imaginative": {"style": ["cinematic"]}}


class HashReward:
    """A deterministic reward of the completion text alone (stateless, so reruns agree)."""

    def __init__(self) -> None:
        self.calls = 0

    def score_many(self, completions: list[str], key_infos: list[dict]) -> list[RewardResult]:
        self.calls += 1
        out = []
        for text in completions:
            value = hashlib.sha256(text.encode()).digest()[0] / 255
            out.append(RewardResult(value, {"format": 0.0, "user": value, "detail": None, "supp": None,
                                            "contra": None}, False, False))
        return out



@pytest.fixture(scope="session")
def grpo_kit(tmp_path_factory):
    """The plain tiny Qwen2.5-VL, a base interpreter with a camera encoder, and RL records."""
    from vidcli.interpreter.camera_encoder import CameraEncoderConfig
    from vidcli.interpreter.model import Interpreter
    from vidcli.testing import ensure_tiny_models

    root = tmp_path_factory.mktemp("grpo-kit")
    vlm = ensure_tiny_models(["vlm"])["vlm"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        small = CameraEncoderConfig(hidden_size=32, depth=1, num_heads=2, image_size=(32, 32), out_hidden_size=64)
        Interpreter.from_pretrained(str(vlm), device="cpu", dtype="float32", with_camera=True,
                                    camera_config=small).save_pretrained(root / "base")
    media = root / "data" / "media"
    media.mkdir(parents=True)
    for name in ("ball.mp4", "identity_a.png", "camera_dolly_pan.txt", "depth.mp4"):
        shutil.copy(MEDIA / name, media / name)
    records = [
        {"id": "vid", "instruction": "add a dog", "conditions": [{"type": "video", "path": "media/ball.mp4"}],
         "key_info": KEY_INFO},
        {"id": "cam", "instruction": "a dog in a park", "key_info": KEY_INFO,
         "conditions": [{"type": "identity", "path": "media/identity_a.png"},
                        {"type": "camera", "path": "media/camera_dolly_pan.txt"}]},
        {"id": "txt", "instruction": "a brown dog runs", "key_info": KEY_INFO},
        {"id": "dep", "instruction": "a dog", "key_info": KEY_INFO,
         "conditions": [{"type": "depth", "path": "media/depth.mp4"}]},
    ]
    data = root / "data" / "rl.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return {"vlm": vlm, "base": root / "base", "data": data, "video_only": _only(root, records[0])}


def _only(root: Path, record: dict) -> Path:
    path = root / "data" / "video.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path


def make_config(kit, out: Path, **overrides) -> GRPOConfig:
    run_keys = {"seed", "max_steps", "batch_size", "grad_accum", "save_every", "resume"}
    run_args = {"seed": 0, "max_steps": 1, "batch_size": 1, "grad_accum": 1, "save_every": 0, "mixed_precision": "no"}
    run_args.update({k: overrides.pop(k) for k in list(overrides) if k in run_keys})
    optim = overrides.pop("optim", OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant", weight_decay=0.0))
    # LoRA and no instruction dropout unless a test asks: each test checks one thing.
    args = {"model": str(kit["base"]), "inputs": [str(overrides.pop("data", kit["data"]))], "finetune": "lora",
            "instruction_dropout": 0.0, "num_generations": 4, "max_completion_tokens": 8, "video_frames": 4,
            **overrides}
    return GRPOConfig(run=RunConfig(output_dir=out, optim=optim, **run_args), **args)


def sequence_logp(recipe, rollout) -> torch.Tensor:
    """Summed log-prob of each completion under the recipe's current policy (eval mode, float64)."""
    interp = recipe.interpreter
    interp.model.eval()
    with torch.no_grad():
        logits = interp.forward(rollout.batch).logits.double()
    width = rollout.completion_mask.size(1)
    scores = torch.log_softmax(logits[:, -width - 1:-1], dim=-1)
    picked = scores.gather(-1, rollout.batch["input_ids"][:, -width:].unsqueeze(-1)).squeeze(-1)
    return (picked * rollout.completion_mask).sum(dim=1)


# ----------------------------------------------------------------------------- rewards reach the loss


def test_one_step_raises_the_best_completion_and_lowers_the_worst(grpo_kit, tmp_path):
    """Video-conditioned prompt, G = 4: after one step the top reward's completion is likelier."""
    reward = HashReward()
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=grpo_kit["video_only"], finetune="full",
                                    beta=0.0), reward)
    recipe.setup()
    assert "pixel_values_videos" in recipe.sample([0], 1)[0]
    rollout = recipe.rollout(0, [0])  # the same rollout the first step will sample (seeded by position)
    totals = torch.tensor([r.total for r in rollout.rewards])
    assert len(set(rollout.texts)) == 4 and len(set(totals.tolist())) == 4
    before = sequence_logp(recipe, rollout)
    with torch.no_grad():
        step_loss, _ = recipe.policy_loss(rollout)
    recipe.train()
    assert recipe.metrics["loss"] == pytest.approx(step_loss.item(), abs=1e-6)  # the step's loss is this one
    after = sequence_logp(recipe, rollout)
    best, worst = int(totals.argmax()), int(totals.argmin())
    assert after[best] > before[best]
    assert after[worst] < before[worst]
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == rollout.texts  # the step trained on exactly this rollout
    recipe.cleanup()


def test_loss_equals_grpo_loss_from_the_model_logits(grpo_kit, tmp_path):
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", finetune="lora", batch_size=2, beta=0.04,
                                    optim=OptimConfig(lr=5e-2, warmup_steps=0, schedule="constant")), HashReward())
    recipe.setup()
    recipe.train()  # one step, so the adapters differ from the reference and the KL term is not 0
    rollout = recipe.rollout(7, [1, 2])  # identity image + camera tokens; text only
    assert rollout.batch["input_ids"].shape[0] == 8 and "camera_maps" in rollout.batch
    recipe.module.eval()  # no adapter dropout: both sides see the same function
    params = [p for p in recipe.trainable]

    def grads(loss):
        recipe.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.clone() for p in params]

    loss, metrics = recipe.policy_loss(rollout)
    got = grads(loss)
    interp, mask = recipe.interpreter, rollout.completion_mask
    width = mask.size(1)
    targets = rollout.batch["input_ids"][:, -width:].unsqueeze(-1)

    def picked(logits):
        return torch.log_softmax(logits[:, -width - 1:-1].float(), dim=-1).gather(-1, targets).squeeze(-1) * mask

    with torch.no_grad(), interp.model.disable_adapter():
        ref = picked(interp.forward(rollout.batch).logits)
    rewards = torch.tensor([r.total for r in rollout.rewards]).view(-1, 4)
    advantages = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1)
    assert torch.allclose(rollout.advantages, advantages, atol=1e-5)
    assert torch.allclose(rollout.ref_logp, ref, atol=1e-5)
    expected, expected_metrics = grpo_loss(picked(interp.forward(rollout.batch).logits), None, ref, advantages,
                                           mask, beta=0.04)
    assert metrics["kl"].item() > 1e-4  # the penalty is really in the value
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-7)
    assert metrics["kl"].item() == pytest.approx(expected_metrics["kl"].item(), rel=1e-4)
    for a, b in zip(got, grads(expected)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    recipe.cleanup()


def test_lora_reference_is_the_base_model_without_a_copy(grpo_kit, tmp_path):
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=grpo_kit["video_only"], finetune="lora",
                                    max_steps=2, optim=OptimConfig(lr=5e-2, warmup_steps=0, schedule="constant")),
                        HashReward())
    recipe.setup()
    recipe.train()
    assert recipe.reference is None
    gc.collect()
    with warnings.catch_warnings():  # isinstance on every live object touches deprecated module attributes
        warnings.simplefilter("ignore")
        models = [o for o in gc.get_objects() if isinstance(o, Qwen2_5_VLForConditionalGeneration)]
    assert len(models) == 1  # the policy's base, nothing else
    rollout = recipe.rollout(5, [0])
    base = AutoModelForImageTextToText.from_pretrained(grpo_kit["base"], dtype=torch.float32).eval()
    inputs = {k: v for k, v in rollout.batch.items() if k != "camera_maps"}
    width = rollout.completion_mask.size(1)
    with torch.no_grad():
        logits = base(**inputs).logits[:, -width - 1:-1]
    expected = torch.log_softmax(logits, -1).gather(-1, inputs["input_ids"][:, -width:, None]).squeeze(-1)
    expected = expected * rollout.completion_mask
    assert torch.allclose(rollout.ref_logp, expected, atol=1e-4)
    recipe.module.eval()
    with torch.no_grad():
        policy = recipe._logp(rollout.batch, rollout.completion_mask)
    assert (policy - rollout.ref_logp).abs().max() > 1e-3  # the adapters did move the policy
    recipe.cleanup()


def test_full_finetuning_keeps_a_frozen_reference(grpo_kit, tmp_path):
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=grpo_kit["video_only"], finetune="full"),
                        HashReward())
    recipe.setup()
    ref = recipe.reference
    assert ref is not None and ref.model is not recipe.interpreter.model
    assert all(not p.requires_grad for p in ref.model.parameters())
    assert all(not p.requires_grad for p in recipe.interpreter.camera_encoder.parameters())
    before = {n: p.clone() for n, p in ref.model.named_parameters()}
    recipe.train()
    for name, value in ref.model.named_parameters():
        assert torch.equal(value, before[name]), name
    recipe.cleanup()


def test_an_sft_adapter_as_model_is_merged_and_becomes_the_reference(grpo_kit, tmp_path):
    from vidcli.interpreter.model import Interpreter
    from vidcli.train.sft import SFTConfig, run_sft

    cot = tmp_path / "cot.jsonl"
    cot.write_text(json.dumps({"id": "a", "instruction": "a dog", "cot": {"target": "<think>x</think>"}}) + "\n")
    sft_run = RunConfig(output_dir=tmp_path / "sft", max_steps=1, batch_size=1, grad_accum=1, save_every=0,
                        mixed_precision="no", optim=OptimConfig(lr=5e-2, warmup_steps=0))
    run_sft(SFTConfig(model=str(grpo_kit["base"]), inputs=[str(cot)], run=sft_run, finetune="lora"))
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=grpo_kit["video_only"], finetune="lora"),
                        HashReward())
    recipe.config.model = str(tmp_path / "sft")
    recipe.setup()
    rollout = recipe.rollout(0, [0])
    sft = Interpreter.from_pretrained(str(tmp_path / "sft"), device="cpu", dtype="float32")
    width = rollout.completion_mask.size(1)
    with torch.no_grad():
        logits = sft.forward(rollout.batch).logits[:, -width - 1:-1]
    expected = torch.log_softmax(logits, -1).gather(-1, rollout.batch["input_ids"][:, -width:, None]).squeeze(-1)
    assert torch.allclose(rollout.ref_logp, expected * rollout.completion_mask, atol=1e-4)
    recipe.cleanup()


def test_omni_with_audio_and_pose_conditions(grpo_kit, tmp_path):
    """Qwen2.5-Omni thinker: audio and pose reach the policy; one step favours the best completion."""
    from vidcli.testing import ensure_tiny_models

    omni = ensure_tiny_models(["omni"])["omni"]
    media = tmp_path / "media"
    media.mkdir()
    for name in ("tone.wav", "pose.mp4"):
        shutil.copy(MEDIA / name, media / name)
    data = tmp_path / "omni.jsonl"
    data.write_text(json.dumps({"id": "ap", "instruction": "dance to this", "key_info": KEY_INFO, "conditions": [
        {"type": "audio", "path": "media/tone.wav"}, {"type": "pose", "path": "media/pose.mp4"}]}) + "\n")
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=data, finetune="full", beta=0.0,
                                    optim=OptimConfig(lr=1e-4, warmup_steps=0, schedule="constant")), HashReward())
    recipe.config.model = str(omni)
    recipe.setup()
    rollout = recipe.rollout(0, [0])
    assert "input_features" in rollout.batch and "pixel_values_videos" in rollout.batch
    totals = torch.tensor([r.total for r in rollout.rewards])
    before = sequence_logp(recipe, rollout)
    recipe.train()
    after = sequence_logp(recipe, rollout)
    assert after[int(totals.argmax())] > before[int(totals.argmax())]
    assert after[int(totals.argmin())] < before[int(totals.argmin())]
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == rollout.texts
    recipe.cleanup()


def test_gradient_checkpointing_gives_the_same_step(grpo_kit, tmp_path):
    results = []
    for flag in (False, True):
        recipe = GRPORecipe(make_config(grpo_kit, tmp_path / f"gc-{flag}", finetune="full", beta=0.1,
                                        gradient_checkpointing=flag), HashReward())
        recipe.setup()
        recipe.train()
        results.append({n: p.detach().clone() for n, p in recipe.interpreter.model.named_parameters()})
        recipe.cleanup()
    for name, value in results[0].items():
        assert torch.allclose(value, results[1][name], atol=1e-6), name


# ----------------------------------------------------------------------------- masks and logs


def test_completion_mask_stops_after_the_first_end_token():
    ids = torch.tensor([[5, 6, 9, 7, 9], [9, 1, 2, 3, 4], [1, 2, 3, 4, 5], [1, 8, 2, 9, 3]])
    expected = [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert completion_mask(ids, [9, 8]).tolist() == expected


def test_sampled_completions_are_masked_after_end_of_turn(grpo_kit, tmp_path):
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", max_completion_tokens=24, num_generations=8),
                        HashReward())
    recipe.setup()
    stops = recipe.stop_ids()
    assert recipe.interpreter.processor.tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    ended = 0
    for seed in range(40):  # a random tiny model rarely ends a turn: sample until some rows did
        _, ids, mask = recipe.sample([2], seed=seed)
        for row, row_mask in zip(ids.tolist(), mask.tolist()):
            first = next((i for i, t in enumerate(row) if t in stops), None)
            keep = len(row) if first is None else first + 1
            assert row_mask == [1] * keep + [0] * (len(row) - keep)
            ended += first is not None and first + 1 < len(row)
        if ended:
            break
    assert ended  # some sample ended early, so masking was exercised
    config = recipe.interpreter.model.config
    placeholders = recipe.placeholder_ids()
    assert {config.image_token_id, config.video_token_id, recipe.interpreter.camera_token_id} <= set(placeholders)
    recipe.cleanup()


def test_rollouts_jsonl_and_metrics(grpo_kit, tmp_path):
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", batch_size=2, grad_accum=2, max_steps=2,
                                    num_iterations=2, finetune="lora"), HashReward())
    recipe.setup()
    recipe.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    # μ = 2: one rollout of 2 micro-batches × 2 prompts × G = 4 serves both steps.
    assert len(rows) == 16 and {r["step"] for r in rows} == {1}
    assert [r["sample"] for r in rows[:4]] == [0, 1, 2, 3]
    for group in range(4):
        chunk = rows[group * 4:(group + 1) * 4]
        assert len({r["prompt_id"] for r in chunk}) == 1
        rewards = torch.tensor([r["reward"] for r in chunk])
        expected = (rewards - rewards.mean()) / (rewards.std() + 1e-4)
        assert [r["advantage"] for r in chunk] == pytest.approx(expected.tolist(), abs=1e-5)
        for r in chunk:
            assert r["parts"]["user"] == r["reward"] and r["errors"] == {} and 1 <= r["length"] <= 8
    metrics = recipe.metrics
    assert metrics["reward"] == pytest.approx(sum(r["reward"] for r in rows) / 16, abs=1e-6)
    assert metrics["completion_length"] == pytest.approx(sum(r["length"] for r in rows) / 16)
    for key in ("loss", "kl", "clip_ratio/region_mean", "reward/user", "lr", "grad_norm"):
        assert key in metrics, key
    assert "reward/detail" not in metrics  # no completion had that part
    assert metrics["ratio_mean"] != 1.0  # the second step's ratio is against the sampling policy
    recipe.cleanup()


def test_a_failing_judge_is_recorded_not_fatal(grpo_kit, tmp_path):
    class DownJudge:
        detects_contradiction = True

        def coverage(self, tasks):
            raise BackendError("judge endpoint unreachable")

        def close(self):
            pass

    from vidcli.rewards.reade import ReadeReward

    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", data=grpo_kit["video_only"]), ReadeReward(DownJudge()))
    recipe.setup()
    before = {n: p.detach().clone() for n, p in recipe.interpreter.model.named_parameters() if p.requires_grad}
    recipe.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert row["errors"] == {"judge": "judge endpoint unreachable"}
        assert row["parts"]["user"] is None and row["masked"] and row["advantage"] == 0.0
    # Nothing was scored, so nothing was learnt (no loss, not even the KL term).
    assert recipe.metrics["masked"] == 4 and recipe.metrics["loss"] == 0.0 and "reward" not in recipe.metrics
    for name, param in recipe.interpreter.model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, before[name]), name
    recipe.cleanup()


class FlakyReward(HashReward):
    """HashReward, except that the judge "fails" on chosen rows of every batch."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__()
        self.failing = failing

    def score_many(self, completions, key_infos):
        results = super().score_many(completions, key_infos)
        for i in self.failing:
            results[i] = RewardResult(0.3, {**results[i].parts, "user": None}, False, False,
                                      {"user": "element 'dog': judge call failed: HTTP 500"})
        return results


def test_failed_judgements_are_masked_not_scored(grpo_kit, tmp_path):
    from vidcli.train.grpo_loss import group_advantages

    # Two prompts of G = 4: group 0 loses row 1; group 1 keeps only row 4, too few to compare.
    failing = {1, 5, 6, 7}
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", batch_size=2, beta=0.1,
                                    optim=OptimConfig(lr=5e-2, warmup_steps=0, schedule="constant")),
                        FlakyReward(failing))
    recipe.setup()
    rollout = recipe.rollout(0, [0, 2])
    assert rollout.scored.tolist() == [True, False, True, True, False, False, False, False]
    totals = torch.tensor([r.total for r in rollout.rewards])
    expected = group_advantages(totals[[0, 2, 3]], 3)
    assert rollout.advantages[[0, 2, 3]].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert rollout.advantages[[1, 4, 5, 6, 7]].tolist() == [0.0] * 5
    loss, _ = recipe.policy_loss(rollout)
    logp = recipe._logp(rollout.batch, rollout.completion_mask)
    alone, _ = grpo_loss(logp[[0, 2, 3]], None, rollout.ref_logp[[0, 2, 3]], rollout.advantages[[0, 2, 3]],
                         rollout.completion_mask[[0, 2, 3]], beta=0.1)
    assert loss.item() == pytest.approx(alone.item(), rel=1e-5)  # as if the masked rows were not there
    recipe.train()
    assert recipe.metrics["masked"] == 5 and recipe.metrics["judge_errors"] == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert [r["masked"] for r in rows] == [i not in (0, 2, 3) for i in range(8)]
    assert rows[1]["errors"] == {"user": "element 'dog': judge call failed: HTTP 500"}
    recipe.cleanup()


# ----------------------------------------------------------------------------- resume and input


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_resume_in_process_is_exact(grpo_kit, tmp_path, finetune):
    from safetensors.torch import load_file

    weights = "model.safetensors" if finetune == "full" else "adapter_model.safetensors"
    common = dict(finetune=finetune, max_steps=3, save_every=2, batch_size=1, grad_accum=2, beta=0.1)
    run_grpo(make_config(grpo_kit, tmp_path / "whole", **common), HashReward())
    (tmp_path / "cut").mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    lines = (tmp_path / "whole" / "rollouts.jsonl").read_text().splitlines()
    # The killed run had logged part of step 3 (and a torn line) before it died.
    (tmp_path / "cut" / "rollouts.jsonl").write_text("\n".join(lines[:-2]) + '\n{"step": 3, "comp')
    run_grpo(make_config(grpo_kit, tmp_path / "cut", resume=True, **common), HashReward())
    a, b = load_file(tmp_path / "whole" / weights), load_file(tmp_path / "cut" / weights)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (tmp_path / "cut" / "rollouts.jsonl").read_text().splitlines() == lines
    info = json.loads((tmp_path / "cut" / "vidcli.json").read_text())
    assert info["step"] == 3 and info["command"] == "grpo" and info["finetune"] == finetune


def test_records_need_key_info(grpo_kit, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "k", "instruction": "a dog"}) + "\n")
    with pytest.raises(InputError, match=rf"^{data}:1: id=k: missing field 'key_info'"):
        run_grpo(make_config(grpo_kit, tmp_path / "run", data=data), HashReward())
    data.write_text(json.dumps({"id": "k", "instruction": "a dog", "key_info": {"user": {}}}) + "\n")
    with pytest.raises(InputError, match=r"id=k: field 'key_info': missing group"):
        run_grpo(make_config(grpo_kit, tmp_path / "run", data=data), HashReward())


def test_defaults_are_the_papers_stage_2():
    config = GRPOConfig(model="m", inputs=["d"], run=RunConfig(output_dir=Path("x")))
    assert (config.finetune, config.instruction_dropout, config.judge) == ("full", 0.4, None)
    assert (config.max_prompt_tokens, config.max_prompt_tokens_dense) == (1024, 2048)
    with pytest.raises(ValueError, match="choose a judge with --judge"):
        GRPORecipe(config).setup()  # no reward model and no judge: refused before anything loads


def test_instruction_dropout_in_stage_2(grpo_kit, tmp_path, monkeypatch):
    from vidcli.interpreter.messages import NO_INSTRUCTION

    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "run", instruction_dropout=0.4, seed=3), HashReward())
    recipe.setup()
    seen = set()
    for epoch in range(6):
        requests = recipe.requests([1, 2], epoch)  # identity + camera; text only
        assert len(requests) == 8  # G samples of each prompt, alike
        dropped = seeded_uniform(3, epoch, 1) < 0.4
        assert all(r.instruction == ("" if dropped else "a dog in a park") for r in requests[:4])
        assert all(r.instruction == "a brown dog runs" for r in requests[4:])  # nothing else to go on
        text = requests[0].conversation[-1]["content"][-1]["text"]
        assert (NO_INSTRUCTION in text) == dropped
        seen.add(dropped)
    assert seen == {True, False}
    # A rollout takes the epoch from its data position.
    asked = []
    original = recipe.requests
    monkeypatch.setattr(recipe, "requests", lambda indices, epoch=0: asked.append(epoch) or original(indices, epoch))
    per_epoch = recipe.order.batches_per_epoch
    recipe.rollout(per_epoch * 2 + 1, [1])
    assert asked == [2]
    recipe.cleanup()


def test_prompt_lengths_are_checked_before_the_first_step(grpo_kit, tmp_path, caplog):
    reward = HashReward()
    probe = GRPORecipe(make_config(grpo_kit, tmp_path / "probe"), reward)
    probe.setup()
    lengths = {p.source.id: int(probe.interpreter.encode([record_request(p.source, probe.config)])
                                ["attention_mask"].sum()) for p in probe.prompts}
    probe.cleanup()
    limit = lengths["txt"]  # text only: the shortest; the depth record has a limit of its own
    over = [rid for rid in ("vid", "cam") if lengths[rid] > limit]
    assert over == ["vid", "cam"]
    config = make_config(grpo_kit, tmp_path / "run", max_prompt_tokens=limit, max_prompt_tokens_dense=4096)
    with caplog.at_level("ERROR", logger="vidcli.train"), \
            pytest.raises(InputError, match=r"^2 of 4 prompt\(s\) are over their token limit"):
        GRPORecipe(config, reward).setup()
    data = grpo_kit["data"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"{data}:{line}: id={rid}: the prompt is {lengths[rid]} tokens long, over the limit of {limit}"
        for line, rid in ((1, "vid"), (2, "cam"))]
    assert reward.calls == 0  # nothing was sampled
    recipe = GRPORecipe(make_config(grpo_kit, tmp_path / "dropped", max_prompt_tokens=limit,
                                    max_prompt_tokens_dense=4096, drop_long_prompts=True), reward)
    recipe.setup()
    assert [p.source.id for p in recipe.prompts] == ["txt", "dep"]
    recipe.cleanup()


def test_config_checks():
    run = RunConfig(output_dir=Path("x"), save_every=3)
    with pytest.raises(ValueError, match="divide save_every"):
        GRPOConfig(model="m", inputs=["d"], run=run, num_iterations=2)
    with pytest.raises(ValueError, match="at least 2"):
        GRPOConfig(model="m", inputs=["d"], run=run, num_generations=1)
