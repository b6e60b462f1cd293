"""Where a VLM reward looks: |∂R/∂frame| over the frames the VLM saw, as a figure.

One figure per sample (:func:`heatmap_figure`): the title names the prompt; the top row
holds the N_f sampled frames, each titled with its time in the video; under it one row
per gradient — the whole reward's, or with ``--heatmap-per-question`` one per question
(its dimension, key and text on the left: the credit-assignment picture of the DRF
paper) — each frame in grey with the gradient magnitude laid over it in colour (the
more opaque the larger), and a colour bar on the right.

The magnitude of a gradient (:func:`gradient_magnitude`) is the mean over the colour
channels of |∂R/∂pixel|, divided by its maximum over the row's frames: frames of one
row compare with each other, and each question's row shows where *that* question
looks, whatever its scale (a question's share of the whole is in the reward log).
Drawn with matplotlib's object API on an Agg canvas: no global state, no display.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

COLORMAP = "inferno"
OVERLAY = (0.2, 0.7)  # weight of the colour over the grey frame: a + b·magnitude (the frame shows where R does not look)
CELL_INCHES = 1.8  # width of one frame in the figure


def gradient_magnitude(grad: torch.Tensor) -> torch.Tensor:
    """(F, 3, H, W) gradient → (F, H, W) channel-mean of its absolute value, scaled to [0, 1]."""
    if grad.ndim != 4:
        raise ValueError(f"expected a (F, C, H, W) gradient, got {tuple(grad.shape)}")
    magnitude = grad.detach().float().abs().mean(dim=1)
    peak = magnitude.max()
    # An all-zero gradient stays black rather than dividing by zero.
    return magnitude / peak if peak > 0 else magnitude


def overlay(frame: np.ndarray, magnitude: np.ndarray, colormap: str = COLORMAP) -> np.ndarray:
    """(H, W, 3) frame in [0, 1] and (H, W) magnitude in [0, 1] → the magnitude's colour over the grey frame,
    more opaque where the magnitude is larger."""
    from matplotlib import colormaps

    grey = (frame @ np.array([0.299, 0.587, 0.114]))[..., None]
    colour = colormaps[colormap](magnitude)[..., :3]
    weight = (OVERLAY[0] + OVERLAY[1] * magnitude)[..., None]
    return (1 - weight) * grey + weight * colour


def question_label(question: dict, width: int = 30) -> str:
    """``TA · objects`` over the wrapped question text: a row label."""
    head = " · ".join(str(part) for part in (question.get("dim"), question.get("key")) if part)
    body = textwrap.fill(str(question.get("question") or ""), width)
    return f"{head}\n{body}" if body else head


def heatmap_figure(frames: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor]], *,
                   times: Sequence[float] | None = None, title: str | None = None):
    """A matplotlib Figure: frames (with their times), then one overlay row per ``(label, gradient)``.

    ``frames`` (F, 3, H, W) in [0, 1]; each gradient the same shape. ``times`` in
    seconds label the columns; ``title`` (the prompt) heads the figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("no gradient to draw")
    for label, grad in rows:
        if grad.shape != frames.shape:
            raise ValueError(f"frames {tuple(frames.shape)} and gradient {label!r} {tuple(grad.shape)} "
                             "differ in shape")
    count, _, height, width = frames.shape
    if times is not None and len(times) != count:
        raise ValueError(f"{len(times)} frame times for {count} frames")
    pictures = frames.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    cell_h = CELL_INCHES * height / width
    fig = Figure(figsize=(CELL_INCHES * count + 2.6, (cell_h + 0.25) * (len(rows) + 1) + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows) + 1, count)
    heat_axes = []
    for r, (label, grad) in enumerate([("frames", None), *rows]):
        magnitude = gradient_magnitude(grad).cpu().numpy() if grad is not None else None
        for f in range(count):
            ax = fig.add_subplot(grid[r, f])
            ax.imshow(pictures[f] if magnitude is None else overlay(pictures[f], magnitude[f]),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {times[f]:.2f} s" if times is not None else f"frame {f + 1}", fontsize=9)
            if f == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
            if magnitude is not None:
                heat_axes.append(ax)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), COLORMAP), ax=heat_axes, fraction=0.04, pad=0.02)
    bar.set_label("|∂R/∂pixel| ÷ row max", fontsize=8)
    if title:
        fig.suptitle(textwrap.fill(title, 110), fontsize=10)
    return fig


def figure_pixels(fig, dpi: int = 100) -> np.ndarray:
    """The figure drawn as an (H, W, 3) uint8 array (what a tracker shows)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_heatmap(path: str | Path, frames: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor]], *,
                 times: Sequence[float] | None = None, title: str | None = None, dpi: int = 100) -> Path:
    """Write :func:`heatmap_figure` of one sample as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heatmap_figure(frames, rows, times=times, title=title).savefig(path, format="png", dpi=dpi)
    return path
