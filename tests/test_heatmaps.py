"""Heatmap figures: the normalised gradient, the overlay colours, and a layout one can read."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidcli.train.heatmaps import (COLORMAP, OVERLAY, figure_pixels, gradient_magnitude, heatmap_figure, overlay,
                                   question_label, save_heatmap)

QUESTION = {"dim": "TA", "key": "objects", "question": "Is there a red ball rolling over the green grass?"}


def test_gradient_magnitude_is_the_channel_mean_scaled_to_its_peak():
    grad = torch.zeros(2, 3, 2, 2)
    grad[0, :, 0, 0] = torch.tensor([1.0, -2.0, 3.0])  # |.| mean 2
    grad[1, 1, 1, 1] = -12.0  # mean 4: the peak
    expected = torch.zeros(2, 2, 2)
    expected[0, 0, 0], expected[1, 1, 1] = 0.5, 1.0
    torch.testing.assert_close(gradient_magnitude(grad), expected)
    assert torch.equal(gradient_magnitude(torch.zeros(1, 3, 2, 2)), torch.zeros(1, 2, 2))


def test_overlay_blends_the_colour_map_over_the_grey_frame_by_magnitude():
    from matplotlib import colormaps

    frame = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # red, blue
    magnitude = np.array([[1.0, 0.0]])
    out = overlay(frame, magnitude)
    top, bottom = colormaps[COLORMAP](1.0)[:3], colormaps[COLORMAP](0.0)[:3]
    weight_hot, weight_cold = OVERLAY[0] + OVERLAY[1], OVERLAY[0]
    np.testing.assert_allclose(out[0, 0], (1 - weight_hot) * 0.299 + weight_hot * np.array(top))
    np.testing.assert_allclose(out[0, 1], (1 - weight_cold) * 0.114 + weight_cold * np.array(bottom))


def _sample(frames: int = 4, size: int = 16):
    """Solid frames of different colours; one gradient of magnitude 1 on the left half of each
    frame (0 on the right), and its mirror image."""
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])[:frames]
    pictures = colours[:, :, None, None].expand(frames, 3, size, size).clone()
    left = torch.zeros(frames, 3, size, size)
    left[..., : size // 2] = torch.randn(frames, 3, size, size // 2).sign()  # |∂R/∂x| = 1 there
    right = left.flip(-1)
    return pictures, left, right


def _crop(pixels: np.ndarray, ax) -> np.ndarray:
    """The pixels an axes covers in a drawn figure."""
    box = ax.get_window_extent()
    height = pixels.shape[0]
    return pixels[int(round(height - box.y1)) + 1:int(round(height - box.y0)) - 1,
                  int(round(box.x0)) + 1:int(round(box.x1)) - 1]


def test_figure_has_a_frame_row_and_one_row_per_gradient_with_times_labels_and_colour_bar():
    frames, left, right = _sample()
    rows = [("R (sum of all queries)", left + right), (question_label(QUESTION), left),
            ("VQ · quality\nIs it blurry?", right)]
    fig = heatmap_figure(frames, rows, times=[0.0, 0.25, 0.5, 0.75], title="a red ball on green grass (step 3)")
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 4 * 4  # 1 frame row + 3 gradient rows, 4 frames each
    grid = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start): ax for ax in images}
    assert sorted(grid) == [(r, c) for r in range(4) for c in range(4)]
    assert [grid[0, c].get_title() for c in range(4)] == ["t = 0.00 s", "t = 0.25 s", "t = 0.50 s", "t = 0.75 s"]
    assert [grid[r, 0].get_ylabel() for r in range(4)] == ["frames", "R (sum of all queries)",
                                                           "TA · objects\nIs there a red ball rolling\n"
                                                           "over the green grass?", "VQ · quality\nIs it blurry?"]
    assert fig.get_suptitle() == "a red ball on green grass (step 3)"
    (bar,) = [ax for ax in fig.axes if not ax.images]
    assert "∂R/∂pixel" in bar.get_ylabel()

    pixels = figure_pixels(fig)
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.std() > 10  # not a uniform picture
    # Row 0 shows each frame's own colour; the heat rows are hot where their gradient is.
    for c, colour in enumerate(frames[:, :, 0, 0]):
        np.testing.assert_allclose(_crop(pixels, grid[0, c]).reshape(-1, 3).mean(0), colour.numpy() * 255, atol=3)
    for r, hot_left in ((2, True), (3, False)):
        crop = _crop(pixels, grid[r, 1]).astype(float).sum(-1)
        half = crop.shape[1] // 2
        brighter_left = crop[:, :half - 1].mean() > crop[:, half + 1:].mean() + 150  # the map's top is pale yellow
        assert brighter_left == hot_left, f"row {r}"


def test_bad_shapes_are_refused():
    frames, left, _ = _sample()
    with pytest.raises(ValueError, match="differ in shape"):
        heatmap_figure(frames, [("R", left[:2])])
    with pytest.raises(ValueError, match="3 frame times for 4 frames"):
        heatmap_figure(frames, [("R", left)], times=[0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="no gradient"):
        heatmap_figure(frames, [])


def test_save_heatmap_writes_a_png_of_the_figure(tmp_path):
    from PIL import Image

    frames, left, right = _sample(frames=2)
    path = save_heatmap(tmp_path / "sub" / "h.png", frames, [("R", left + right)], times=[0.0, 0.5], title="x")
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    expected = figure_pixels(heatmap_figure(frames, [("R", left + right)], times=[0.0, 0.5], title="x"))
    assert pixels.shape == expected.shape and pixels.std() > 10
