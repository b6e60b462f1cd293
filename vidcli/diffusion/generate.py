"""Inference from a generator checkpoint: prompts → videos, or source clip + instruction → edited video.

What a checkpoint folder is decides the mode (:func:`load_video_model`):

- a diffusers ``WanPipeline`` / ``CogVideoXPipeline`` folder, or a ``drf-tune`` output
  (the same, with a tuned ``transformer/``): text-to-video (``t2v``);
- the same holding ``pytorch_lora_weights.safetensors`` (``drf-tune --finetune lora``):
  the adapter is loaded on top with ``pipe.load_lora_weights``, as a diffusers user would;
- a ``revise-tune`` output (``vidcli.json`` says so): ``edit`` — the in-context editor of
  :mod:`vidcli.train.revise`, sampled by :func:`vidcli.diffusion.edit.edit_videos`.

Text-to-video sampling is :func:`~vidcli.diffusion.rollout.truncated_rollout` without a
gradient, which reproduces the diffusers pipeline's own output, then a full decode.

Seeding: every record's initial noise comes from its own CPU ``torch.Generator`` seeded
by a hash of (seed, record id) (:func:`record_generator`), so a record's video does not
depend on which records share its batch, the input order, sharding or ``--resume``; a
CPU generator also draws the same noise whichever device samples.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vidcli.diffusion import GeneratorAdapter, load_tuned_adapter
from vidcli.errors import InputError

DEFAULT_STEPS = 30  # Diffusion-DRF's inference setting (25 in training)
# Frame rates the two families generate at (Wan2.1: 16 fps; CogVideoX: 8 fps).
FAMILY_FPS = {"WanPipeline": 16.0, "CogVideoXPipeline": 8.0}


@dataclass
class Settings:
    """Sampling settings shared by every record of a run."""

    steps: int
    guidance: float
    num_frames: int
    height: int
    width: int
    fps: float
    seed: int = 0
    negative_prompt: str | None = None  # None: the pipeline's (empty text)


@dataclass
class VideoModel:
    """A loaded checkpoint: the adapter, the mode it implies and what its ``vidcli.json`` recorded."""

    path: str
    adapter: GeneratorAdapter
    mode: str  # "t2v" or "edit"
    info: dict  # vidcli.json ({} for a plain pipeline folder)
    editor: Any = None  # InContextEditor in edit mode

    @property
    def pipeline_class(self) -> str:
        return type(self.adapter.pipe).__name__


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """``auto``: CUDA when available; bfloat16 on CUDA, float32 on the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, dtype


def load_video_model(path: str | Path, *, device: str = "auto", dtype: str = "auto") -> VideoModel:
    """Load a checkpoint folder and decide its mode (see the module docstring)."""
    from vidcli.train.checkpoint import read_run_info

    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"--model {path}: no such folder")
    device, dtype = resolve_device(device, dtype)
    info = read_run_info(folder) or {}
    adapter = load_tuned_adapter(folder, device=device, dtype=dtype)
    model = VideoModel(str(path), adapter, "t2v", info)
    if info.get("command") == "revise-tune":
        from vidcli.diffusion.editor import EDITOR_LAYOUT, InContextEditor

        editor = info.get("editor") or {}
        if editor.get("layout") != EDITOR_LAYOUT or editor.get("source_timestep") != 0:
            raise InputError(f"--model {path}: vidcli.json describes an editor layout this version cannot sample "
                             f"({json.dumps(editor)}); expected {EDITOR_LAYOUT!r} with source timestep 0")
        model.mode, model.editor = "edit", InContextEditor(adapter)
    return model


def _pipeline_default(pipe, name: str) -> Any:
    """A default of the pipeline's ``__call__``; where it is None (CogVideoX), what the pipeline
    then takes: the transformer's sample size and frame count."""
    value = inspect.signature(type(pipe).__call__).parameters[name].default
    if value is None and name in ("height", "width"):
        value = getattr(pipe.transformer.config, f"sample_{name}") * pipe.vae_scale_factor_spatial
    elif value is None and name == "num_frames":
        value = pipe.transformer.config.sample_frames
    return value


def default_settings(model: VideoModel, *, steps: int | None = None, guidance: float | None = None,
                     num_frames: int | None = None, height: int | None = None, width: int | None = None,
                     fps: float | None = None, seed: int = 0, negative_prompt: str | None = None) -> Settings:
    """Fill what the caller left as None.

    steps: 30; guidance: the pipeline's default; frames and size: what ``vidcli.json``
    recorded for training, else the pipeline's defaults; fps: the family's frame rate.
    """
    pipe = model.adapter.pipe
    trained = model.info.get("arguments") or {}

    def pick(given, trained_key, pipe_key):
        if given is not None:
            return given
        return trained.get(trained_key) or _pipeline_default(pipe, pipe_key)

    settings = Settings(
        steps=steps if steps is not None else DEFAULT_STEPS,
        guidance=guidance if guidance is not None else float(_pipeline_default(pipe, "guidance_scale")),
        num_frames=int(pick(num_frames, "frames", "num_frames")),
        height=int(pick(height, "height", "height")), width=int(pick(width, "width", "width")),
        fps=fps if fps is not None else FAMILY_FPS.get(model.pipeline_class, 16.0),
        seed=seed, negative_prompt=negative_prompt)
    check_settings(model, settings)
    return settings


def check_settings(model: VideoModel, settings: Settings) -> None:
    """Shapes the model can sample: ValueError naming the flag otherwise."""
    pipe = model.adapter.pipe
    patch = pipe.transformer.config.patch_size
    multiple = pipe.vae_scale_factor_spatial * (patch[-1] if isinstance(patch, (list, tuple)) else patch)
    temporal = pipe.vae_scale_factor_temporal
    for flag, value in (("--height", settings.height), ("--width", settings.width)):
        if value < multiple or value % multiple:
            raise ValueError(f"{flag} {value} must be a positive multiple of {multiple} for this model")
    if settings.num_frames < 1 or (settings.num_frames - 1) % temporal:
        raise ValueError(f"--num-frames {settings.num_frames} must be {temporal}k+1 for this model")
    # Wan's rotary table has rope_max_seq_len positions per axis; past it sampling fails deep
    # inside the transformer, after the text encoder and the first steps have run.
    limit = getattr(pipe.transformer.config, "rope_max_seq_len", None)
    if limit:
        p_t = patch[0] if isinstance(patch, (list, tuple)) else 1
        positions = {"--num-frames": (settings.num_frames - 1) // temporal // p_t + 1,
                     "--height": settings.height // multiple, "--width": settings.width // multiple}
        largest = {"--num-frames": (limit * p_t - 1) * temporal + 1, "--height": limit * multiple,
                   "--width": limit * multiple}
        for flag, count in positions.items():
            if count > limit:
                raise ValueError(f"{flag} {getattr(settings, flag[2:].replace('-', '_'))} is beyond this model's "
                                 f"positions ({limit} per axis): at most {largest[flag]}")


def generation_record(model: VideoModel, settings: Settings) -> dict:
    """What ``output.generation`` says about how a video was made."""
    body = asdict(settings)
    return {"model": model.path, "mode": model.mode, **{k: body[k] for k in (
        "seed", "steps", "guidance", "num_frames", "height", "width", "fps", "negative_prompt")}}


def record_generator(seed: int, record_id: str) -> torch.Generator:
    """A CPU generator seeded by a hash of (seed, id): one record's noise, whatever else is sampled."""
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode("utf-8")).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def record_generators(settings: Settings, ids: list[str]) -> list[torch.Generator]:
    """One generator per record of a batch; the pipelines' noise helpers take such a list."""
    return [record_generator(settings.seed, rid) for rid in ids]


def negatives(settings: Settings, count: int) -> list[str] | None:
    return None if settings.negative_prompt is None else [settings.negative_prompt] * count


def generate_videos(model: VideoModel, prompts: list[str], ids: list[str], settings: Settings,
                    on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """Text-to-video for a batch: frames (B, F, 3, H, W) in [0, 1], one seeded noise per id;
    ``on_step`` is called after every denoising step."""
    from vidcli.diffusion.rollout import truncated_rollout

    if model.mode != "t2v":
        raise ValueError(f"{model.path} is an editor: use edit_videos")
    with torch.no_grad():
        # A list of generators: the pipeline draws each record's noise (and, for samplers that
        # add noise while stepping, that too) from its own generator.
        latents = truncated_rollout(
            model.adapter, list(prompts), steps=settings.steps, guidance=settings.guidance, k_grad=0,
            height=settings.height, width=settings.width, frames=settings.num_frames,
            generator=record_generators(settings, ids), negative=negatives(settings, len(prompts)), on_step=on_step)
        return model.adapter.decode(latents).float()


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [0, 1] → (F, H, W, 3) uint8, rounded."""
    return (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
