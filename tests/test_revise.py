"""The ReViSE recipe on the tiny Wan pipeline and tiny Qwen2.5-VL: editor layout, gating, losses, freezing."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from vidcli.errors import InputError
from vidcli.rewards.critic import VERDICT_CUE, critic_checks
from vidcli.train.core import OptimConfig, RunConfig
from vidcli.train.revise import ReviseConfig, ReviseRecipe, load_triplets, shifted_t, trigger_probability

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "media"
BALL = {"id": "ball-later", "instruction": "show where the ball will be a moment later",
        "source": {"video": "ball.mp4", "start": 0.0, "end": 1.5},
        "target": {"video": "ball.mp4", "start": 1.5, "end": 3.0}, "subset": "icvg"}
SQUARES = {"id": "squares-calm", "instruction": "make the scene feel calmer",
           "source": {"video": "squares.mp4", "start": 0.0, "end": 1.0},
           "target": {"video": "squares.mp4", "start": 1.0, "end": 2.0}, "subset": "rave"}



def write_triplets(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ball.mp4", "squares.mp4"):
        shutil.copy(MEDIA / name, folder / name)
    path = folder / "triplets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def revise_kit(tmp_path_factory):
    """Tiny generator and critic folders and two triplets over the example videos."""
    from vidcli.testing import ensure_tiny_models

    paths = ensure_tiny_models(["wan", "vlm"])
    return {"wan": paths["wan"], "vlm": paths["vlm"],
            "records": write_triplets(tmp_path_factory.mktemp("revise-data"), [BALL, SQUARES])}


def make_config(kit, out: Path, **overrides) -> ReviseConfig:
    run_keys = {"seed", "max_steps", "save_every", "resume", "grad_accum", "batch_size"}
    run_args = {"seed": 0, "max_steps": 1, "save_every": 0, "batch_size": 1, "grad_accum": 1,
                "mixed_precision": "no"}
    run_args.update({k: overrides.pop(k) for k in list(overrides) if k in run_keys})
    optim = OptimConfig(lr=1e-3, weight_decay=0.0, warmup_steps=0, schedule="constant", max_grad_norm=None)
    args = dict(model=str(kit["wan"]), vlm=str(kit["vlm"]), inputs=[str(kit["records"])], frames_critic=3,
                height=32, width=32, frames=5)
    args.update(overrides)
    return ReviseConfig(run=RunConfig(output_dir=out, optim=optim, **run_args), **args)


def ready(kit, out: Path, **overrides) -> ReviseRecipe:
    recipe = ReviseRecipe(make_config(kit, out, **overrides))
    recipe.setup()
    return recipe


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def dit_grads(recipe: ReviseRecipe) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in recipe.adapter.trainable_module().named_parameters() if p.grad is not None}


class CriticSpy:
    """Wraps ``Critic.judge``: counts calls and keeps what each was given and returned."""

    def __init__(self, critic) -> None:
        self.inner, self.calls = critic.judge, []
        critic.judge = self

    def __call__(self, edited, source, instruction, **kwargs):
        out = self.inner(edited, source, instruction, **kwargs)
        self.calls.append({"edited_grad": edited.requires_grad, "out": out.delta, "reasoning": out.reasoning,
                           "grad_enabled": torch.is_grad_enabled(), **kwargs})
        return out


# ----------------------------------------------------------------------------- t sampler


def test_shifted_t_and_the_expected_trigger_rate():
    assert shifted_t(0.5, 3.0) == pytest.approx(0.75)  # 1.5 / 2
    assert shifted_t(0.2, 1.0) == pytest.approx(0.2)
    assert trigger_probability(0.5, 3.0) == pytest.approx(0.25)  # the paper's 25%
    assert trigger_probability(0.5, 1.0) == pytest.approx(0.5)  # plain uniform t
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0)).tolist()
    rate = sum(shifted_t(x, 3.0) <= 0.5 for x in u) / len(u)
    assert rate == pytest.approx(0.25, abs=0.01)


# ----------------------------------------------------------------------------- the loss


def greedy_reasoning(scorer, videos, ids: list[int], max_tokens: int) -> str:
    """The critic's reasoning decoded by hand: argmax token after token, stopped at an end token."""
    tok, stop = scorer.processor.tokenizer, scorer.model.generation_config.eos_token_id
    stop = set(stop if isinstance(stop, list) else [stop])
    produced = []
    with torch.no_grad():
        for _ in range(max_tokens):
            token = int(scorer.model(**scorer.model_inputs(videos, ids + produced)).logits[0, -1].argmax())
            if token in stop:
                break
            produced.append(token)
    text = tok.decode(produced, skip_special_tokens=True)
    return text[:text.lower().find("verdict")].strip() if "verdict" in text.lower() else text.strip()


@pytest.mark.parametrize("reasoning", ["first", "none"])
def test_loss_equals_the_hand_computed_uso_loss(revise_kit, tmp_path, reasoning):
    from vidcli.media import load_video

    recipe = ready(revise_kit, tmp_path / "run", sigma_max=1.0, cfg_drop=0.0, critic_reasoning=reasoning,
                   critic_tokens=4)
    task = recipe.tasks[0]  # an icvg triplet
    loss, entry = recipe.sample_loss(task, seed=3)
    assert entry["gated"] and not entry["cfg_drop"]

    # Pieces rebuilt by hand: the same draws, the DiT called on [target | source] frames.
    data = recipe.clip_data(task)
    x0, src = data["target"], data["source"]
    assert x0.shape == src.shape == (1, 16, 2, 4, 4)  # 5 frames of 32x32 → 2 latent frames of 4x4
    t, eps, _ = recipe.draw(3, tuple(x0.shape))
    assert t == pytest.approx(entry["t"])
    text = recipe.adapter.encode_prompt([task.instruction], None, 1.0).positive
    z_t = (1 - t) * x0 + t * eps
    # 2x2 patches: 4 tokens per latent frame; 8 target tokens at 1000·t, then 8 source tokens at 0.
    timestep = torch.tensor([[1000.0 * t] * 8 + [0.0] * 8])
    out = recipe.adapter.trainable_module()(hidden_states=torch.cat([z_t, src], 2), timestep=timestep,
                                            encoder_hidden_states=text, return_dict=False)[0]
    v = out[:, :, :2]
    l_fm = ((v - (eps - x0)) ** 2).mean()
    edited = recipe.adapter.decode(z_t - t * v, [0, 2, 4])[0]
    source = load_video(MEDIA / "ball.mp4", num_frames=5, start=0.0, end=1.5, size=(32, 32)).frames
    source = torch.from_numpy(source[[0, 2, 4]]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(data["critic_source"], source)

    # The critic: told 3 frames over each 1.5 s clip; asked without preservation (icvg).
    scorer = recipe.scorer
    tok = scorer.processor.tokenizer
    fps = 3 / 1.5
    assert data["critic_fps"] == (pytest.approx(fps), pytest.approx(fps))
    question = recipe.critic.question(task.instruction, "icvg")
    assert "Preservation" not in question and "Check these three things" in question

    def margin(first, second):
        """Δ from one plain forward, and the reasoning it was read after."""
        videos = [scorer.video_pixels(first, fps), scorer.video_pixels(second, fps)]
        ids = scorer.prompt_ids(videos, question)
        said = None
        if reasoning == "first":  # the word after "Verdict:"
            said = greedy_reasoning(scorer, videos, ids, max_tokens=4)
            ids = ids + tok(said)["input_ids"] + tok(VERDICT_CUE)["input_ids"]
            yes, no = tok(VERDICT_CUE + " Yes")["input_ids"][-1], tok(VERDICT_CUE + " No")["input_ids"][-1]
        else:  # the reply's first word
            yes, no = tok("Yes")["input_ids"][0], tok("No")["input_ids"][0]
        with torch.no_grad():
            logits = scorer.model(**scorer.model_inputs(videos, ids)).logits[0, -1]
        return (logits[yes] - logits[no]).item(), said

    (delta, said), (delta0, _) = margin(edited, source), margin(source, source)
    assert entry["critique"] == said
    l_reason = -math.log(1 / (1 + math.exp(-(delta - delta0))))
    assert entry["delta"] == pytest.approx(delta, rel=1e-5) and entry["delta0"] == pytest.approx(delta0, rel=1e-5)
    assert entry["l_fm"] == pytest.approx(l_fm.item(), rel=1e-5)
    assert entry["l_reason"] == pytest.approx(l_reason, rel=1e-5)
    assert loss.item() == pytest.approx(l_fm.item() + 0.25 * l_reason, rel=1e-5)
    recipe.cleanup()


def test_the_source_is_an_in_context_condition(revise_kit, tmp_path):
    recipe = ready(revise_kit, tmp_path / "run")
    data = recipe.clip_data(recipe.tasks[0])
    text = recipe.adapter.encode_prompt(["x"], None, 1.0).positive
    with torch.no_grad():
        v = recipe.editor.velocity(data["target"], data["source"], 0.5, text)
        other = recipe.editor.velocity(data["target"], torch.zeros_like(data["source"]), 0.5, text)
    assert v.shape == data["target"].shape
    assert not torch.allclose(v, other)  # the target's velocity reads the source frames
    recipe.cleanup()


def test_critic_runs_only_when_t_is_small_and_its_baseline_has_no_gradient(revise_kit, tmp_path):
    recipe = ready(revise_kit, tmp_path / "run")  # sigma_max 0.5, shift 3
    spy = CriticSpy(recipe.critic)
    gated, baselines = 0, {}
    for seed in range(12):
        task = recipe.tasks[seed % 2]
        before = len(spy.calls)
        _, entry = recipe.sample_loss(task, seed)
        assert entry["gated"] == (entry["t"] <= 0.5)
        first_time = entry["gated"] and task.id not in baselines
        assert len(spy.calls) - before == (2 if first_time else 1 if entry["gated"] else 0)
        if entry["gated"]:
            gated += 1
            judged = spy.calls[before]
            assert judged["edited_grad"] and judged["out"].requires_grad and judged["subset"] == task.subset
            if first_time:  # Δ₀ on (source, source): asked once per triplet, without gradient
                baseline = spy.calls[before + 1]
                assert not baseline["grad_enabled"] and baseline["out"].grad_fn is None
                baselines[task.id] = baseline["out"].item()
            assert entry["delta0"] == baselines[task.id]
        else:
            assert entry["delta"] is None and entry["l_reason"] is None and entry["loss"] == entry["l_fm"]
    assert 0 < gated < 12
    # sft never asks the critic, whatever t.
    recipe.config.objective, recipe.config.sigma_max = "sft", 1.0
    before = len(spy.calls)
    _, entry = recipe.sample_loss(recipe.tasks[0], 0)
    assert len(spy.calls) == before and not entry["gated"]
    recipe.cleanup()


def test_the_gradient_reaches_the_dit_through_the_frames_with_the_reasoning_in_context(revise_kit, tmp_path):
    recipe = ready(revise_kit, tmp_path / "run", sigma_max=1.0, cfg_drop=0.0, critic_tokens=4)
    spy = CriticSpy(recipe.critic)
    task = recipe.tasks[1]  # rave: preservation is asked for
    grads = {}
    for objective in ("uso", "sft"):
        recipe.config.objective = objective
        recipe.optimizer.zero_grad(set_to_none=True)
        loss, entry = recipe.sample_loss(task, seed=5)
        loss.backward()
        grads[objective] = dit_grads(recipe)
        if objective == "uso":
            judged = spy.calls[0]
            assert judged["subset"] == "rave" and judged["out"].requires_grad
            assert judged["reasoning"] == entry["critique"] and entry["critique"] is not None
            assert "Preservation" in recipe.critic.question(task.instruction, task.subset)
    # The critic's loss adds its own gradient to the flow-matching one.
    scale = max(g.abs().max().item() for g in grads["sft"].values())
    assert any(not torch.allclose(grads["uso"][n], g, rtol=1e-3, atol=1e-3 * scale) for n, g in grads["sft"].items())
    recipe.cleanup()


def test_critic_checks_follow_the_subset():
    rave = critic_checks("rave")
    assert critic_checks(None) == rave  # no subset: an edit, every point applies
    assert "Check these four things" in rave and "2. Preservation" in rave
    icvg = critic_checks("icvg")
    assert "Check these three things" in icvg and "Preservation" not in icvg.split("Check these")[1]
    assert "3. Realism" in icvg and "not meant to keep the original's content" in icvg


def test_objectives_sft_rwr_uso_differ_as_defined(revise_kit, tmp_path):
    recipe = ready(revise_kit, tmp_path / "run", sigma_max=1.0)
    task, results = recipe.tasks[1], {}
    for objective in ("sft", "rwr", "uso"):
        recipe.config.objective = objective
        recipe.optimizer.zero_grad(set_to_none=True)
        loss, entry = recipe.sample_loss(task, seed=5)
        loss.backward()
        results[objective] = (entry, dit_grads(recipe))
    (sft, g_sft), (rwr, g_rwr), (uso, g_uso) = results["sft"], results["rwr"], results["uso"]
    assert sft["l_fm"] == rwr["l_fm"] == uso["l_fm"] and sft["loss"] == pytest.approx(sft["l_fm"])
    # rwr: P(Yes) = softmax over the {Yes, No} logits = σ(Δ), a constant weight on L_FM.
    p_yes = 1 / (1 + math.exp(-rwr["delta"]))
    assert rwr["p_yes"] == pytest.approx(p_yes, rel=1e-6) and rwr["loss"] == pytest.approx(p_yes * sft["l_fm"])
    assert rwr["delta"] == pytest.approx(uso["delta"], rel=1e-6) and rwr["delta0"] is None
    assert g_rwr.keys() == g_sft.keys()
    scale = max(g.abs().max().item() for g in g_sft.values())
    for name, grad in g_sft.items():  # equal up to float rounding of the summed graph
        torch.testing.assert_close(g_rwr[name], p_yes * grad, rtol=1e-4, atol=1e-5 * scale)
    # uso: the critic's gradient is added, so the DiT's gradient moves.
    assert uso["loss"] == pytest.approx(uso["l_fm"] + 0.25 * uso["l_reason"], rel=1e-6)
    assert any(not torch.allclose(g_uso[n], g_sft[n], rtol=1e-3, atol=1e-3 * scale) for n in g_sft)
    recipe.cleanup()


# ----------------------------------------------------------------------------- one optimiser step


def test_a_step_changes_only_the_dit_and_logs_each_triplet(revise_kit, tmp_path):
    recipe = ready(revise_kit, tmp_path / "run", sigma_max=1.0, grad_accum=2)
    pipe = recipe.adapter.pipe
    frozen = {"vae": pipe.vae, "text_encoder": pipe.text_encoder, "vlm": recipe.scorer.model}
    frozen_before = {k: snapshot(m) for k, m in frozen.items()}
    dit = recipe.adapter.trainable_module()
    dit_before = snapshot(dit)
    entries = recipe.optimise()
    assert [e["id"] for e in entries] != [] and len(entries) == 2  # 1 triplet x 2 micro-batches
    changed = [n for n, p in dit.named_parameters() if not torch.equal(dit_before[n], p.detach())]
    assert len(changed) == len(dit_before)
    for label, module in frozen.items():
        for name, param in module.named_parameters():
            assert torch.equal(frozen_before[label][name], param.detach()), f"{label}.{name} changed"
    lines = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert lines == entries
    assert all(e["step"] == 1 and e["gated"] and e["l_reason"] > 0 for e in lines)
    assert recipe.metrics["loss"] == pytest.approx(sum(e["loss"] for e in lines) / 2)
    recipe.cleanup()


def test_lora_trains_only_the_adapters(revise_kit, tmp_path):
    recipe = ready(revise_kit, tmp_path / "lora", finetune="lora", lora_rank=4, lora_alpha=8, sigma_max=1.0)
    dit = recipe.adapter.trainable_module()
    before, vlm_before = snapshot(dit), snapshot(recipe.scorer.model)
    recipe.optimise()
    changed = {n for n, p in dit.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)
    assert all(torch.equal(vlm_before[n], p) for n, p in recipe.scorer.model.named_parameters())
    final = recipe.save_checkpoint(final=True)
    assert (final / "pytorch_lora_weights.safetensors").is_file()
    recipe.cleanup()


# ----------------------------------------------------------------------------- records


def test_triplets_are_validated_before_training(revise_kit, tmp_path):
    bad = [
        ({**BALL, "id": "a", "instruction": " "}, "'instruction'"),
        ({"id": "b", "instruction": "x", "target": BALL["target"]}, "missing field 'source'"),
        ({**BALL, "id": "c", "target": {"video": "ball.mp4", "start": 2.0, "end": 1.0}}, "not after start"),
        ({**BALL, "id": "d", "source": {"video": "gone.mp4"}}, "source video not found"),
        ({**BALL, "id": "e", "source": {"video": "ball.mp4", "start": "0"}}, "source.start must be"),
        ({**BALL, "id": "f", "subset": "films"}, "field 'subset' must be one of icvg, rave"),
    ]
    for i, (record, message) in enumerate(bad):
        path = write_triplets(tmp_path / f"bad{i}", [BALL, record])
        with pytest.raises(InputError, match=message) as info:
            load_triplets(make_config({**revise_kit, "records": path}, tmp_path / "o"))
        assert (info.value.line, info.value.record_id, info.value.file) == (2, record["id"], str(path))
    (one, two), prints = load_triplets(make_config(revise_kit, tmp_path / "o"))
    assert (one.source.start, one.source.end, one.target.start) == (0.0, 1.5, 1.5)
    assert two.source.path.name == "squares.mp4" and prints[str(revise_kit["records"])]["records"] == 2
