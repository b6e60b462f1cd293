"""The shared training core: schedule, weight-decay groups, data order, checkpoints, exact resume."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from vidcli.errors import InputError
from vidcli.train.checkpoint import (
    Checkpointer,
    RunInfo,
    check_output_dir,
    check_same_inputs,
    latest_checkpoint,
    remove_partials,
    safe_arguments,
)
from vidcli.train.core import (
    DataOrder,
    OptimConfig,
    RunConfig,
    build_optimizer,
    build_scheduler,
    decay_groups,
    file_sha256,
    lr_factor,
    make_accelerator,
    seeded_uniform,
    set_seed,
    total_steps,
)

# ----------------------------------------------------------------------------- schedule


def test_cosine_with_warmup_matches_hand_computed_values():
    values = [lr_factor(s, warmup_steps=4, total_steps=10, schedule="cosine") for s in range(10)]
    # warm-up: (s+1)/4; then 0.5(1+cos(pi (s-4)/6))
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 0.9330127018922194, 0.75, 0.5, 0.25, 0.0669872981077807]
    assert values == pytest.approx(expected, abs=1e-12)


def test_constant_with_warmup_and_no_warmup():
    assert [lr_factor(s, warmup_steps=3, total_steps=8, schedule="constant") for s in range(5)] == \
        pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    # Without warm-up the first step already uses the full rate.
    assert lr_factor(0, warmup_steps=0, total_steps=5, schedule="cosine") == 1.0
    assert lr_factor(4, warmup_steps=0, total_steps=5, schedule="cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 4 / 5)))


def test_scheduler_sets_the_learning_rate_of_each_optimizer_step():
    param = nn.Parameter(torch.zeros(2, 2))
    config = OptimConfig(lr=0.1, warmup_steps=2, schedule="cosine")
    opt = build_optimizer([("w", param)], config)
    sched = build_scheduler(opt, config, total_steps=6)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        opt.step()
        sched.step()
    expected = [0.1 * f for f in (0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                  0.5 * (1 + math.cos(3 * math.pi / 4)))]
    assert seen == pytest.approx(expected, abs=1e-12)


def test_total_steps_covers_the_epochs_or_obeys_max_steps(tmp_path):
    assert total_steps(RunConfig(tmp_path, epochs=3, grad_accum=2), batches_per_epoch=5) == 8  # ceil(15/2)
    assert total_steps(RunConfig(tmp_path, epochs=3, max_steps=4), batches_per_epoch=5) == 4


# ----------------------------------------------------------------------------- weight decay


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_clip_and_step_without_an_accelerator_clips_by_the_total_norm():
    from vidcli.train.optim import clip_and_step

    w = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([w], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    w.grad = torch.tensor([3.0, 4.0])  # norm 5, clipped to 1: (0.6, 0.8), then lr 1.0 x 0.5
    norm = clip_and_step(None, [w], optimizer, scheduler, 1.0)
    assert norm == pytest.approx(5.0)
    assert w.detach().tolist() == pytest.approx([-0.3, -0.4])
    assert w.grad is None and scheduler.last_epoch == 1
    w.grad = torch.tensor([3.0, 4.0])
    assert clip_and_step(None, [w], optimizer, scheduler, None) is None  # clipping off: the full step
    assert w.detach().tolist() == pytest.approx([-1.8, -2.4])


def test_weight_decay_groups_weights_not_biases_or_norms():
    model = Mixed()
    groups = decay_groups(model.named_parameters(), 0.01)
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert groups[0]["names"] == ["embed.weight", "conv.weight", "proj.weight"]
    assert groups[1]["names"] == ["conv.bias", "norm.weight", "norm.bias", "proj.bias"]


def test_adamw_decays_only_the_decay_group():
    model = Mixed()
    with torch.no_grad():
        model.norm.weight.fill_(2.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model.named_parameters(), OptimConfig(lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # zero gradient: Adam's own update is exactly zero
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if name in ("embed.weight", "conv.weight", "proj.weight") else 1.0
        assert torch.allclose(p, before[name] * factor, atol=0, rtol=1e-6), name


def test_nothing_trainable_is_an_error():
    layer = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(layer.named_parameters(), OptimConfig())


# ----------------------------------------------------------------------------- data order


def test_each_epoch_is_a_seeded_permutation_of_all_examples():
    order = DataOrder(num_examples=10, batch_size=3, seed=7)
    assert order.batches_per_epoch == 4
    epochs = {}
    for position in range(8):
        epoch, idx = order.micro_batch(position)
        epochs.setdefault(epoch, []).extend(idx)
    assert sorted(epochs[0]) == list(range(10)) and sorted(epochs[1]) == list(range(10))
    assert epochs[0] != epochs[1]  # reshuffled
    assert epochs[0] == order.permutation(0).tolist()
    # The order depends on (seed, epoch) only, not on global RNG state.
    torch.manual_seed(0)
    assert DataOrder(10, 3, seed=7).micro_batch(5) == order.micro_batch(5)
    assert DataOrder(10, 3, seed=8).permutation(0).tolist() != epochs[0]


def test_processes_share_each_global_batch_evenly():
    n, batch, procs = 11, 2, 3
    shards = [DataOrder(n, batch, seed=1, num_processes=procs, process_index=r) for r in range(procs)]
    assert shards[0].batches_per_epoch == 2  # ceil(11 / 6)
    perm = shards[0].permutation(0).tolist()
    first = [shards[r].micro_batch(0)[1] for r in range(procs)]
    assert sum(first, []) == perm[:6]
    # Last global batch has 5 examples: two each, the sixth slot wraps to the epoch's start.
    last = [shards[r].micro_batch(1)[1] for r in range(procs)]
    assert [len(x) for x in last] == [2, 2, 2]
    assert sum(last, []) == perm[6:] + perm[:1]


def test_seeded_uniform_is_fixed_by_its_keys():
    a = seeded_uniform(3, 0, 5)
    assert a == seeded_uniform(3, 0, 5) and 0 <= a < 1
    assert a != seeded_uniform(3, 1, 5)
    # Over many examples the flip rate is about the probability used.
    rate = sum(seeded_uniform(3, 0, i) < 0.4 for i in range(2000)) / 2000
    assert abs(rate - 0.4) < 0.04


# ----------------------------------------------------------------------------- checkpoints


def _model() -> nn.Module:
    # Dropout makes the result depend on the torch RNG, which a resume must restore.
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Dropout(0.3), nn.Linear(8, 1))


DATA_X = torch.linspace(-1, 1, 40).reshape(10, 4)
DATA_Y = DATA_X.sum(dim=1, keepdim=True).sin()


def _train(out: Path, steps: int, *, resume: bool = False, crash_after: int | None = None,
           secret_arg: str = "", keep_last: int | None = None) -> nn.Module:
    """A minimal recipe loop on the core; ``crash_after`` stops without any final save."""
    from safetensors.torch import load_file, save_file

    run = RunConfig(output_dir=out, seed=3, max_steps=steps, batch_size=3, grad_accum=2, save_every=2,
                    mixed_precision="no", resume=resume, optim=OptimConfig(lr=0.05, warmup_steps=2))
    check_output_dir(out, resume)
    acc = make_accelerator(run)
    set_seed(run.seed)
    model = _model()
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    opt = build_optimizer(model.named_parameters(), run.optim)
    model, opt = acc.prepare(model, opt)
    sched = build_scheduler(opt, run.optim, steps)
    arguments = {"steps": steps, "api_key": secret_arg, **({"save_total_limit": keep_last} if keep_last else {})}
    info = RunInfo("core-test", arguments, {"data": {"sha256": "abc"}})
    saver = Checkpointer(acc, out, info)
    order = DataOrder(len(DATA_X), run.batch_size, run.seed)
    step, position = 0, 0
    if ckpt is not None:
        check_same_inputs(ckpt, info.inputs)
        progress = saver.load(ckpt, sched)
        step, position = progress["step"], progress["micro_batches"]

    def save_weights(folder: Path) -> None:
        save_file({k: v.contiguous() for k, v in acc.unwrap_model(model).state_dict().items()},
                  str(folder / "model.safetensors"))

    model.train()
    while step < steps:
        for _ in range(run.grad_accum):
            _, idx = order.micro_batch(position)
            position += 1
            with acc.accumulate(model):
                loss = ((model(DATA_X[idx]) - DATA_Y[idx]) ** 2).mean()
                acc.backward(loss)
                if acc.sync_gradients:
                    opt.step()
                    sched.step()
                    opt.zero_grad()
        step += 1
        if crash_after is not None and step > crash_after:
            return model
        final = step == steps
        if final or step % run.save_every == 0:
            saver.save(step, save_weights=save_weights, scheduler=sched, micro_batches=position,
                       metrics={"loss": loss.item()}, final=final)
    return acc.unwrap_model(model)


def test_resume_from_a_checkpoint_continues_exactly(tmp_path):
    reference = _train(tmp_path / "ref", 6)
    # A run that dies during step 5: checkpoints 2 and 4 exist, step 5's work is lost.
    _train(tmp_path / "run", 6, crash_after=4)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("checkpoint")) == \
        ["checkpoint-2", "checkpoint-4"]
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-4"
    resumed = _train(tmp_path / "run", 6, resume=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    final = json.loads((tmp_path / "run" / "vidcli.json").read_text())
    assert final["step"] == 6 and final["final"] is True
    # Optimizer state stays in the resumable checkpoints only, not beside the final model.
    assert not (tmp_path / "run" / "trainer_state").exists()
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-4"


def test_resume_restores_rng_state(tmp_path):
    _train(tmp_path / "run", 4, crash_after=2)
    ckpt = latest_checkpoint(tmp_path / "run")
    # The saved RNG states are those at save time: loading them gives the same draws.
    import random

    import numpy as np
    from accelerate import Accelerator

    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    torch.manual_seed(999)
    acc = Accelerator(cpu=True)
    acc.load_state(str(ckpt / "trainer_state"))
    first = draws()
    acc.load_state(str(ckpt / "trainer_state"))
    assert draws() == first  # torch, numpy and python generators all restored
    assert draws() != first


def test_incomplete_checkpoints_are_ignored_and_cleaned(tmp_path):
    _train(tmp_path, 4, crash_after=2)
    # What a kill during a save leaves: a partial folder, and a folder with no vidcli.json.
    (tmp_path / ".checkpoint-4.partial" / "trainer_state").mkdir(parents=True)
    (tmp_path / "checkpoint-6").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert remove_partials(tmp_path) == [tmp_path / ".checkpoint-4.partial"]
    assert not (tmp_path / ".checkpoint-4.partial").exists()


def test_run_info_has_no_secrets_and_records_fingerprints(tmp_path, monkeypatch):
    marker = "sk-marker-7f3a9c"
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    _train(tmp_path, 2, secret_arg=marker)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path
    info = json.loads((tmp_path / "vidcli.json").read_text())
    assert info["command"] == "core-test" and info["inputs"] == {"data": {"sha256": "abc"}}
    assert info["arguments"] == {"steps": 2} and info["step"] == 2 and "loss" in info["metrics"]
    assert safe_arguments({"hf_token": "x", "lr": 1.0, "out": Path("/a")}) == {"lr": 1.0, "out": "/a"}
    # A key inside a URL is no better: user info and secret query values are removed.
    assert safe_arguments({"base_url": "http://me:sk-1@host:8000/v1?api_key=sk-1"}) == \
        {"base_url": "http://host:8000/v1?api_key=***"}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["model.safetensors", "trainer_state/optimizer.bin"])
def test_a_damaged_checkpoint_is_skipped_for_the_one_before(tmp_path, damage, caplog):
    reference = _train(tmp_path / "ref", 6)
    _train(tmp_path / "run", 6, crash_after=4)
    _truncate(tmp_path / "run" / "checkpoint-4" / damage)
    with caplog.at_level(logging.WARNING, logger="vidcli.train"):
        assert latest_checkpoint(tmp_path / "run").name == "checkpoint-2"
    assert f"checkpoint-4{os.sep}{damage}" in caplog.text and "resuming from checkpoint-2" in caplog.text
    resumed = _train(tmp_path / "run", 6, resume=True)  # still exact: it redoes steps 3 and 4
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_every_checkpoint_damaged_is_one_line(tmp_path):
    _train(tmp_path, 4, crash_after=2)
    _truncate(tmp_path / "checkpoint-2" / "model.safetensors")
    with pytest.raises(InputError, match="every checkpoint is damaged .*checkpoint-2/model.safetensors: truncated"):
        latest_checkpoint(tmp_path)


def test_a_foreign_trainer_state_is_one_line_without_unsafe_advice(tmp_path):
    import zipfile

    _train(tmp_path, 4, crash_after=2)
    with zipfile.ZipFile(tmp_path / "checkpoint-2" / "trainer_state" / "optimizer.bin", "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")  # whole as a zip, not as a state
    with pytest.raises(InputError) as info:
        _train(tmp_path, 4, resume=True)
    message = str(info.value)
    assert "trainer_state: cannot restore the trainer state" in message and "remove checkpoint-2" in message
    assert "weights_only" not in message


def test_a_damaged_rng_state_is_not_ignored_silently(tmp_path, caplog):
    _train(tmp_path, 4, crash_after=2)
    _truncate(tmp_path / "checkpoint-2" / "trainer_state" / "random_states_0.pkl")
    with caplog.at_level(logging.WARNING, logger="vidcli.train"):
        _train(tmp_path, 4, resume=True)
    assert "random_states_0.pkl is damaged" in caplog.text and "no longer exactly reproducible" in caplog.text


def test_save_total_limit_keeps_the_newest_checkpoints(tmp_path):
    _train(tmp_path, 8, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")) == \
        ["checkpoint-4", "checkpoint-6"]


def test_weights_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _train(tmp_path, 2)
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_output_folder_of_another_run_needs_resume(tmp_path):
    _train(tmp_path, 2)
    with pytest.raises(InputError, match="--resume"):
        check_output_dir(tmp_path, resume=False)
    check_output_dir(tmp_path, resume=True)
    check_output_dir(tmp_path / "fresh", resume=False)


def test_resume_with_different_inputs_is_refused(tmp_path):
    _train(tmp_path, 2)
    check_same_inputs(tmp_path, {"moved/data": {"sha256": "abc"}})  # same bytes elsewhere: fine
    with pytest.raises(InputError, match="differ"):
        check_same_inputs(tmp_path, {"data": {"sha256": "other"}})


def test_file_sha256(tmp_path):
    import hashlib
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": "1"}\n')
    assert file_sha256(path) == hashlib.sha256(b'{"id": "1"}\n').hexdigest()


def test_mixed_precision_auto(monkeypatch):
    from vidcli.train.core import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_mixed_precision("auto") == "no"  # CPU: full precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
    assert resolve_mixed_precision("fp16") == "fp16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # set by `accelerate launch` from its config
    assert resolve_mixed_precision("auto") is None


def test_tracker_config_is_flat_scalars():
    from vidcli.train.core import tracker_config

    assert tracker_config({"a": {"b": [1, 2], "c": None}, "lr": 1e-5, "out": Path("/x")}) == \
        {"a.b": "[1, 2]", "a.c": "none", "lr": 1e-5, "out": "/x"}


def test_missing_tracker_package_is_a_clear_error(tmp_path, monkeypatch):
    import accelerate.utils
    monkeypatch.setattr(accelerate.utils, "is_tensorboard_available", lambda: True)
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(InputError, match=r"--report-to wandb needs .*pip install 'vidcli\[tracking\]'"):
        make_accelerator(RunConfig(tmp_path, report_to="tensorboard,wandb", mixed_precision="no"))


@pytest.mark.parametrize(("processes", "fails", "barrier"), [(2, False, True), (2, True, False), (1, False, False)])
def test_a_finished_multi_process_run_waits_for_every_process_before_tearing_down(processes, fails, barrier):
    """run_recipe marks a run whose train() returned; its close then waits for the other processes before
    ending the trackers and the process group. After a failure it does not wait (the others may never
    arrive), and a single process has no one to wait for."""
    from vidcli.train.core import run_recipe
    from vidcli.train.start import RunStart

    calls = []

    class Accelerator:
        num_processes = processes

        def wait_for_everyone(self):
            calls.append("barrier")

        def end_training(self):
            calls.append("end_training")

    class Monitor:
        def close(self):
            calls.append("monitor")

    class Recipe:
        started = None

        def setup(self):
            self.started = RunStart(None, Accelerator(), Monitor(), None)

        def train(self):
            if fails:
                raise RuntimeError("a step failed")
            return Path("model")

        def cleanup(self):
            self.started.close()

    if fails:
        with pytest.raises(RuntimeError, match="a step failed"):
            run_recipe(Recipe())
    else:
        assert run_recipe(Recipe()) == Path("model")
    assert calls == ["monitor", *(["barrier"] if barrier else []), "end_training"]
