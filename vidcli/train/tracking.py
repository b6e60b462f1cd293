"""Experiment trackers (``--report-to tensorboard,wandb``): starting them, and media beside the scalars.

Scalars go through ``accelerator.log``; this module adds what accelerate has no common
call for — pictures, short videos, tables — written the way each tracker shows them:

- **TensorBoard**: images with ``add_image``; a video is an animated GIF in an image
  summary (the form TensorBoard's own ``add_video`` writes, without its moviepy
  dependency: the GIF is encoded here with Pillow); a table is a Markdown table in a
  text summary (TensorBoard's text dashboard renders Markdown tables).
- **W&B**: ``wandb.Image``, ``wandb.Video`` (the same GIF) and ``wandb.Table``, each with
  its caption.

Logs live under ``OUTPUT/logs``: TensorBoard's events in ``logs/PROJECT/``, W&B's run
folders in ``logs/wandb/``. A resumed run continues its history: TensorBoard is told
to drop what an earlier session logged after the resumed step (``purge_step``), and
W&B continues the run whose id the checkpoint's ``vidcli.json`` keeps
(``trackers.wandb.run_id``), so its media and scalars land in one run. W&B runs with
its system metadata off (it would record the command line, where a URL may carry a
credential) and without console capture (stdout carries data).
"""
from __future__ import annotations

import io
import logging
import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from accelerate import Accelerator

    from vidcli.train.core import RunConfig

log = logging.getLogger("vidcli.train")


def start_trackers(accelerator: "Accelerator", run: "RunConfig", *, project: str, hparams: dict,
                   saved: dict | None = None) -> dict:
    """Start the run's trackers; returns what ``vidcli.json`` keeps about them (``{}`` without W&B).

    ``saved`` is the ``vidcli.json`` of the checkpoint the run resumes from: its step
    and W&B run id. A fresh W&B run takes ``$WANDB_RUN_ID`` when set, else a new id.
    """
    if not run.trackers:
        return {}
    saved = saved or {}
    logs = run.output_dir / "logs"
    init_kwargs: dict = {}
    info: dict = {}
    if "tensorboard" in run.trackers and saved.get("step") is not None:
        init_kwargs["tensorboard"] = {"purge_step": int(saved["step"]) + 1}
    if "wandb" in run.trackers:
        import wandb

        run_id = ((saved.get("trackers") or {}).get("wandb") or {}).get("run_id") \
            or os.environ.get("WANDB_RUN_ID") or new_run_id()
        init_kwargs["wandb"] = {"dir": str(logs), "id": run_id, "resume": "allow", "name": run.output_dir.name,
                                "settings": wandb.Settings(x_disable_meta=True, console="off", save_code=False)}
        info = {"wandb": {"run_id": run_id, "project": project}}
    if accelerator.is_main_process:
        logs.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(project, config=tracker_config(hparams), init_kwargs=init_kwargs)
    return info


def tracker_config(hparams: dict) -> dict:
    """Hyper-parameters flattened to scalars, as TensorBoard's hparams table needs."""
    flat: dict = {}
    for key, value in hparams.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in tracker_config(value).items()})
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[key] = "none" if value is None else value
        else:
            flat[key] = str(value)
    return flat


def new_run_id() -> str:
    """Eight lowercase letters and digits, as W&B makes its ids; from the OS's randomness, so
    the run's seeded random streams are not touched."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """(T, H, W, 3) uint8 frames as a looping animated GIF."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 / fps)))  # browsers play faster GIF delays as 100 ms
    return out.getvalue()


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; cells keep their line breaks (as <br>) and show their angle brackets and pipes."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        text = "" if value is None else str(value)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
        return "<br>".join(text.splitlines())  # every kind of line break: a table row is one line

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class TrackerMedia:
    """Images, videos and tables for every started tracker; does nothing off the main process
    or without trackers (callers may skip the work that makes the media: :attr:`active`)."""

    def __init__(self, accelerator: "Accelerator", trackers: Sequence[str]) -> None:
        self.accelerator = accelerator
        self.trackers = tuple(trackers)

    @property
    def active(self) -> bool:
        return bool(self.trackers) and self.accelerator.is_main_process

    def _get(self, name: str):
        return self.accelerator.get_tracker(name, unwrap=True) if name in self.trackers else None

    def image(self, tag: str, image: np.ndarray, step: int, caption: str | None = None) -> None:
        """One (H, W, 3) uint8 picture."""
        if not self.active:
            return
        if (writer := self._get("tensorboard")) is not None:
            writer.add_image(tag, image, global_step=step, dataformats="HWC")
            writer.flush()
        if (wandb_run := self._get("wandb")) is not None:
            import wandb

            wandb_run.log({tag: wandb.Image(image, caption=caption)}, step=step)

    def video(self, tag: str, frames: np.ndarray, fps: float, step: int, caption: str | None = None) -> None:
        """A short (T, H, W, 3) uint8 clip, as an animated GIF."""
        if not self.active:
            return
        data = gif_bytes(frames, fps)
        if (writer := self._get("tensorboard")) is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            height, width = frames.shape[1:3]
            picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
            # The summary SummaryWriter.add_video builds; its file writer takes a ready summary.
            writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=picture)]), step)
            writer.flush()
        if (wandb_run := self._get("wandb")) is not None:
            import wandb

            wandb_run.log({tag: wandb.Video(io.BytesIO(data), format="gif", caption=caption)}, step=step)

    def table(self, tag: str, columns: Sequence[str], rows: Sequence[Sequence[object]], step: int) -> None:
        """Rows of text and numbers."""
        if not self.active:
            return
        if (writer := self._get("tensorboard")) is not None:
            writer.add_text(tag, markdown_table(columns, rows), global_step=step)
            writer.flush()
        if (wandb_run := self._get("wandb")) is not None:
            import wandb

            wandb_run.log({tag: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)
