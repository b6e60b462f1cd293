"""``vidcli drf-tune`` end to end: help, a run with heatmaps and checkpoints, exact resume, errors."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from tests.cli.helpers import close_records, invoke, read_jsonl, share_of_update
from tests.train.test_drf import RECORD, drf_kit, write_records  # noqa: F401  (fixtures)
from tests.train.trackers import (
    need_trackers,
    offline_wandb,
    tensorboard_events,
    trackers_installed,
    wandb_history,
    wandb_runs,
)
from vidcli.train.heatmaps import figure_pixels, heatmap_figure

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def drf_args(kit, out, *extra) -> list[str]:
    # --vlm in the backend spec form every command takes (a bare folder works too).
    return ["drf-tune", "--model", str(kit["wan"]), "--vlm", f"hf:{kit['vlm']}", str(kit["records"]), "-o", str(out),
            "--frames-vlm", "3", "--k-grad", "1", "--steps", "2", "--guidance", "1", "--height", "32",
            "--width", "32", "--frames", "5", "--lr", "1e-3", "--seed", "5", "-q", *extra]


def transformer_weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")


def test_help_lists_defaults_and_examples():
    result = invoke(["drf-tune", "--help"])
    assert result.exit_code == 0
    for text in ("Examples:", "accelerate launch -m vidcli drf-tune", "--reward [vanilla|rich|binary]",
                 "default: rich", "default: TA,Phy,VQ", "default: 1e-05", "--finetune [full|lora]",
                 "--save-grad-heatmaps", "--vlm-dtype [auto|float32|bf16]", "WanPipeline.from_pretrained",
                 "(the paper lists 5.0)"):
        assert text in " ".join(result.output.split()), text  # help lines wrap anywhere
    assert "drf-tune" in invoke(["--help"]).output


@pytest.fixture(scope="module")
def whole_run(drf_kit, tmp_path_factory):
    """Two steps with a checkpoint after the first, heatmaps for the first sample only; where the
    tracker packages are installed, TensorBoard and W&B get the watched prompt at steps 0 and 2
    (the resume test below, without them, then also shows that watching does not change training)."""
    out = tmp_path_factory.mktemp("drf-run") / "whole"
    heatmaps = out.parent / "heatmaps"
    trackers = ["--report-to", "tensorboard,wandb", "--log-samples-every", "2", "--log-samples", "1"] \
        if trackers_installed() else []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with offline_wandb(out.parent) if trackers else contextlib.nullcontext():
        result = invoke(drf_args(drf_kit, out, "--max-steps", "2", "--save-every", "1", "--shift", "4",
                                 "--save-grad-heatmaps", str(heatmaps), "--heatmap-samples", "1",
                                 "--heatmap-per-question", *trackers))
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.stderr
    return out, heatmaps


def test_run_writes_a_loadable_pipeline_rewards_and_heatmaps(drf_kit, whole_run):
    from diffusers import WanPipeline
    from PIL import Image

    out, heatmaps = whole_run
    info = json.loads((out / "vidcli.json").read_text())
    assert info["step"] == 2 and info["final"] and info["finetune"] == "full" and info["reward"] == "rich"
    assert info["base_model"] == str(drf_kit["wan"]) and info["arguments"]["k_grad"] == 1
    assert (out / "checkpoint-1" / "vidcli.json").is_file()

    rewards = read_jsonl(out / "rewards.jsonl")
    assert [(r["step"], r["id"]) for r in rewards] == [(1, "ball"), (2, "ball")]
    assert all(len(r["queries"]) == 2 and all(q["loglik"] < 0 for q in r["queries"]) for r in rewards)

    # The folder loads as a pipeline whose transformer is the tuned one; the rest is the base.
    pipe = WanPipeline.from_pretrained(out)
    tuned, base = transformer_weights(out), transformer_weights(drf_kit["wan"])
    state = pipe.transformer.state_dict()
    assert all(torch.equal(state[k], tuned[k]) for k in tuned)
    assert any(not torch.equal(tuned[k], base[k]) for k in tuned)
    assert (out / "vae").resolve() == (drf_kit["wan"] / "vae").resolve()
    assert pipe.scheduler.config.flow_shift == 4.0 and info["arguments"]["shift"] == 4.0  # --shift 4

    (png,) = sorted(heatmaps.iterdir())  # --heatmap-samples 1: only the first step's sample
    assert png.name == "step000001-ball.png"
    image = np.asarray(Image.open(png).convert("RGB"))
    # The frame row, the summed gradient's row and one row per question (TA, VQ), N_f = 3 columns.
    layout = heatmap_figure(torch.zeros(3, 3, 32, 32), [("R", torch.zeros(3, 3, 32, 32))] * 3)
    assert image.shape == figure_pixels(layout).shape
    assert image.std() > 10  # frames, colours and labels, not a blank picture


def test_trackers_watch_a_fixed_prompt_and_get_the_heatmaps(drf_kit, whole_run):
    from PIL import Image

    from vidcli.diffusion import set_flow_shift
    from vidcli.diffusion.generate import default_settings, generate_videos, load_video_model, to_uint8

    need_trackers()
    out, _ = whole_run
    events = tensorboard_events(out / "logs", "vidcli-drf")
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    videos = events.Images("samples/ball")
    assert [e.step for e in videos] == [0, 2]  # before training, then every 2 steps (and the last)
    for event in videos:
        with Image.open(io.BytesIO(event.encoded_image_string)) as gif:
            assert gif.format == "GIF" and gif.size == (32, 32) and gif.n_frames == 5
    # The frames the VLM would see, side by side: at step 0 those of the base model (sampled with
    # the run's --shift 4) for this prompt with the noise `vidcli generate --seed 5` draws for "ball".
    strips = events.Images("samples/ball/frames")
    assert [e.step for e in strips] == [0, 2]
    base = load_video_model(drf_kit["wan"], device="cpu", dtype="float32")
    set_flow_shift(base.adapter.pipe, 4.0)
    settings = default_settings(base, steps=2, guidance=1.0, num_frames=5, height=32, width=32, seed=5)
    expected = to_uint8(generate_videos(base, [RECORD["caption"]], ["ball"], settings)[0])[[0, 2, 4]]
    with Image.open(io.BytesIO(strips[0].encoded_image_string)) as strip:
        shown = np.asarray(strip.convert("RGB")).astype(int)
    assert shown.shape == (32, 96, 3)
    assert np.abs(shown - np.concatenate(list(expected), axis=1)).max() <= 1
    (heat,) = events.Images("heatmaps")
    assert heat.step == 2 and heat.width > 300

    (run,) = wandb_runs(out / "logs")
    media = {row["_step"]: row for row in wandb_history(run) if "samples/ball/path" in row}
    assert sorted(media) == [0, 2] and media[0]["samples/ball/caption"] == RECORD["caption"]
    for row in media.values():
        assert (run / "files" / row["samples/ball/path"]).read_bytes()[:6] == b"GIF89a"
        assert (run / "files" / row["samples/ball/frames/path"]).is_file()
    assert "heatmaps/path" in media[2]


def test_resume_from_a_checkpoint_continues_exactly(drf_kit, whole_run, tmp_path):
    out, _ = whole_run
    cut = tmp_path / "cut"
    # As if the run had died after writing checkpoint-1 and the step-2 line of rewards.jsonl.
    shutil.copytree(out / "checkpoint-1", cut / "checkpoint-1", symlinks=True)
    shutil.copy(out / "rewards.jsonl", cut / "rewards.jsonl")
    result = invoke(drf_args(drf_kit, cut, "--max-steps", "2", "--save-every", "1", "--shift", "4", "--resume"))
    assert result.exit_code == 0, result.stderr
    ours, theirs = transformer_weights(cut), transformer_weights(out)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert read_jsonl(cut / "rewards.jsonl") == read_jsonl(out / "rewards.jsonl")
    assert json.loads((cut / "vidcli.json").read_text())["step"] == 2
    # Without --resume the folder is refused; with another reward it is refused too.
    again = invoke(drf_args(drf_kit, cut, "--max-steps", "3"))
    assert again.exit_code == 1 and "pass --resume" in again.stderr
    other = invoke(drf_args(drf_kit, cut, "--max-steps", "3", "--resume", "--reward", "binary"))
    assert other.exit_code == 1 and "was trained with" in other.stderr


def test_bad_records_and_flags_are_reported(drf_kit, tmp_path):
    records = write_records(tmp_path / "data", [RECORD, {"id": "nocap", "questions": []}])
    result = invoke(drf_args({**drf_kit, "records": records}, tmp_path / "out"))
    assert result.exit_code == 1
    assert f"{records}:2: id=nocap: missing or empty 'caption'" in result.stderr
    assert "Traceback" not in result.stderr
    usage = invoke(drf_args(drf_kit, tmp_path / "out2", "--k-grad", "3"))
    assert usage.exit_code == 2 and "--k-grad 3 is more than --steps 2" in usage.stderr
    dims = invoke(drf_args(drf_kit, tmp_path / "out3", "--dims", "TA,XX"))
    assert dims.exit_code == 2 and "--dims" in dims.stderr


def test_folding_the_text_padding_tunes_the_same_generator(drf_kit, whole_run, tmp_path):
    """--fold-text-padding: the same rewards step by step (the rollout, its truncated gradient and the
    critic's answers), and weights apart from the padded run's by a rounding's share of their update."""
    out, _ = whole_run
    folded = tmp_path / "folded"
    result = invoke(drf_args(drf_kit, folded, "--max-steps", "2", "--save-every", "1", "--shift", "4",
                             "--fold-text-padding"))
    assert result.exit_code == 0, result.stderr
    close_records(read_jsonl(folded / "rewards.jsonl"), read_jsonl(out / "rewards.jsonl"))
    assert share_of_update(transformer_weights(folded), transformer_weights(out),
                           transformer_weights(drf_kit["wan"])) <= 1e-3
