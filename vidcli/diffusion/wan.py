"""Wan2.1 text-to-video (WanTransformer3DModel + AutoencoderKLWan + UMT5) as a generator adapter.

The adapter holds a :class:`diffusers.WanPipeline` loaded from its folder and reuses the
pipeline's own prompt encoding and noise drawing, so a rollout starts from exactly what
the pipeline would; only the sampling loop is ours (see :mod:`vidcli.diffusion.rollout`).

Decoding a prefix is exact for this VAE: it is causal in time and decodes latent frame
by latent frame with a feature cache, so latent frames ``0..n-1`` decode to the first
``1 + 4(n-1)`` video frames whatever follows them. :meth:`WanAdapter.decode` therefore
decodes only the latent prefix that covers the frames a reward asks for.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vidcli.diffusion import SchedulerSampler, TextEmbeds, freeze, resolve_dtype
from vidcli.errors import InputError


class WanAdapter:
    """Wan2.1 T2V: encode, draw noise, denoise with CFG, step, decode (see the module docstring)."""

    def __init__(self, pipe, *, max_sequence_length: int = 512) -> None:
        self.pipe = pipe
        # Text length padded to; 512 is what WanPipeline.__call__ uses (encode_prompt alone says 226).
        self.max_sequence_length = max_sequence_length
        self.device = pipe.transformer.device
        freeze(pipe.vae, pipe.text_encoder)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "float32",
                        vae_dtype: str | torch.dtype = "float32") -> "WanAdapter":
        """Load a ``WanPipeline`` folder; the VAE keeps its own dtype (float32 by default, as Wan advises)."""
        from diffusers import AutoencoderKLWan, WanPipeline

        vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", dtype=resolve_dtype(vae_dtype))
        pipe = WanPipeline.from_pretrained(path, vae=vae, dtype=resolve_dtype(dtype))
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device))

    def trainable_module(self) -> torch.nn.Module:
        return self.pipe.transformer

    def encode_prompt(self, prompts: list[str], negative: list[str] | None = None,
                      guidance: float = 5.0) -> TextEmbeds:
        with torch.no_grad():
            positive, neg = self.pipe.encode_prompt(
                prompt=list(prompts), negative_prompt=negative, do_classifier_free_guidance=guidance > 1.0,
                device=self.device, max_sequence_length=self.max_sequence_length,
            )
        dtype = self.pipe.transformer.dtype
        return TextEmbeds(positive.to(dtype), neg.to(dtype) if neg is not None else None)

    def prepare_latents(self, batch: int, frames: int, height: int, width: int,
                        generator: torch.Generator | None) -> torch.Tensor:
        # float32 latents whatever the DiT dtype, as the pipeline keeps them.
        return self.pipe.prepare_latents(batch, self.pipe.transformer.config.in_channels, height, width, frames,
                                         torch.float32, self.device, generator)

    def make_sampler(self, steps: int, generator: torch.Generator | None = None) -> SchedulerSampler:
        return SchedulerSampler(self.pipe.scheduler, steps, self.device)

    def denoise(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: TextEmbeds,
                guidance: float) -> torch.Tensor:
        model = self.pipe.transformer
        x = latents.to(model.dtype)
        t = timestep.expand(latents.shape[0])
        pred = model(hidden_states=x, timestep=t, encoder_hidden_states=embeds.positive, return_dict=False)[0]
        if guidance > 1.0:
            uncond = model(hidden_states=x, timestep=t, encoder_hidden_states=embeds.negative, return_dict=False)[0]
            pred = uncond + guidance * (pred - uncond)
        return pred

    def latent_frames_for(self, frame_indices: list[int]) -> int:
        """How many leading latent frames decode to a video that holds every index asked for."""
        scale = self.pipe.vae_scale_factor_temporal
        return max(0 if f == 0 else (f - 1) // scale + 1 for f in frame_indices) + 1

    def decode(self, latents: torch.Tensor, frame_indices: list[int] | None = None) -> torch.Tensor:
        """(B, C, T, h, w) latents → (B, F, 3, H, W) frames in [0, 1]; with ``frame_indices``, only those."""
        vae = self.pipe.vae
        if frame_indices is not None:
            if min(frame_indices) < 0:
                raise InputError("frame indices must be non-negative")
            latents = latents[:, :, :self.latent_frames_for(frame_indices)]
        latents = latents.to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
        # Same arithmetic as the pipeline (divide by 1/std), so decodes agree to the last bit.
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        # The pipeline's post-processing: [-1, 1] → [0, 1], frames before channels.
        frames = (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
        if frame_indices is not None:
            if max(frame_indices) >= frames.shape[1]:
                raise InputError(f"frame index {max(frame_indices)} is past the {frames.shape[1]} decoded frames")
            frames = frames[:, list(frame_indices)]
        return frames
