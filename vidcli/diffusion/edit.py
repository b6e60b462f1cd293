"""Editing with a ``revise-tune`` checkpoint: source clip + instruction → edited clip.

Sampling follows the layout the editor was trained with (``vidcli.json`` ``editor``,
checked by :func:`~vidcli.diffusion.generate.load_video_model`), through the training
code itself (:class:`~vidcli.diffusion.editor.InContextEditor`):

- the source clip gives ``num_frames`` frames spread over ``[start, end)``, resized to
  the output size (:meth:`~vidcli.diffusion.editor.Clip.pixels`, as in training) and encoded
  to clean latents (posterior mean, normalised);
- the target starts from seeded noise and is denoised by the pipeline's own scheduler
  (Wan: UniPC on shifted flow sigmas); at each step the DiT sees
  ``cat[z_t, source]`` over frames with timestep ``t`` on target tokens and 0 on source
  tokens, ``t`` being the scheduler's timestep over ``num_train_timesteps`` — the
  timestep Wan's own pipeline gives its DiT;
- classifier-free guidance contrasts the instruction with empty text (what training
  dropped the instruction to; ``--negative-prompt`` replaces it):
  v = v_uncond + g·(v_cond − v_uncond).
"""
from __future__ import annotations

from typing import Callable

import torch

from vidcli.diffusion.generate import Settings, VideoModel, negatives, record_generators


def source_latents(model: VideoModel, clip, settings: Settings) -> torch.Tensor:
    """Clean latents (1, C, T, h, w) of a source :class:`~vidcli.diffusion.editor.Clip` at the output's size."""
    pixels = clip.pixels(settings.num_frames, settings.width, settings.height)  # (T, 3, H, W)
    return model.editor.encode(pixels.permute(1, 0, 2, 3)[None])


def edit_videos(model: VideoModel, instructions: list[str], sources: list[torch.Tensor], ids: list[str],
                settings: Settings, on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """Edited frames (B, F, 3, H, W) in [0, 1] for a batch of (instruction, source latents);
    ``on_step`` is called after every denoising step."""
    if model.mode != "edit":
        raise ValueError(f"{model.path} is not an editor (a revise-tune output)")
    adapter, editor = model.adapter, model.editor
    cfg = settings.guidance > 1.0
    with torch.no_grad():
        embeds = adapter.encode_prompt(list(instructions), negatives(settings, len(instructions)), settings.guidance)
        source = torch.cat(sources).to(adapter.device)
        z = adapter.prepare_latents(len(ids), settings.num_frames, settings.height, settings.width,
                                    record_generators(settings, ids))
        sampler = adapter.make_sampler(settings.steps)
        scale = sampler.scheduler.config.num_train_timesteps
        for i, timestep in enumerate(sampler.timesteps):
            t = float(timestep) / scale
            v = editor.velocity(z, source, t, embeds.positive)
            if cfg:
                v_uncond = editor.velocity(z, source, t, embeds.negative)
                v = v_uncond + settings.guidance * (v - v_uncond)
            z = sampler.step(i, v, z)
            if on_step is not None:
                on_step()
        return adapter.decode(z).float()
