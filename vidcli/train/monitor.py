"""What a training run shows while it runs, and what it says when it ends.

Every trainer keeps one :class:`RunMonitor`:

- **Progress bar** (tqdm on stderr, main process only; off when stderr is not a terminal
  or with ``--quiet``) over optimiser steps: steps/s or s/step and the time left (tqdm's),
  samples/s and the current loss / reward. A resumed run starts the bar at its step.
- **Log line** every ``log_every`` steps and after the first: the trainer's figures, then
  s/step, samples/s and the time left measured over this session's steps, and the peak
  device memory (``torch.cuda.max_memory_allocated``; "n/a" on a CPU, where measuring
  it would cost more than the step). A log file thus tells what the bar showed.
- **Tracker scalars**: the trainer's metrics plus ``perf/s_per_step``,
  ``perf/samples_per_s`` and, on a GPU, ``perf/peak_memory_gib``.
- **Summary**: one line on stderr at the end (steps, wall time, mean s/step, peak
  memory, final and best loss / reward, where the model and the logs are) and the same
  as ``summary`` in ``vidcli.json``. Every checkpoint carries the summary so far, so a
  resumed run adds its time to the earlier sessions' and keeps their best values.

A *sample* is what one step consumes: an example (sft), a completion (grpo), a video
(drf-tune), a triplet (revise-tune), counted over all processes and micro-batches.
Wall time runs from the monitor's creation (the run's setup) to its summary, summed
over sessions; s/step counts only the time between steps.
"""
from __future__ import annotations

import contextlib
import logging
import math
import operator
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

from vidcli.train.tracking import TrackerMedia, start_trackers

if TYPE_CHECKING:  # pragma: no cover - typing only
    from accelerate import Accelerator

    from vidcli.train.core import RunConfig

log = logging.getLogger("vidcli.train")

GIB = 1024 ** 3
# How the log line prints a metric (default ".4f"), and the label it gives it.
FORMATS = {"lr": ".3g", "kl": ".4g", "masked": ".0f", "gated_fraction": ".2f", "reward": ".4f"}
LABELS = {"gated_fraction": "gated"}
BEST = {"loss": operator.lt, "reward": operator.gt}  # the figures the summary keeps the best of, and "better"


def duration(seconds: float | None) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour); ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def peak_memory_gib(device) -> float | None:
    """The peak memory allocated on ``device`` so far, in GiB; None off CUDA."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / GIB


class RunMonitor:
    """Progress bar, log lines, tracker scalars and the summary of one training run."""

    def __init__(self, accelerator: "Accelerator", run: "RunConfig", *, command: str, log_every: int,
                 line_keys: Sequence[str] = ("loss", "lr"), clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None) -> None:
        """Created as the run's setup starts (its wall time counts from here); ``line_keys``
        are the metrics the log line shows; ``stream`` is where the bar goes (stderr)."""
        self.accelerator = accelerator
        self.run = run
        self.command = command
        self.log_every = log_every
        self.line_keys = tuple(line_keys)
        self.clock = clock
        self.stream = stream
        self.saved: dict = {}
        self.trackers_info: dict = {}
        self.media = TrackerMedia(accelerator, ())
        self.started = clock()
        self.earlier_wall = self.step_time = 0.0
        self.timed_steps = 0
        self.earlier_peak: float | None = None
        self.best: dict[str, dict] = {}
        self.final: dict[str, float] = {}
        self.total_steps = 0
        self.samples_per_step = 0
        self.session_steps = 0
        self.session_time = 0.0
        self.last_tick = self.started
        self.bar = None
        self._redirect = contextlib.ExitStack()

    def restore(self, saved: dict | None) -> None:
        """Continue the summary of the checkpoint the run resumes from (its ``vidcli.json``)."""
        self.saved = saved or {}
        earlier = self.saved.get("summary") or {}
        self.earlier_wall = float(earlier.get("wall_time_s") or 0.0)
        self.step_time = float(earlier.get("step_time_s") or 0.0)
        self.timed_steps = int(earlier.get("timed_steps") or 0)
        self.earlier_peak = earlier.get("peak_memory_gib")
        self.best = dict(earlier.get("best") or {})
        self.final = dict(earlier.get("final") or {})

    # ------------------------------------------------------------------ setup

    def start_trackers(self, *, project: str, hparams: dict) -> dict:
        """Start ``--report-to``'s trackers (after :meth:`restore`: a resumed run continues its own);
        returns what ``vidcli.json`` keeps."""
        self.trackers_info = start_trackers(self.accelerator, self.run, project=project, hparams=hparams,
                                            saved=self.saved)
        self.media = TrackerMedia(self.accelerator, self.run.trackers)
        return self.trackers_info

    def run_info(self) -> dict:
        """The ``vidcli.json`` fields about the trackers (the W&B run id that ``--resume`` continues)."""
        return {"trackers": self.trackers_info} if self.trackers_info else {}

    def begin(self, *, total_steps: int, step: int, samples_per_step: int) -> None:
        """The training loop starts at ``step`` of ``total_steps``: the bar appears (on a terminal)."""
        self.total_steps = total_steps
        self.samples_per_step = samples_per_step
        self.last_tick = self.clock()
        stream = self.stream if self.stream is not None else sys.stderr
        show = self.accelerator.is_main_process and stream.isatty() \
            and logging.getLogger("vidcli").isEnabledFor(logging.INFO) and step < total_steps
        if not show:
            return
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = tqdm(total=total_steps, initial=step, unit="step", desc=self.command, file=stream,
                        dynamic_ncols=True)
        # Log lines go through tqdm.write while the bar is up, so they do not tear it.
        self._redirect.enter_context(logging_redirect_tqdm([logging.getLogger("vidcli")]))

    # ------------------------------------------------------------------ per step

    def s_per_step(self) -> float | None:
        """Mean seconds per step over this session's steps."""
        return self.session_time / self.session_steps if self.session_steps else None

    def figures(self, step: int) -> dict[str, float | None]:
        """This session's s/step, samples/s, seconds left and the peak memory (GiB, None off CUDA)."""
        per_step = self.s_per_step()
        return {"s_per_step": per_step,
                "samples_per_s": self.samples_per_step / per_step if per_step else None,
                "left_s": per_step * (self.total_steps - step) if per_step is not None else None,
                "peak_memory_gib": peak_memory_gib(self.accelerator.device)}

    def step(self, step: int, metrics: dict) -> None:
        """After optimiser step ``step`` (1-based) with its ``metrics``: trackers, bar, log line."""
        now = self.clock()
        elapsed, self.last_tick = now - self.last_tick, now
        self.session_steps += 1
        self.session_time += elapsed
        self.step_time += elapsed
        self.timed_steps += 1
        for key, better in BEST.items():
            if metrics.get(key) is not None:
                value = float(metrics[key])
                self.final[key] = value
                kept = self.best.get(key)
                if kept is None or better(value, kept["value"]):
                    self.best[key] = {"value": value, "step": step}
        figures = self.figures(step)
        perf = {f"perf/{k}": v for k, v in figures.items() if k != "left_s" and v is not None}
        self.accelerator.log({**metrics, **perf}, step=step)
        if self.bar is not None:
            shown = {k: f"{metrics[k]:.4g}" for k in BEST if metrics.get(k) is not None}
            if figures["samples_per_s"] is not None:
                shown["samples/s"] = f"{figures['samples_per_s']:.3g}"
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        if step % self.log_every == 0 or step == 1 or step == self.total_steps:
            log.info("%s", self.line(step, metrics, figures))

    def line(self, step: int, metrics: dict, figures: dict) -> str:
        """``step 10/100 loss 0.4312 lr 1e-05 | 2.31 s/step, 10.4 samples/s, 3:28 left, peak 12.3 GiB``."""
        parts = [f"step {step}/{self.total_steps}"]
        for key in self.line_keys:
            if metrics.get(key) is not None:
                parts.append(f"{LABELS.get(key, key)} {format(metrics[key], FORMATS.get(key, '.4f'))}")
        per_step = figures["s_per_step"]
        rate = figures["samples_per_s"]
        perf = [f"{per_step:.3g} s/step" if per_step is not None else "? s/step",
                f"{rate:.3g} samples/s" if rate is not None else "? samples/s",
                f"{duration(figures['left_s'])} left", f"peak {memory(figures['peak_memory_gib'])}"]
        return " ".join(parts) + " | " + ", ".join(perf)

    # ------------------------------------------------------------------ the end

    def summary(self, step: int, *, logs: Sequence[Path] = ()) -> dict:
        """The run so far, for ``vidcli.json`` (every checkpoint) and the closing line."""
        peaks = [p for p in (self.earlier_peak, peak_memory_gib(self.accelerator.device)) if p is not None]
        return {
            "steps": step, "total_steps": self.total_steps,
            "wall_time_s": round(self.earlier_wall + self.clock() - self.started, 3),
            "step_time_s": round(self.step_time, 3), "timed_steps": self.timed_steps,
            "mean_s_per_step": round(self.step_time / self.timed_steps, 4) if self.timed_steps else None,
            "peak_memory_gib": round(max(peaks), 3) if peaks else None,
            "final": dict(self.final), "best": dict(self.best),
            "output": str(self.run.output_dir), "logs": [str(p) for p in self.log_paths(logs)],
        }

    def log_paths(self, logs: Sequence[Path] = ()) -> list[Path]:
        """The step logs the trainer names and, with trackers, ``OUTPUT/logs``."""
        paths = [Path(p) for p in logs if Path(p).exists()]
        if self.run.trackers:
            paths.append(self.run.output_dir / "logs")
        return paths

    def close(self) -> None:
        """Take the bar down (also after an error)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._redirect.close()

    def finish(self, step: int, save_final: Callable[[dict], Path], *, logs: Sequence[Path] = ()) -> Path:
        """End of the run at ``step``: ``save_final(summary)`` writes the final model with the summary
        (returning its folder); then the bar goes and the closing line says how the run went."""
        summary = self.summary(step, logs=logs)
        model = save_final(summary)
        self.close()
        log.info("%s", closing_line(self.command, summary, model))
        return model


def memory(gib: float | None) -> str:
    return f"{gib:.2f} GiB" if gib is not None else "n/a (not on a GPU)"


def closing_line(command: str, summary: dict, model: Path) -> str:
    """``sft done: 100/100 steps in 5:12 (3.12 s/step), peak 11.20 GiB, loss 0.4312 (best 0.4011 at step 87);
    model in runs/sft, logs in runs/sft/rewards.jsonl, runs/sft/logs``."""
    per_step = summary["mean_s_per_step"]
    text = (f"{command} done: {summary['steps']}/{summary['total_steps']} steps in "
            f"{duration(summary['wall_time_s'])} ({f'{per_step:.3g}' if per_step is not None else '?'} s/step), "
            f"peak {memory(summary['peak_memory_gib'])}")
    for key in BEST:
        if key in summary["final"]:
            best = summary["best"][key]
            text += f", {key} {summary['final'][key]:.4f} (best {best['value']:.4f} at step {best['step']})"
    logs = ", ".join(summary["logs"]) or "none (--report-to none)"
    return f"{text}; model in {model}, logs in {logs}"
