"""Inference from generator checkpoints against the diffusers pipelines: t2v, LoRA, seeding, editing."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tests.cli.helpers import invoke
from tests.train.test_revise import BALL, SQUARES, write_triplets
from vidcli.diffusion.generate import (
    Settings,
    check_settings,
    default_settings,
    generate_videos,
    load_video_model,
    record_generator,
    to_uint8,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SETTINGS = Settings(steps=2, guidance=5.0, num_frames=5, height=32, width=32, fps=8.0, seed=3)
PROMPTS = {"car": "a red car drives through the street", "dog": "a small dog runs on the beach"}



@pytest.fixture(scope="session")
def gen_kit(tmp_path_factory):
    """The tiny Wan folder, a one-step drf-tune LoRA output and a one-step revise-tune editor."""
    from tests.train.test_drf import RECORD, write_records
    from vidcli.testing import ensure_tiny_models

    paths = ensure_tiny_models(["wan", "vlm"])
    root = tmp_path_factory.mktemp("generate-kit")
    common = ["--model", str(paths["wan"]), "--vlm", str(paths["vlm"]), "--height", "32", "--width", "32",
              "--frames", "5", "--max-steps", "1", "--seed", "1", "-q"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lora = invoke(["drf-tune", str(write_records(root / "captions", [RECORD])), "-o", str(root / "lora"), *common,
                       "--finetune", "lora", "--lora-rank", "4", "--reward", "vanilla", "--frames-vlm", "2",
                       "--steps", "2", "--k-grad", "1", "--guidance", "1", "--lr", "1e-2"])
        assert lora.exit_code == 0, lora.stderr
        triplets = write_triplets(root / "triplets", [BALL, SQUARES])
        editor = invoke(["revise-tune", str(triplets), "-o", str(root / "editor"), *common, "--objective", "sft",
                         "--grad-accum", "1", "--frames-critic", "2", "--lr", "1e-3"])
        assert editor.exit_code == 0, editor.stderr
    finally:
        torch.set_num_threads(before)
    return {"wan": paths["wan"], "vlm": paths["vlm"], "lora": root / "lora", "editor": root / "editor",
            "triplets": triplets}


@pytest.fixture(scope="module")
def base(gen_kit):
    return load_video_model(gen_kit["wan"], device="cpu")


def pipeline_frames(path, prompts: list[str], ids: list[str], settings: Settings, lora: bool = False):
    """The diffusers WanPipeline's own frames for these prompts, with our per-record generators."""
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(path)
    if lora:
        pipe.load_lora_weights(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompts, num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                num_frames=settings.num_frames, height=settings.height, width=settings.width, output_type="pt",
                generator=[record_generator(settings.seed, rid) for rid in ids]).frames


def test_text_to_video_equals_the_wan_pipeline(base, gen_kit):
    ids = list(PROMPTS)
    ours = generate_videos(base, list(PROMPTS.values()), ids, SETTINGS)
    assert ours.shape == (2, 5, 3, 32, 32)
    assert (ours - pipeline_frames(gen_kit["wan"], list(PROMPTS.values()), ids, SETTINGS)).abs().max() <= 1e-5
    # Rounded to 8 bits, frames-last, as the mp4 writer takes them.
    pixels = to_uint8(ours[0])
    assert pixels.shape == (5, 32, 32, 3)
    assert (torch.from_numpy(pixels).float() / 255 - ours[0].permute(0, 2, 3, 1)).abs().max() <= 0.5 / 255 + 1e-6


def test_each_record_has_its_own_noise_whatever_the_batch(base):
    together = generate_videos(base, list(PROMPTS.values()), list(PROMPTS), SETTINGS)
    alone = generate_videos(base, [PROMPTS["dog"]], ["dog"], SETTINGS)
    assert (together[1] - alone[0]).abs().max() <= 1e-5  # same video, alone or second in a batch
    renamed = generate_videos(base, [PROMPTS["dog"]], ["dog-2"], SETTINGS)
    reseeded = generate_videos(base, [PROMPTS["dog"]], ["dog"], replace(SETTINGS, seed=4))
    assert (renamed[0] - alone[0]).abs().max() > 1e-3 and (reseeded[0] - alone[0]).abs().max() > 1e-3
    # The seed is a hash of (seed, id): fixed across runs and machines.
    assert torch.equal(torch.randn(3, generator=record_generator(3, "dog")),
                       torch.randn(3, generator=record_generator(3, "dog")))


def test_defaults_come_from_vidcli_json_then_the_pipeline(base, gen_kit):
    plain = default_settings(base)
    assert (plain.steps, plain.guidance, plain.num_frames, plain.height, plain.width, plain.fps) == \
        (30, 5.0, 81, 480, 832, 16.0)
    assert plain.negative_prompt is None and plain.seed == 0
    editor = load_video_model(gen_kit["editor"], device="cpu")
    trained = default_settings(editor, steps=4, fps=10)
    assert (trained.steps, trained.num_frames, trained.height, trained.width, trained.fps) == (4, 5, 32, 32, 10)
    for bad, flag in ((dict(height=40), "--height 40"), (dict(width=8), "--width 8"),
                      (dict(num_frames=6), "--num-frames 6")):
        with pytest.raises(ValueError, match=flag):
            check_settings(base, replace(SETTINGS, **bad))


def test_a_lora_drf_tune_output_equals_the_pipeline_with_its_lora(base, gen_kit):
    info = json.loads((gen_kit["lora"] / "vidcli.json").read_text())
    assert info["command"] == "drf-tune" and info["finetune"] == "lora"
    tuned = load_video_model(gen_kit["lora"], device="cpu")
    assert tuned.mode == "t2v"
    ids, prompts = ["car"], [PROMPTS["car"]]
    ours = generate_videos(tuned, prompts, ids, SETTINGS)
    expected = pipeline_frames(gen_kit["lora"], prompts, ids, SETTINGS, lora=True)
    assert (ours - expected).abs().max() <= 1e-5
    assert (ours - generate_videos(base, prompts, ids, SETTINGS)).abs().max() > 1e-4  # the LoRA is applied


def hand_edit(editor_model, clip: dict, folder, instruction: str, record_id: str, settings: Settings):
    """The editing loop written out: source latents, seeded noise, UniPC steps of the editor's CFG velocity."""
    from vidcli.media import load_video

    adapter, editor = editor_model.adapter, editor_model.editor
    video = load_video(folder / clip["video"], num_frames=settings.num_frames, start=clip.get("start"),
                       end=clip.get("end"), size=(settings.width, settings.height))
    pixels = torch.from_numpy(video.frames).float().div(255).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)
    source = editor.encode(pixels)
    pipe = adapter.pipe
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt([instruction], [""], do_classifier_free_guidance=True,
                                          max_sequence_length=512, device=adapter.device)
        z = torch.randn((1, 16, 2, 4, 4), generator=record_generator(settings.seed, record_id))
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(settings.steps)
        for t in scheduler.timesteps:
            v_cond = editor.velocity(z, source, int(t) / 1000, cond)
            v_uncond = editor.velocity(z, source, int(t) / 1000, uncond)
            z = scheduler.step(v_uncond + settings.guidance * (v_cond - v_uncond), t, z, return_dict=False)[0]
        return adapter.decode(z)[0]


def test_edit_mode_samples_the_editor_as_it_was_trained(gen_kit):
    from vidcli.diffusion.edit import edit_videos, source_latents
    from vidcli.diffusion.editor import read_clip

    editor = load_video_model(gen_kit["editor"], device="cpu")
    assert editor.mode == "edit" and editor.editor is not None
    folder = gen_kit["triplets"].parent
    records = [BALL, SQUARES]
    sources = [source_latents(editor, read_clip(r, "source", folder), SETTINGS) for r in records]
    ours = edit_videos(editor, [r["instruction"] for r in records], sources, [r["id"] for r in records], SETTINGS)
    assert ours.shape == (2, 5, 3, 32, 32)
    for record, frames in zip(records, ours):
        expected = hand_edit(editor, record["source"], folder, record["instruction"], record["id"], SETTINGS)
        assert (frames - expected).abs().max() <= 1e-5
    # The source matters: the same noise and instruction with the other clip edits differently.
    swapped = edit_videos(editor, [BALL["instruction"]], [sources[1]], [BALL["id"]], SETTINGS)
    assert (swapped[0] - ours[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="editor"):
        generate_videos(editor, ["a cat"], ["x"], SETTINGS)


def test_a_folded_editor_edits_as_the_padded_one(gen_kit):
    """--fold-text-padding in edit mode: the instruction is attended to beside the source's tokens."""
    from vidcli.diffusion.edit import edit_videos, source_latents
    from vidcli.diffusion.editor import read_clip

    folder = gen_kit["triplets"].parent
    records = [BALL, SQUARES]
    edits = []
    for fold in (False, True):
        editor = load_video_model(gen_kit["editor"], device="cpu")
        if fold:
            editor.adapter.fold_text_padding()
        sources = [source_latents(editor, read_clip(r, "source", folder), SETTINGS) for r in records]
        edits.append(edit_videos(editor, [r["instruction"] for r in records], sources, [r["id"] for r in records],
                                 SETTINGS))
    padded, folded = edits
    assert (folded - padded).abs().max() <= 1e-5


def test_a_cogvideox_folder_generates_as_its_pipeline_does():
    from diffusers import CogVideoXPipeline

    from vidcli.testing import ensure_tiny_models

    path = ensure_tiny_models(["cogvideox"])["cogvideox"]
    model = load_video_model(path, device="cpu")
    defaults = default_settings(model)  # CogVideoX's own: guidance 6, its sample size and frames, 8 fps
    assert (defaults.guidance, defaults.num_frames, defaults.height, defaults.width, defaults.fps) == \
        (6.0, 9, 32, 32, 8.0)
    settings = replace(SETTINGS, num_frames=9, guidance=6.0)
    ours = generate_videos(model, list(PROMPTS.values()), list(PROMPTS), settings)
    pipe = CogVideoXPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(list(PROMPTS.values()), num_inference_steps=2, guidance_scale=6.0, num_frames=9, height=32,
                    width=32, output_type="pt", generator=[record_generator(3, rid) for rid in PROMPTS]).frames
    assert ours.shape == (2, 9, 3, 32, 32) and (ours - expected).abs().max() <= 1e-5


def test_an_editor_of_another_layout_is_refused(gen_kit, tmp_path):
    from vidcli.errors import InputError

    folder = tmp_path / "other-editor"
    folder.mkdir()
    for entry in gen_kit["editor"].iterdir():
        (folder / entry.name).symlink_to(entry)
    info = json.loads((gen_kit["editor"] / "vidcli.json").read_text())
    (folder / "vidcli.json").unlink()
    (folder / "vidcli.json").write_text(json.dumps({**info, "editor": {**info["editor"], "source_timestep": 1}}))
    with pytest.raises(InputError, match="editor layout this version cannot sample"):
        load_video_model(folder, device="cpu")


def test_on_step_counts_every_denoising_step(base):
    ticks = []
    generate_videos(base, ["a cat"], ["x"], replace(SETTINGS, steps=3), on_step=lambda: ticks.append(1))
    assert len(ticks) == 3
