"""Tracker media helpers: Markdown tables that survive any text, GIF clips, run ids, report-to parsing."""
from __future__ import annotations

import io

import click
import numpy as np
import pytest

from vidcli.commands.training import parse_report_to
from vidcli.train.core import RunConfig
from vidcli.train.tracking import gif_bytes, markdown_table, new_run_id


def test_markdown_table_keeps_each_row_on_one_line_and_shows_the_text():
    text = markdown_table(["id", "completion", "reward"],
                          [["a", "<think>x | y</think>\nline two\u2028three & more", 0.123456], ["b", None, 2.0]])
    assert text.splitlines() == [
        "| id | completion | reward |",
        "|---|---|---|",
        "| a | &lt;think&gt;x \\| y&lt;/think&gt;<br>line two<br>three &amp; more | 0.1235 |",
        "| b |  | 2 |",
    ]


def test_gif_holds_every_frame_at_the_rate():
    from PIL import Image

    frames = np.stack([np.full((6, 8, 3), value, dtype=np.uint8) for value in (0, 120, 250)])
    with Image.open(io.BytesIO(gif_bytes(frames, fps=10))) as gif:
        assert gif.format == "GIF" and gif.size == (8, 6) and gif.n_frames == 3
        gif.seek(1)
        assert gif.info["duration"] == 100
        assert np.asarray(gif.convert("RGB"))[0, 0].tolist() == [120, 120, 120]


def test_run_ids_are_fresh_and_leave_seeded_streams_alone():
    state = np.random.get_state()[1].copy()
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == 8 and i.isalnum() and i == i.lower() for i in ids)
    assert np.array_equal(np.random.get_state()[1], state)


def test_report_to_takes_one_or_more_trackers():
    assert parse_report_to(None, None, "none") == "none"
    assert parse_report_to(None, None, "wandb, tensorboard,wandb") == "wandb,tensorboard"
    for bad in ("mlflow", "tensorboard,none", ""):
        with pytest.raises(click.BadParameter, match="none, or one or more of tensorboard, wandb"):
            parse_report_to(None, None, bad)
    assert RunConfig("out", report_to="tensorboard,wandb").trackers == ("tensorboard", "wandb")
    assert RunConfig("out").trackers == ()
    with pytest.raises(ValueError, match="report_to"):
        RunConfig("out", report_to="mlflow")
