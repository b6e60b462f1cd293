"""Wan2.1 text-to-video (WanTransformer3DModel + AutoencoderKLWan + UMT5) as a generator adapter.

The adapter holds a :class:`diffusers.WanPipeline` loaded from its folder and reuses the
pipeline's own prompt encoding and noise drawing, so a rollout starts from exactly what
the pipeline would; only the sampling loop is ours (see :mod:`vidcli.diffusion.rollout`).

Decoding a prefix is exact for this VAE: it is causal in time and decodes latent frame
by latent frame with a feature cache, so latent frames ``0..n-1`` decode to the first
``1 + 4(n-1)`` video frames whatever follows them. :meth:`WanAdapter.decode` therefore
decodes only the latent prefix that covers the frames a reward asks for.

**Decoding under activation checkpointing** (``decode_checkpointing``, on by default for
training): a differentiable decode of a whole clip keeps every decoder activation of
every frame until backward — at 49 × 288 × 512 tens of GB, more than the DiT. With
checkpointing the decode keeps only its input latents (and the frames it returns); when
the gradient arrives it is run again, latent frame by latent frame, each frame under its
own checkpoint whose inputs are the latent slice and the feature cache it starts from.
Backward then holds the caches of the decoded prefix and one frame's activations at a
time, and only while the decode's own backward runs — never at the same time as the
reward model's graph. Values and gradients equal the plain decode's (same operations).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from vidcli.diffusion import SchedulerSampler, TextEmbeds, freeze, resolve_dtype, text_encoder_placement
from vidcli.errors import InputError


class WanAdapter:
    """Wan2.1 T2V: encode, draw noise, denoise with CFG, step, decode (see the module docstring)."""

    def __init__(self, pipe, *, max_sequence_length: int = 512) -> None:
        self.pipe = pipe
        # Text length padded to; 512 is what WanPipeline.__call__ uses (encode_prompt alone says 226).
        self.max_sequence_length = max_sequence_length
        self.device = pipe.transformer.device
        self.decode_checkpointing = False  # see the module docstring; trainers turn it on
        self.offloaded_text_encoder = None  # an OffloadedTextEncoder when the trainer offloads it
        freeze(pipe.vae, pipe.text_encoder)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "float32",
                        vae_dtype: str | torch.dtype = "float32",
                        text_encoder_dtype: str | torch.dtype | None = None) -> "WanAdapter":
        """Load a ``WanPipeline`` folder in ``dtype``; the VAE keeps its own dtype (float32 by default,
        as Wan advises) and the text encoder ``text_encoder_dtype`` (default: ``dtype``)."""
        from diffusers import AutoencoderKLWan, WanPipeline
        from transformers import UMT5EncoderModel

        from vidcli import weights

        own = {"vae": weights.load_model(AutoencoderKLWan, path, subfolder="vae", dtype=resolve_dtype(vae_dtype))}
        if text_encoder_dtype is not None:
            own["text_encoder"] = weights.load_model(UMT5EncoderModel, path, subfolder="text_encoder",
                                                     dtype=resolve_dtype(text_encoder_dtype))
        if weights.reading_weights():
            pipe = WanPipeline.from_pretrained(path, **own, dtype=resolve_dtype(dtype))
        else:
            pipe = WanPipeline(**weights.pipeline_components(path, dtype=resolve_dtype(dtype), overrides=own))
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(weights.placement(device)))

    def trainable_module(self) -> torch.nn.Module:
        return self.pipe.transformer

    def fold_text_padding(self) -> None:
        """Attend to each prompt's zero padding as one key weighted by its count
        (:mod:`vidcli.diffusion.folded_text`): the same predictions up to rounding, less work."""
        from vidcli.diffusion.folded_text import fold_text_padding

        fold_text_padding(self.pipe.transformer, self.max_sequence_length)

    def encode_prompt(self, prompts: list[str], negative: list[str] | None = None,
                      guidance: float = 5.0) -> TextEmbeds:
        with torch.no_grad(), text_encoder_placement(self):
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
        if frame_indices is not None:
            total = 1 + self.pipe.vae_scale_factor_temporal * (latents.shape[2] - 1)
            if max(frame_indices) >= total:
                raise InputError(f"frame index {max(frame_indices)} is past the {total} decoded frames")
        # Same arithmetic as the pipeline (divide by 1/std), so decodes agree to the last bit.
        z = latents / inv_std + mean
        if self.decode_checkpointing and torch.is_grad_enabled() and vae.config.patch_size is None \
                and not vae.use_tiling:
            return checkpoint(self._decode_by_frame, z, frame_indices, use_reentrant=False)
        video = vae.decode(z, return_dict=False)[0]
        return _to_frames(video, frame_indices)

    def _decode_by_frame(self, z: torch.Tensor, frame_indices: list[int] | None) -> torch.Tensor:
        """The VAE's own frame-by-frame decode loop, each latent frame under its own checkpoint;
        only the video frames asked for are kept from each latent frame's output."""
        vae = self.pipe.vae
        x = vae.post_quant_conv(z)
        scale = self.pipe.vae_scale_factor_temporal
        wanted = list(range(1 + scale * (x.shape[2] - 1))) if frame_indices is None else list(frame_indices)
        vae.clear_cache()  # sizes the cache: one slot per causal convolution of the decoder
        cache = [None] * len(vae._feat_map)
        pieces: dict[int, torch.Tensor] = {}
        for i in range(x.shape[2]):
            first = 0 if i == 0 else 1 + scale * (i - 1)  # the first video frame this latent frame gives
            mine = sorted({f for f in wanted if first <= f < first + (1 if i == 0 else scale)})
            step = _FrameDecode(vae.decoder, i == 0, [f - first for f in mine])
            # The cache goes in as separate arguments: the checkpoint then keeps its tensors only
            # through autograd's saved-tensor machinery (which an enclosing checkpoint drops).
            out, *cache = checkpoint(step, x[:, :, i:i + 1], *cache, use_reentrant=False)
            pieces.update({f: out[:, :, j] for j, f in enumerate(mine)})
        video = torch.stack([pieces[f] for f in wanted], dim=2).clamp(-1.0, 1.0)
        return (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)

def _to_frames(video: torch.Tensor, frame_indices: list[int] | None) -> torch.Tensor:
    """The pipeline's post-processing: [-1, 1] → [0, 1], frames before channels; the frames asked for."""
    frames = (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    return frames if frame_indices is None else frames[:, list(frame_indices)]


class _FrameDecode:
    """One latent frame through the Wan decoder with its feature cache passed in and out, so a
    checkpoint can run it again from the cache it started from. Returns the frames at ``keep``."""

    def __init__(self, decoder: torch.nn.Module, first: bool, keep: list[int]) -> None:
        self.decoder, self.first, self.keep = decoder, first, keep

    def __call__(self, x: torch.Tensor, *cache) -> tuple:
        cache = list(cache)  # the decoder writes into it; the caller's entries stay as they were
        out = self.decoder(x, feat_cache=cache, feat_idx=[0], first_chunk=self.first)
        return (out[:, :, self.keep], *cache)
