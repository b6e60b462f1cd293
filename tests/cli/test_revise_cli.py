"""``vidcli revise-tune`` end to end on triplets over the example videos: run, loadable output, exact resume, errors."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from tests.cli.helpers import close_records, invoke, read_jsonl, share_of_update
from tests.train.test_revise import BALL, SQUARES, revise_kit, write_triplets  # noqa: F401  (fixtures)
from tests.train.trackers import (
    need_trackers,
    offline_wandb,
    tensorboard_events,
    trackers_installed,
    wandb_history,
    wandb_runs,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def revise_args(kit, out, *extra) -> list[str]:
    return ["revise-tune", "--model", str(kit["wan"]), "--vlm", str(kit["vlm"]), str(kit["records"]), "-o", str(out),
            "--frames-critic", "3", "--height", "32", "--width", "32", "--frames", "5", "--grad-accum", "2",
            "--sigma-max", "0.8", "--lr", "1e-3", "--seed", "2", "-q", *extra]


def transformer_weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")


def test_help_lists_the_paper_defaults():
    result = invoke(["revise-tune", "--help"])
    assert result.exit_code == 0
    text_out = " ".join(result.output.split())  # help lines wrap anywhere
    for text in ("--objective [sft|rwr|uso]", "default: uso", "default: 0.25", "default: 0.5", "default: 0.2",
                 "default: 3e-06", "default: 0.0001", "default: 8", "--t-shift",
                 "--max-grad-norm FLOAT RANGE Gradient clipping norm (0: off). [default: 0.1;",
                 "accelerate launch -m vidcli revise-tune"):
        assert text in text_out, text
    assert "revise-tune" in invoke(["--help"]).output


@pytest.fixture(scope="module")
def whole_run(revise_kit, tmp_path_factory):
    """Two steps of two triplets each, with a checkpoint after the first; where the tracker packages
    are installed, the first triplet is watched at steps 0 and 2 (the resume test below, without
    trackers, then also shows that watching does not change training)."""
    out = tmp_path_factory.mktemp("revise-run") / "whole"
    trackers = ["--report-to", "tensorboard,wandb", "--log-samples-every", "2", "--log-samples", "1"] \
        if trackers_installed() else []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with offline_wandb(out.parent) if trackers else contextlib.nullcontext():
        result = invoke(revise_args(revise_kit, out, "--max-steps", "2", "--save-every", "1", *trackers))
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.stderr
    return out


def test_run_writes_a_loadable_pipeline_and_the_step_log(revise_kit, whole_run):
    from diffusers import WanPipeline

    out = whole_run
    info = json.loads((out / "vidcli.json").read_text())
    assert info["step"] == 2 and info["final"] and info["objective"] == "uso" and info["finetune"] == "full"
    assert info["arguments"]["max_grad_norm"] == 0.1 and info["editor"]["source_timestep"] == 0
    assert (out / "checkpoint-1" / "vidcli.json").is_file()

    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 1, 2, 2]  # grad-accum 2: one line per triplet
    assert {s["id"] for s in steps[:2]} == {BALL["id"], SQUARES["id"]}  # one epoch = both triplets
    for s in steps:
        assert s["gated"] == (s["t"] <= 0.8)
        if s["gated"]:
            expected = -torch.nn.functional.logsigmoid(torch.tensor(s["delta"] - s["delta0"])).item()
            assert s["l_reason"] == pytest.approx(expected, rel=1e-5)
            assert s["loss"] == pytest.approx(s["l_fm"] + 0.25 * s["l_reason"], rel=1e-5)
        else:
            assert s["delta"] is None and s["loss"] == s["l_fm"]
    assert any(s["gated"] for s in steps)

    pipe = WanPipeline.from_pretrained(out)
    tuned, base = transformer_weights(out), transformer_weights(revise_kit["wan"])
    state = pipe.transformer.state_dict()
    assert all(torch.equal(state[k], tuned[k]) for k in tuned)
    assert any(not torch.equal(tuned[k], base[k]) for k in tuned)
    assert (out / "vae").resolve() == (revise_kit["wan"] / "vae").resolve()


def test_trackers_watch_a_fixed_triplet_beside_its_source_with_the_critics_delta(whole_run):
    from PIL import Image

    need_trackers()
    events = tensorboard_events(whole_run / "logs", "vidcli-revise")
    tag = f"samples/{BALL['id']}"
    videos = events.Images(tag)
    assert [e.step for e in videos] == [0, 2]
    for event in videos:
        with Image.open(io.BytesIO(event.encoded_image_string)) as gif:
            assert gif.size == (2 * 32, 32) and gif.n_frames == 5  # source | edit
            gif.seek(4)
            frame = np.asarray(gif.convert("RGB")).astype(int)
            assert np.abs(frame[:, :32] - frame[:, 32:]).mean() > 5  # the edit is not the source
    strips = events.Images(f"{tag}/frames")
    assert [(e.step, e.width, e.height) for e in strips] == [(0, 3 * 32, 2 * 32), (2, 3 * 32, 2 * 32)]
    deltas = {e.step: e.value for e in events.Scalars(f"{tag}/delta")}
    assert sorted(deltas) == [0, 2]
    margins = {e.step: e.value for e in events.Scalars(f"{tag}/delta_minus_delta0")}

    (run,) = wandb_runs(whole_run / "logs")
    captions = {row["_step"]: row[f"{tag}/caption"] for row in wandb_history(run) if f"{tag}/caption" in row}
    assert sorted(captions) == [0, 2]
    for step, caption in captions.items():
        assert caption.startswith(BALL["instruction"] + " | critic Δ = ")
        assert f"Δ = {deltas[step]:.3f}" in caption and f"Δ − Δ₀ = {margins[step]:.3f}" in caption


def test_resume_from_a_checkpoint_continues_exactly(revise_kit, whole_run, tmp_path):
    cut = tmp_path / "cut"
    # As if the run had died after writing checkpoint-1 and the step-2 lines of steps.jsonl.
    shutil.copytree(whole_run / "checkpoint-1", cut / "checkpoint-1", symlinks=True)
    shutil.copy(whole_run / "steps.jsonl", cut / "steps.jsonl")
    result = invoke(revise_args(revise_kit, cut, "--max-steps", "2", "--save-every", "1", "--resume"))
    assert result.exit_code == 0, result.stderr
    ours, theirs = transformer_weights(cut), transformer_weights(whole_run)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert read_jsonl(cut / "steps.jsonl") == read_jsonl(whole_run / "steps.jsonl")
    other = invoke(revise_args(revise_kit, cut, "--max-steps", "3", "--resume", "--objective", "sft"))
    assert other.exit_code == 1 and "was trained with" in other.stderr
    again = invoke(revise_args(revise_kit, cut, "--max-steps", "3"))
    assert again.exit_code == 1 and "pass --resume" in again.stderr


def test_bad_triplets_and_flags_are_reported(revise_kit, tmp_path):
    records = write_triplets(tmp_path / "data", [BALL, {**SQUARES, "target": {"video": "nope.mp4"}}])
    result = invoke(revise_args({**revise_kit, "records": records}, tmp_path / "out"))
    assert result.exit_code == 1
    assert f"{records}:2: id={SQUARES['id']}: target video not found" in result.stderr
    assert "Traceback" not in result.stderr
    usage = invoke(revise_args(revise_kit, tmp_path / "out2", "--frames-critic", "9"))
    assert usage.exit_code == 2 and "--frames-critic 9 is more than --frames 5" in usage.stderr


@pytest.mark.slow
def test_two_processes_share_the_triplets_and_average_gradients(revise_kit, whole_run, tmp_path):
    """``torchrun --nproc_per_node 2``: each process takes its share of a micro-batch and its own draws."""
    import os
    import socket
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    args = revise_args(revise_kit, tmp_path / "ddp", "--max-steps", "1")
    done = subprocess.run([*torchrun, "-m", "vidcli", *args], env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    rows, single = read_jsonl(tmp_path / "ddp" / "steps.jsonl"), read_jsonl(whole_run / "steps.jsonl")
    # Process 0's first triplet and draws are a single-process run's first; process 1 holds the other triplet.
    assert len(rows) == 4 and rows[0] == single[0]
    assert {rows[0]["id"], rows[2]["id"]} == {BALL["id"], SQUARES["id"]}
    ours, alone = transformer_weights(tmp_path / "ddp"), transformer_weights(whole_run / "checkpoint-1")
    assert any(not torch.equal(ours[k], alone[k]) for k in alone)


def test_folding_the_text_padding_trains_the_same_editor(revise_kit, whole_run, tmp_path):
    """--fold-text-padding changes how the DiT attends to the instruction's padding, not what it computes: the
    same per-triplet losses and critic margins, and weights that differ from the padded run's only where
    rounding flipped the sign of a near-zero gradient under AdamW's first step."""
    out = tmp_path / "folded"
    result = invoke(revise_args(revise_kit, out, "--max-steps", "2", "--save-every", "1", "--fold-text-padding"))
    assert result.exit_code == 0, result.stderr
    close_records(read_jsonl(out / "steps.jsonl"), read_jsonl(whole_run / "steps.jsonl"))
    assert share_of_update(transformer_weights(out), transformer_weights(whole_run),
                           transformer_weights(revise_kit["wan"])) <= 1e-3
