"""Where a VLM reward looks: pictures of |∂R/∂frame| beside the frames the VLM saw.

One PNG per sample: the top row holds the N_f sampled frames, the bottom row the
gradient magnitude of the reward with respect to each frame's pixels, averaged over the
colour channels and divided by its maximum over the whole sample (so frames of one
sample are comparable with each other; a white pixel is the sample's largest gradient).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def gradient_magnitude(grad: torch.Tensor) -> torch.Tensor:
    """(F, 3, H, W) gradient → (F, H, W) channel-mean of its absolute value, scaled to [0, 1]."""
    if grad.ndim != 4:
        raise ValueError(f"expected a (F, C, H, W) gradient, got {tuple(grad.shape)}")
    magnitude = grad.detach().float().abs().mean(dim=1)
    peak = magnitude.max()
    # An all-zero gradient stays black rather than dividing by zero.
    return magnitude / peak if peak > 0 else magnitude


def heatmap_grid(frames: torch.Tensor, grad: torch.Tensor) -> np.ndarray:
    """(2H, F·W, 3) uint8 image: frames on top, their gradient magnitude (grey) below."""
    if frames.shape != grad.shape:
        raise ValueError(f"frames {tuple(frames.shape)} and gradient {tuple(grad.shape)} differ in shape")
    top = frames.detach().float().clamp(0, 1).permute(0, 2, 3, 1)  # (F, H, W, 3)
    bottom = gradient_magnitude(grad)[..., None].expand(-1, -1, -1, 3)
    rows = [torch.cat(list(row), dim=1) for row in (top, bottom)]  # each (H, F·W, 3)
    return (torch.cat(rows, dim=0) * 255).round().to(torch.uint8).cpu().numpy()


def save_heatmap(path: str | Path, frames: torch.Tensor, grad: torch.Tensor) -> Path:
    """Write :func:`heatmap_grid` of one sample as a PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(heatmap_grid(frames, grad)).save(path, format="PNG")
    return path
