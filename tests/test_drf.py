"""The Diffusion-DRF recipe on the tiny Wan pipeline and tiny Qwen2.5-VL: loss, gradients, freezing, LoRA."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidcli.errors import InputError
from vidcli.train.core import OptimConfig, RunConfig
from vidcli.train.drf import DRFConfig, DRFRecipe, load_tasks

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BALL = Path(__file__).resolve().parent.parent / "examples" / "media" / "ball.mp4"
TA = {"dim": "TA", "key": "objects", "question": "Is there a red ball?",
      "reference": {"answer": "Yes", "explanation": "A red ball rolls over the grass."}}
VQ = {"dim": "VQ", "key": "quality", "question": "Compared with the second video, is the first one blurry?",
      "reference": {"answer": "No", "issue": "none", "explanation": "The frames are sharp."}}
RECORD = {"id": "ball", "caption": "a red ball rolls over green grass", "video": "ball.mp4", "questions": [TA, VQ]}



def write_records(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BALL, folder / "ball.mp4")
    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def drf_kit(tmp_path_factory):
    """Tiny generator and VLM folders and one decomposed caption record with a real reference video."""
    from vidcli.testing import ensure_tiny_models

    paths = ensure_tiny_models(["wan", "vlm"])
    return {"wan": paths["wan"], "vlm": paths["vlm"],
            "records": write_records(tmp_path_factory.mktemp("drf-data"), [RECORD])}


def make_config(kit, out: Path, **overrides) -> DRFConfig:
    run_keys = {"seed", "max_steps", "save_every", "resume"}
    run_args = {"seed": 0, "max_steps": 1, "save_every": 0, "batch_size": 1, "grad_accum": 1,
                "mixed_precision": "no"}
    run_args.update({k: overrides.pop(k) for k in list(overrides) if k in run_keys})
    optim = OptimConfig(lr=1e-3, weight_decay=0.0, warmup_steps=0, schedule="constant")
    args = dict(model=str(kit["wan"]), vlm=str(kit["vlm"]), inputs=[str(kit["records"])], frames_vlm=3, k_grad=1,
                steps=2, guidance=1.0, height=32, width=32, frames=5)
    args.update(overrides)
    return DRFConfig(run=RunConfig(output_dir=out, optim=optim, **run_args), **args)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def frozen_parts(recipe: DRFRecipe) -> dict[str, torch.nn.Module]:
    pipe = recipe.adapter.pipe
    return {"vae": pipe.vae, "text_encoder": pipe.text_encoder, "vlm": recipe.scorer.model}


def assert_unchanged(before: dict[str, torch.Tensor], module: torch.nn.Module, label: str) -> None:
    for name, param in module.named_parameters():
        assert torch.equal(before[name], param.detach()), f"{label}.{name} changed"


# ----------------------------------------------------------------------------- one step


def test_one_step_trains_only_the_dit_on_the_vqa_loss_of_its_frames(drf_kit, tmp_path):
    from vidcli.rewards.vlm import vqa_loss

    recipe = DRFRecipe(make_config(drf_kit, tmp_path / "run"))
    recipe.setup()
    dit = recipe.adapter.trainable_module()
    dit_before = snapshot(dit)
    frozen_before = {k: snapshot(m) for k, m in frozen_parts(recipe).items()}

    (result,) = recipe.optimise()  # one record per step and process

    # The step's loss is L_VQA recomputed by the reward library on the frames the step decoded.
    task = recipe.tasks[0]
    frames = result["frames"].clone().requires_grad_(True)
    reference, reference_fps = recipe.reference_frames(task)
    expected = vqa_loss(recipe.scorer, frames, task.questions, reference_frames=reference,
                        fps=recipe.generated_fps(), reference_fps=reference_fps)
    assert result["loss"] == pytest.approx(expected.item(), rel=1e-5)
    # Back-propagating query by query gives the frames the same gradient as one backward of the sum.
    expected.backward()
    torch.testing.assert_close(result["frame_grad"], frames.grad, rtol=1e-4, atol=1e-7)
    assert result["frame_grad"].abs().sum() > 0

    # Every DiT parameter moved (no weight decay here: a change means a gradient); nothing else did.
    changed = [n for n, p in dit.named_parameters() if not torch.equal(dit_before[n], p.detach())]
    assert len(changed) == len(dit_before)
    for label, module in frozen_parts(recipe).items():
        assert_unchanged(frozen_before[label], module, label)

    # rewards.jsonl: one line per step and record with each query's log-likelihood.
    (line,) = (tmp_path / "run" / "rewards.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["step"] == 1 and entry["id"] == "ball"
    assert [(q["dim"], q["key"]) for q in entry["queries"]] == [("TA", "objects"), ("VQ", "quality")]
    assert sum(q["loglik"] for q in entry["queries"]) == pytest.approx(-entry["loss"], rel=1e-6)
    recipe.cleanup()


def test_each_question_gets_its_share_of_the_frame_gradient_and_a_heatmap_row(drf_kit, tmp_path):
    from vidcli.train.heatmaps import question_label

    recipe = DRFRecipe(make_config(drf_kit, tmp_path / "run", heatmap_per_question=True,
                                   heatmaps_dir=str(tmp_path / "heat"), heatmap_samples=1))
    recipe.setup()
    try:
        (result,) = recipe.optimise()
        figure = recipe.heatmap(result)
    finally:
        recipe.cleanup()
    ta, vq = result["query_grads"]
    torch.testing.assert_close(ta + vq, result["frame_grad"].cpu())  # the shares add up to the whole
    assert ta.abs().sum() > 0 and vq.abs().sum() > 0 and not torch.allclose(ta, vq)
    images = sorted((ax for ax in figure.axes if ax.images), key=lambda ax: (
        ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start))
    assert len(images) == 4 * 3  # frames, the sum, TA, VQ; N_f = 3
    assert [ax.get_ylabel() for ax in images[::3]] == ["frames", "R (sum of all queries)", question_label(TA),
                                                       question_label(VQ)]
    # Frames 0, 2, 4 of a 5-frame Wan video (16 fps).
    assert [ax.get_title() for ax in images[:3]] == ["t = 0.00 s", "t = 0.12 s", "t = 0.25 s"]
    assert RECORD["caption"] in figure.get_suptitle()
    assert (tmp_path / "heat" / "step000001-ball.png").is_file()


@pytest.mark.parametrize("reward", ["vanilla", "binary"])
def test_vanilla_and_binary_losses_match_the_reward_library(drf_kit, tmp_path, reward):
    from vidcli.rewards.vlm import vanilla_reward, vqa_loss

    recipe = DRFRecipe(make_config(drf_kit, tmp_path / "run", reward=reward, dims=("TA",)))
    recipe.setup()
    task = recipe.tasks[0]
    result = recipe.train_step(task)
    with torch.no_grad():
        if reward == "vanilla":
            expected = -vanilla_reward(recipe.scorer, result["frames"], task.prompt, fps=recipe.generated_fps())
            assert [q["dim"] for q in result["queries"]] == ["vanilla"]
        else:
            expected = vqa_loss(recipe.scorer, result["frames"], task.questions, fps=recipe.generated_fps(),
                                verdict_only=True)
            assert [q["key"] for q in result["queries"]] == ["objects"]  # --dims TA drops the VQ question
    assert result["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in recipe.trainable)
    recipe.cleanup()


def test_the_vlm_is_told_the_real_rate_of_the_frames_it_sees(drf_kit, tmp_path):
    """Generated: N_f of --frames frames at the generator's 16 fps; reference: frames over the real video's length."""
    from vidcli.media import probe_video

    told = {}
    for name, fps in (("real", None), ("given", 2.0)):
        recipe = DRFRecipe(make_config(drf_kit, tmp_path / name, fps=fps))  # 3 of 5 frames; TA and VQ
        recipe.setup()
        seen = recipe.scorer.video_pixels
        recipe.scorer.video_pixels = (lambda frames, rate, _seen=seen, _name=name:
                                      told.setdefault(_name, []).append(rate) or _seen(frames, rate))
        recipe.train_step(recipe.tasks[0])
        recipe.cleanup()
    real_rate = 3 / probe_video(BALL).duration_s  # N_f = 3 frames spread over the whole clip
    # Per query: the TA query sees the generated frames; the VQ query the generated and the real ones.
    assert told["real"] == [pytest.approx(16 * 3 / 5)] * 2 + [pytest.approx(real_rate)]
    assert told["given"] == [2.0, 2.0, pytest.approx(real_rate)]


def test_records_that_teach_a_defect_are_counted_in_one_warning(drf_kit, tmp_path, caplog):
    defect = {**VQ, "reference": {"answer": "Yes", "issue": "blur", "explanation": "The frames are soft."},
              "undesired": True}
    records = [RECORD, {**RECORD, "id": "soft", "questions": [TA, defect]},
               {**RECORD, "id": "soft2", "questions": [TA, defect]}]
    path = write_records(tmp_path / "data", records)
    with caplog.at_level("WARNING", logger="vidcli.train"):
        load_tasks(make_config({**drf_kit, "records": path}, tmp_path / "run"))
        load_tasks(make_config({**drf_kit, "records": path}, tmp_path / "run", dims=("TA",)))  # VQ left out
    (warning,) = [r.getMessage() for r in caplog.records if "desired verdict" in r.getMessage()]
    assert warning.startswith("2 of 3 records (e.g. soft)")


def test_memory_flags_leave_the_gradient_unchanged(drf_kit, tmp_path):
    """Checkpointing inside the DiT and per denoising step trade time for memory, never the gradient."""
    grads = {}
    for name, flags in {"default": {}, "dit": {"gradient_checkpointing": True},
                        "none": {"checkpoint_steps": False}}.items():
        recipe = DRFRecipe(make_config(drf_kit, tmp_path / name, dims=("TA",), k_grad=2, **flags))
        recipe.setup()
        dit = recipe.adapter.trainable_module()
        assert dit.gradient_checkpointing == (name == "dit")
        recipe.train_step(recipe.tasks[0])
        grads[name] = {n: p.grad.clone() for n, p in dit.named_parameters() if p.grad is not None}
        recipe.cleanup()
    assert len(grads["default"]) == len(list(dit.parameters()))
    for name in ("dit", "none"):
        assert grads[name].keys() == grads["default"].keys()
        for key, grad in grads["default"].items():
            torch.testing.assert_close(grads[name][key], grad, rtol=1e-4, atol=1e-8)


def test_cogvideox_backbone_trains_and_saves_a_pipeline(drf_kit, tmp_path):
    from diffusers import CogVideoXPipeline

    from vidcli.testing import ensure_tiny_models

    cog = ensure_tiny_models(["cogvideox"])["cogvideox"]
    recipe = DRFRecipe(make_config({**drf_kit, "wan": cog}, tmp_path / "cog", dims=("TA",), frames=9))
    recipe.setup()
    dit = recipe.adapter.trainable_module()
    before, vae_before = snapshot(dit), snapshot(recipe.adapter.pipe.vae)
    recipe.optimise()
    assert any(not torch.equal(before[n], p.detach()) for n, p in dit.named_parameters())
    assert_unchanged(vae_before, recipe.adapter.pipe.vae, "vae")
    final = recipe.save_checkpoint(final=True)
    recipe.cleanup()
    state = CogVideoXPipeline.from_pretrained(final).transformer.state_dict()
    assert all(torch.equal(state[n], p.detach()) for n, p in dit.named_parameters())


def test_shift_sets_the_flow_schedulers_shift_and_is_saved_with_the_pipeline(drf_kit, tmp_path):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from vidcli.testing import ensure_tiny_models

    recipe = DRFRecipe(make_config(drf_kit, tmp_path / "run", dims=("TA",), shift=5.0, steps=4))
    recipe.setup()
    # The sigmas the rollout steps through: σ' = 5σ / (1 + 4σ) over UniPC's flow sigmas, by hand.
    base = UniPCMultistepScheduler.from_pretrained(drf_kit["wan"], subfolder="scheduler")
    assert base.config.flow_shift == 3.0  # the checkpoint's own
    sigmas = np.linspace(1.0, 1 / 1000, 4 + 1)[:-1]
    expected = 5 * sigmas / (1 + 4 * sigmas) * 1000
    sampler = recipe.adapter.make_sampler(4)
    np.testing.assert_allclose(sampler.timesteps.numpy(), expected.astype(np.int64), atol=1)
    recipe.optimise()
    final = recipe.save_checkpoint(final=True)
    recipe.cleanup()
    assert not (final / "scheduler").is_symlink() and (final / "transformer").is_dir()
    assert WanPipeline.from_pretrained(final).scheduler.config.flow_shift == 5.0
    assert UniPCMultistepScheduler.from_pretrained(drf_kit["wan"], subfolder="scheduler").config.flow_shift == 3.0
    # CogVideoX samples with DDIM: no flow shift to set.
    cog = ensure_tiny_models(["cogvideox"])["cogvideox"]
    recipe = DRFRecipe(make_config({**drf_kit, "wan": cog}, tmp_path / "cog", dims=("TA",), frames=9, shift=5.0))
    with pytest.raises(InputError, match="--shift: the pipeline's CogVideoXDDIMScheduler is not a flow-matching"):
        recipe.setup()
    recipe.cleanup()


# ----------------------------------------------------------------------------- LoRA


def test_lora_trains_only_adapters_and_loads_with_diffusers(drf_kit, tmp_path):
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    out = tmp_path / "lora"
    recipe = DRFRecipe(make_config(drf_kit, out, finetune="lora", lora_rank=4, lora_alpha=8))
    recipe.setup()
    dit = recipe.adapter.trainable_module()
    before = snapshot(dit)
    frozen_before = {k: snapshot(m) for k, m in frozen_parts(recipe).items()}
    recipe.optimise()
    changed = {n for n, p in dit.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)
    assert {n for n, p in dit.named_parameters() if p.requires_grad} == {n for n in before if "lora_" in n}
    for label, module in frozen_parts(recipe).items():
        assert_unchanged(frozen_before[label], module, label)
    recipe.save_checkpoint()  # checkpoint-1: what --resume starts from (the final folder has no trainer state)
    final = recipe.save_checkpoint(final=True)
    recipe.cleanup()

    # The output folder is a pipeline; with its LoRA weights loaded it computes what the tuned DiT computes.
    pipe = WanPipeline.from_pretrained(final)
    pipe.load_lora_weights(final)
    torch.manual_seed(0)
    x, text = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 7, 32)
    t = torch.tensor([500])
    dit.eval()
    with torch.no_grad():
        ours = dit(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        theirs = pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)

    # --resume puts the saved adapter back on the base model.
    again = DRFRecipe(make_config(drf_kit, out, finetune="lora", lora_rank=4, lora_alpha=8, resume=True))
    again.setup()
    saved, restored = get_peft_model_state_dict(dit), get_peft_model_state_dict(again.adapter.trainable_module())
    assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    assert again.step == 1
    again.cleanup()


# ----------------------------------------------------------------------------- records


def test_records_are_validated_before_training(drf_kit, tmp_path):
    bad = [
        ({"id": "a", "questions": [TA]}, "'caption'"),
        ({"id": "b", "caption": "x", "questions": [VQ]}, "no questions of the dimensions TA"),
        ({"id": "c", "caption": "x", "questions": [{**TA, "reference": None}]}, "reference answer"),
        ({"id": "d", "caption": "x", "video": "missing.mp4", "questions": [TA, VQ]}, "reference video not found"),
        ({"id": "e", "caption": "x"}, "'questions'"),
    ]
    for i, (record, message) in enumerate(bad):
        path = write_records(tmp_path / f"bad{i}", [RECORD, record])
        dims = ("TA",) if record["id"] in ("b", "c") else ("TA", "VQ")
        with pytest.raises(InputError, match=message) as info:
            load_tasks(make_config({**drf_kit, "records": path}, tmp_path / "o", dims=dims))
        assert (info.value.line, info.value.record_id, info.value.file) == (2, record["id"], str(path))
    # Vanilla needs only the caption; TA-only questions need no reference video.
    path = write_records(tmp_path / "ok", [{"id": "v", "caption": "a dog"}])
    (task,), prints = load_tasks(make_config({**drf_kit, "records": path}, tmp_path / "o", reward="vanilla"))
    assert task.prompt == "a dog" and task.questions == [] and task.video is None
    assert prints[str(path)]["records"] == 1
    (task,), _ = load_tasks(make_config(drf_kit, tmp_path / "o", dims=("TA",)))
    assert task.video is None and task.questions == [TA]
