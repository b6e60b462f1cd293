"""Sampling with a truncated gradient: only the last K denoising steps keep a graph.

A reward on the final video is back-propagated through the decoder into the last K
steps of the rollout. The first T−K steps run without autograd; each of the last K
evaluates the denoiser under activation checkpointing, so between forward and backward
a step keeps only its input latent (and the small scheduler arithmetic around it) and
recomputes the DiT activations when the gradient arrives.

Only the denoiser call is checkpointed, not the scheduler step: multistep schedulers
(UniPC, DPM) update their own history when they step, and a recomputation during
backward must not step them a second time.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from vidcli.diffusion import GeneratorAdapter


def truncated_rollout(
    adapter: GeneratorAdapter,
    prompts: list[str],
    *,
    steps: int,
    guidance: float,
    k_grad: int,
    height: int,
    width: int,
    frames: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    negative: list[str] | None = None,
    checkpoint_steps: bool = True,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Run ``steps`` denoising steps from fresh noise and return the final latents.

    The last ``k_grad`` steps run with gradient (when autograd is on at the call), the
    others without. ``seed`` makes a generator on the adapter's device when no
    ``generator`` is given. With ``k_grad=0`` the result equals the diffusers pipeline's
    ``output_type="latent"`` output for the same seed, steps, guidance and scheduler.
    ``on_step`` is called after every step (a progress bar).
    """
    if not 0 <= k_grad <= steps:
        raise ValueError(f"k_grad must be between 0 and steps={steps}, got {k_grad}")
    if generator is None and seed is not None:
        generator = torch.Generator(device=adapter.device).manual_seed(seed)
    want_grad = torch.is_grad_enabled()
    embeds = adapter.encode_prompt(list(prompts), negative, guidance)
    latents = adapter.prepare_latents(len(prompts), frames, height, width, generator)
    sampler = adapter.make_sampler(steps, generator)
    first_grad_step = len(sampler.timesteps) - k_grad
    for i, t in enumerate(sampler.timesteps):
        with_grad = want_grad and i >= first_grad_step
        with torch.set_grad_enabled(with_grad):
            if with_grad and checkpoint_steps:
                # Non-reentrant checkpointing gives the DiT parameters gradients even when the
                # step's input latent does not require grad (the first graph-carrying step).
                noise_pred = checkpoint(adapter.denoise, latents, t, embeds, guidance, use_reentrant=False)
            else:
                noise_pred = adapter.denoise(latents, t, embeds, guidance)
            latents = sampler.step(i, noise_pred, latents)
        if on_step is not None:
            on_step()
    return latents


def uniform_frame_indices(num_frames: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``num_frames`` frames, first and last included
    (the N_f frames a VLM reward looks at); one index is the middle frame."""
    if num_frames < 1 or count < 1:
        raise ValueError(f"need at least one frame and one index, got {num_frames} frames, {count} indices")
    if count == 1:
        return [(num_frames - 1) // 2]
    # Round half up (not Python's half-to-even), so the spacing does not depend on parity.
    return [int(i * (num_frames - 1) / (count - 1) + 0.5) for i in range(count)]
