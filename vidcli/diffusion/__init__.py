"""Text-to-video generators behind one small interface, for reward fine-tuning.

An adapter wraps a diffusers pipeline folder (Wan2.1 T2V or CogVideoX) and exposes
the pieces a trainer needs one by one: prompt encoding, initial noise, one guided
denoiser evaluation, a fresh scheduler for one rollout, and a differentiable decode.
:func:`vidcli.diffusion.rollout.truncated_rollout` runs the sampling loop on top.

This module holds the interface and the pieces both adapters share; it imports no torch
at module level, so ``vidcli --help`` stays fast. The adapters live in
:mod:`vidcli.diffusion.wan` and :mod:`vidcli.diffusion.cogvideox`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class Sampler(Protocol):
    """One rollout's scheduler state: the timesteps and how to take a step."""

    timesteps: "torch.Tensor"

    def step(self, index: int, noise_pred: "torch.Tensor", latents: "torch.Tensor") -> "torch.Tensor":
        """Latents after step ``index`` (differentiable in both tensors)."""


class GeneratorAdapter(Protocol):
    """What a rollout and a trainer need from a text-to-video generator."""

    device: "torch.device"

    def trainable_module(self) -> "torch.nn.Module":
        """The denoiser (DiT); everything else stays frozen."""

    def fold_text_padding(self) -> None:
        """Attend to the text's padding once, weighted by its count (Wan; others raise InputError)."""

    def encode_prompt(self, prompts: list[str], negative: list[str] | None, guidance: float) -> Any:
        """Text embeddings for the prompts (and the negatives when ``guidance > 1``)."""

    def prepare_latents(self, batch: int, frames: int, height: int, width: int,
                        generator: "torch.Generator | None") -> "torch.Tensor":
        """Initial noise z_T, drawn exactly as the pipeline draws it."""

    def make_sampler(self, steps: int, generator: "torch.Generator | None") -> Sampler:
        """A fresh scheduler for one rollout (schedulers keep per-rollout state)."""

    def denoise(self, latents: "torch.Tensor", timestep: "torch.Tensor", embeds: Any,
                guidance: float) -> "torch.Tensor":
        """The guided model prediction at one timestep."""

    def decode(self, latents: "torch.Tensor", frame_indices: list[int] | None = None) -> "torch.Tensor":
        """Frames in [0, 1] as (B, F, 3, H, W), differentiable in the latents."""


@dataclass
class TextEmbeds:
    """Encoded prompts; ``negative`` is None when classifier-free guidance is off."""

    positive: "torch.Tensor"
    negative: "torch.Tensor | None"


class SchedulerSampler:
    """A fresh copy of a pipeline's scheduler, stepped the way the pipeline steps it."""

    def __init__(self, template: Any, steps: int, device: "torch.device", **step_kwargs: Any) -> None:
        # Multistep schedulers (UniPC, DPM) remember earlier outputs: never share one across rollouts.
        self.scheduler = type(template).from_config(template.config)
        self.scheduler.set_timesteps(steps, device=device)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        self.timesteps = self.scheduler.timesteps
        self.step_kwargs = step_kwargs

    def step(self, index: int, noise_pred: "torch.Tensor", latents: "torch.Tensor") -> "torch.Tensor":
        t = self.timesteps[index]
        return self.scheduler.step(noise_pred, t, latents, **self.step_kwargs, return_dict=False)[0]


def set_flow_shift(pipe: Any, shift: float) -> None:
    """Give ``pipe`` its scheduler with the flow shift ``shift`` (the sigma schedule's
    σ' = s·σ / (1 + (s−1)·σ)); an InputError for a scheduler without one.

    UniPC and DPM schedulers on flow sigmas (Wan) call it ``flow_shift``; the flow-matching
    Euler scheduler ``shift``. CogVideoX's DDIM/DPM schedulers are not flow-matching ones.
    """
    from vidcli.errors import InputError

    config = pipe.scheduler.config
    if config.get("use_flow_sigmas") and "flow_shift" in config:
        key = "flow_shift"
    elif "shift" in config and not config.get("use_dynamic_shifting"):
        key = "shift"
    else:
        raise InputError(f"--shift: the pipeline's {type(pipe.scheduler).__name__} is not a flow-matching "
                         "scheduler with a fixed shift")
    pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: float(shift)})


def resolve_dtype(dtype: "str | torch.dtype") -> "torch.dtype":
    """``"bfloat16"`` → ``torch.bfloat16``; a torch dtype passes through."""
    import torch

    from vidcli.errors import InputError

    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise InputError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


class OffloadedTextEncoder:
    """A frozen text encoder kept in CPU memory and moved to the GPU only while it encodes.

    The text encoders of these generators are large (UMT5-XXL: 5.7 B parameters, 11 GB in
    bf16) and run once per rollout, so a trainer can keep them off the GPU for two
    transfers per step (``--offload-text-encoder``).
    """

    def __init__(self, pipe: Any, device: "torch.device") -> None:
        from vidcli import weights

        self.pipe = pipe
        self.device = device
        pipe.text_encoder.to(weights.placement("cpu"))  # a model built to be sized stays on the meta device

    def __enter__(self) -> None:
        self.pipe.text_encoder.to(self.device)

    def __exit__(self, *exc: object) -> None:
        self.pipe.text_encoder.to("cpu")


def text_encoder_placement(adapter: Any):
    """The context a prompt encoding runs in: moves an offloaded text encoder in and out."""
    import contextlib

    offloaded = getattr(adapter, "offloaded_text_encoder", None)
    return offloaded if offloaded is not None else contextlib.nullcontext()


def freeze(*modules: "torch.nn.Module") -> None:
    """Frozen helpers (VAE, text encoder, VLM): no parameter gradients, eval mode (no dropout)."""
    for module in modules:
        module.requires_grad_(False)
        module.eval()


# Where a LoRA-tuned generator keeps its adapter (``drf-tune --finetune lora``), the file
# name diffusers' ``load_lora_weights`` looks for.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def load_tuned_adapter(path: str | Path, *, device: str = "cpu", dtype: str = "float32",
                       fuse: bool = False) -> GeneratorAdapter:
    """:func:`load_adapter`, with a LoRA adapter in the folder (:data:`LORA_WEIGHTS`) applied on top
    as a diffusers user would (``pipe.load_lora_weights``); ``fuse`` merges it into the weights
    and drops the LoRA layers (faster, for a generator that stays frozen)."""
    adapter = load_adapter(path, device=device, dtype=dtype)
    if (Path(path) / LORA_WEIGHTS).is_file():
        adapter.pipe.load_lora_weights(str(path), weight_name=LORA_WEIGHTS)
        if fuse:
            adapter.pipe.fuse_lora()
            adapter.pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
    return adapter


def load_adapter(path: str | Path, *, device: str = "cpu", dtype: str = "float32",
                 text_encoder_dtype: str | None = None, vae_dtype: str | None = None) -> GeneratorAdapter:
    """The adapter for a diffusers pipeline folder, chosen by its ``model_index.json``; the text
    encoder in ``text_encoder_dtype`` and the VAE in ``vae_dtype`` when given (else the
    adapter's defaults: ``dtype``, and float32 for Wan's VAE)."""
    from vidcli.errors import InputError

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):  # set by setup_logging for -q and pipes
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # diffusers' own loading bar ignores the variable
    index = Path(path) / "model_index.json"
    try:
        kind = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a diffusers pipeline folder ({exc})") from None
    if kind == "WanPipeline":
        from vidcli.diffusion.wan import WanAdapter

        return WanAdapter.from_pretrained(path, device=device, dtype=dtype, text_encoder_dtype=text_encoder_dtype,
                                          vae_dtype=vae_dtype or "float32")
    if kind == "CogVideoXPipeline":
        from vidcli.diffusion.cogvideox import CogVideoXAdapter

        return CogVideoXAdapter.from_pretrained(path, device=device, dtype=dtype,
                                                text_encoder_dtype=text_encoder_dtype, vae_dtype=vae_dtype)
    raise InputError(f"{path}: pipeline {kind!r} is not supported; use a WanPipeline or CogVideoXPipeline folder")
