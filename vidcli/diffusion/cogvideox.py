"""CogVideoX text-to-video (CogVideoXTransformer3DModel + AutoencoderKLCogVideoX + T5) as a generator adapter.

As for Wan, the adapter reuses the loaded :class:`diffusers.CogVideoXPipeline`'s prompt
encoding, noise drawing and rotary position tables, and steps its scheduler the way the
pipeline does: DDIM-style schedulers take ``eta=0``; CogVideoX's DPM scheduler also takes
the previous clean estimate and the previous timestep, and draws its noise from the
rollout's generator. Dynamic CFG (``use_dynamic_cfg``) is not reproduced: guidance is
constant. CogVideoX 1.5 checkpoints (temporal patches, padded latent frames) are refused.

Decoding: this VAE decodes latent frames in chunks of two (the first chunk takes one more
when the count is odd) and its group norms see a whole chunk, so a latent prefix decodes
exactly like the full video only when it ends on a chunk boundary of the full video.
:meth:`CogVideoXAdapter.decode` picks the shortest such prefix that holds the frames asked
for, and decodes everything otherwise.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vidcli.diffusion import SchedulerSampler, TextEmbeds, freeze, resolve_dtype, text_encoder_placement
from vidcli.errors import InputError


class DPMSampler(SchedulerSampler):
    """CogVideoX's DPM scheduler: a two-step solver whose state the pipeline threads by hand."""

    def __init__(self, template, steps: int, device: torch.device, generator: torch.Generator | None) -> None:
        super().__init__(template, steps, device)
        self.generator = generator
        self.previous_x0: torch.Tensor | None = None

    def step(self, index: int, noise_pred: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        previous_t = self.timesteps[index - 1] if index > 0 else None
        latents, self.previous_x0 = self.scheduler.step(
            noise_pred, self.previous_x0, self.timesteps[index], previous_t, latents,
            generator=self.generator, return_dict=False,
        )
        return latents


class CogVideoXAdapter:
    """CogVideoX 1.0 (2b / 5b) T2V: encode, draw noise, denoise with CFG, step, decode."""

    def __init__(self, pipe, *, max_sequence_length: int = 226) -> None:
        if pipe.transformer.config.patch_size_t is not None:
            raise InputError("CogVideoX 1.5 checkpoints (temporal patches) are not supported")
        self.pipe = pipe
        self.device = pipe.transformer.device
        self.max_sequence_length = max_sequence_length  # the pipeline's default
        self.offloaded_text_encoder = None  # an OffloadedTextEncoder when the trainer offloads it
        freeze(pipe.vae, pipe.text_encoder)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: str | torch.dtype = "float32",
                        text_encoder_dtype: str | torch.dtype | None = None,
                        vae_dtype: str | torch.dtype | None = None) -> "CogVideoXAdapter":
        """Load a ``CogVideoXPipeline`` folder in ``dtype``, the text encoder in ``text_encoder_dtype``
        and the VAE in ``vae_dtype`` (each by default ``dtype``)."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline
        from transformers import T5EncoderModel

        from vidcli import weights

        own = {}
        if vae_dtype is not None:
            own["vae"] = weights.load_model(AutoencoderKLCogVideoX, path, subfolder="vae",
                                            dtype=resolve_dtype(vae_dtype))
        if text_encoder_dtype is not None:
            own["text_encoder"] = weights.load_model(T5EncoderModel, path, subfolder="text_encoder",
                                                     dtype=resolve_dtype(text_encoder_dtype))
        if weights.reading_weights():
            pipe = CogVideoXPipeline.from_pretrained(path, **own, dtype=resolve_dtype(dtype))
        else:
            pipe = CogVideoXPipeline(**weights.pipeline_components(path, dtype=resolve_dtype(dtype), overrides=own))
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(weights.placement(device)))

    def trainable_module(self) -> torch.nn.Module:
        return self.pipe.transformer

    def fold_text_padding(self) -> None:
        raise InputError("--fold-text-padding: CogVideoX attends to its text and video tokens as one sequence; "
                         "folding the text's padding is for Wan pipelines")

    def encode_prompt(self, prompts: list[str], negative: list[str] | None = None,
                      guidance: float = 6.0) -> TextEmbeds:
        with torch.no_grad(), text_encoder_placement(self):
            positive, neg = self.pipe.encode_prompt(
                list(prompts), negative, do_classifier_free_guidance=guidance > 1.0,
                max_sequence_length=self.max_sequence_length, device=self.device,
            )
        return TextEmbeds(positive, neg if guidance > 1.0 else None)

    def prepare_latents(self, batch: int, frames: int, height: int, width: int,
                        generator: torch.Generator | None) -> torch.Tensor:
        """Noise (B, T, C, h, w), scaled by the scheduler's initial sigma, in the text encoder's dtype."""
        return self.pipe.prepare_latents(batch, self.pipe.transformer.config.in_channels, frames, height, width,
                                         self.pipe.text_encoder.dtype, self.device, generator)

    def make_sampler(self, steps: int, generator: torch.Generator | None = None) -> SchedulerSampler:
        from diffusers import CogVideoXDPMScheduler

        if isinstance(self.pipe.scheduler, CogVideoXDPMScheduler):
            return DPMSampler(self.pipe.scheduler, steps, self.device, generator)
        return _CastingSampler(self.pipe.scheduler, steps, self.device, eta=0.0)

    def denoise(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: TextEmbeds,
                guidance: float) -> torch.Tensor:
        pipe = self.pipe
        cfg = guidance > 1.0
        x = torch.cat([latents, latents]) if cfg else latents
        x = pipe.scheduler.scale_model_input(x, timestep)
        text = torch.cat([embeds.negative, embeds.positive]) if cfg else embeds.positive
        rotary = None
        if pipe.transformer.config.use_rotary_positional_embeddings:
            scale = pipe.vae_scale_factor_spatial
            rotary = pipe._prepare_rotary_positional_embeddings(
                latents.shape[3] * scale, latents.shape[4] * scale, latents.shape[1], latents.device)
        pred = pipe.transformer(hidden_states=x, encoder_hidden_states=text, timestep=timestep.expand(x.shape[0]),
                                image_rotary_emb=rotary, return_dict=False)[0].float()
        if cfg:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance * (cond - uncond)
        return pred

    def decode_prefix(self, total: int, needed: int) -> int:
        """Shortest latent prefix ≥ ``needed`` that ends on one of the full decode's chunk boundaries."""
        chunk = self.pipe.vae.num_latent_frames_batch_size
        first = chunk + total % chunk if total >= chunk else total
        if needed <= first:
            return first
        return min(total, first + -(-(needed - first) // chunk) * chunk)

    def decode(self, latents: torch.Tensor, frame_indices: list[int] | None = None) -> torch.Tensor:
        """(B, T, C, h, w) latents → (B, F, 3, H, W) frames in [0, 1]; with ``frame_indices``, only those."""
        vae = self.pipe.vae
        if frame_indices is not None:
            if min(frame_indices) < 0:
                raise InputError("frame indices must be non-negative")
            # Latent frame j decodes to frames 4j-3..4j (odd counts) or 4j..4j+3 (even counts):
            # f // 4 + 1 latent frames cover frame f either way.
            needed = max(frame_indices) // self.pipe.vae_scale_factor_temporal + 1
            latents = latents[:, :self.decode_prefix(latents.shape[1], needed)]
        # Same arithmetic as the pipeline (multiply by 1/scale), so decodes agree to the last bit.
        z = 1 / vae.config.scaling_factor * latents.permute(0, 2, 1, 3, 4).to(vae.dtype)
        video = vae.decode(z).sample
        frames = (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
        if frame_indices is not None:
            if max(frame_indices) >= frames.shape[1]:
                raise InputError(f"frame index {max(frame_indices)} is past the {frames.shape[1]} decoded frames")
            frames = frames[:, list(frame_indices)]
        return frames


class _CastingSampler(SchedulerSampler):
    """The pipeline casts the latents back to the text encoder's dtype after every step."""

    def step(self, index: int, noise_pred: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return super().step(index, noise_pred, latents).to(latents.dtype)
