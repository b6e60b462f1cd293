"""Clip embeddings from a SigLIP-style image encoder, for grouping shots by what they show.

A clip's embedding is the average of its frames' embeddings: a few frames sampled by
timestamp at the centres of equal parts of the clip, each encoded with the model's
``get_image_features`` and scaled to unit length, then averaged and scaled to unit
length again. Normalising each frame first gives every frame the same say, whatever
its feature norm; normalising the mean makes cosine similarity a plain dot product.

Any model that ``AutoModel``/``AutoProcessor`` load and that has ``get_image_features``
works (SigLIP, SigLIP 2, CLIP). Frames of many clips are encoded together in batches.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vidcli.media import load_video, video_frames_as_pil
from vidcli.mining.shots import Clip

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from PIL import Image


class ClipEmbedder:
    """Unit-length clip embeddings from an image-text model's vision tower."""

    def __init__(self, model_path: str | Path, *, device: str = "cpu", frames_per_clip: int = 4,
                 batch_size: int = 32) -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        if frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be at least 1, got {frames_per_clip}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.frames_per_clip = frames_per_clip
        self.batch_size = batch_size
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).to(device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise ValueError(f"{model_path}: {type(self.model).__name__} has no get_image_features")

    def embed_images(self, images: Sequence["Image.Image"]) -> "torch.Tensor":
        """Unit-length features (n, d), float32 on the CPU, computed ``batch_size`` images at a time."""
        import torch

        chunks = []
        for start in range(0, len(images), self.batch_size):
            inputs = self.processor(images=list(images[start : start + self.batch_size]), return_tensors="pt")
            inputs = inputs.to(self.device)
            with torch.inference_mode():
                out = self.model.get_image_features(**inputs)
            # transformers 5 returns an output object whose pooler_output holds the features.
            features = out if isinstance(out, torch.Tensor) else out.pooler_output
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    def clip_frames(self, clip: Clip) -> list["Image.Image"]:
        """The frames a clip is embedded from: centres of ``frames_per_clip`` equal parts."""
        sampled = load_video(clip.video, num_frames=self.frames_per_clip, start=clip.start, end=clip.end)
        return video_frames_as_pil(sampled)

    def embed_clips(self, clips: Sequence[Clip]) -> np.ndarray:
        """Unit-length embeddings (len(clips), d) as float32.

        A clip whose video cannot be read raises :class:`~vidcli.errors.MediaError`
        naming the file.
        """
        import torch

        if not clips:
            return np.zeros((0, 0), dtype=np.float32)
        frames: list["Image.Image"] = []
        owner: list[int] = []
        for k, clip in enumerate(clips):
            images = self.clip_frames(clip)
            frames += images
            owner += [k] * len(images)
        features = self.embed_images(frames)
        index = torch.tensor(owner)
        sums = torch.zeros(len(clips), features.shape[1]).index_add_(0, index, features)
        means = sums / torch.bincount(index, minlength=len(clips)).unsqueeze(1)
        return torch.nn.functional.normalize(means, dim=-1).numpy().astype(np.float32)
