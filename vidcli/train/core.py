"""The shared training core: the run's settings and the conventions every recipe keeps.

Every recipe (``sft``, ``grpo``, ``drf-tune``, ``revise-tune``) builds on these pieces
and keeps its own loop, so a recipe reads top to bottom like its method.

Conventions shared by all recipes:

- **Steps** are optimiser steps. One step consumes ``grad_accum`` micro-batches of
  ``batch_size`` examples per process.
- **Data order** (:class:`~vidcli.train.order.DataOrder`) is an endless stream of micro-batches: epoch ``e``
  is a permutation of the examples seeded by ``(seed, e)`` and independent of every
  other random state, so the position in the stream (a micro-batch counter) is all
  that a checkpoint needs to continue exactly. A run lasts ``max_steps`` steps, or by
  default enough steps to cover ``epochs`` passes (the last step may read a few
  micro-batches of the next epoch's order to stay full).
- **Weight decay and schedules**: see :mod:`vidcli.train.optim`.
- **Distribution** is accelerate's: single device as a plain command, many with
  ``accelerate launch -m vidcli ...`` and the user's accelerate config; every recipe
  trains a module made by ``accelerator.prepare`` (DDP, FSDP, ...), which synchronises
  the gradients. The global batch is ``batch_size × grad_accum × processes``; runs with
  the same per-device batch and the same ``grad_accum × processes`` see the same
  examples in the same micro-batches, with the same seeds (keyed by
  :meth:`~vidcli.train.order.DataOrder.stream_index`), so they train alike up to float summation order.
  Checkpoints store the data position in global terms and resume on another process
  count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The pieces every recipe is built from, named here together for callers outside vidcli.train.
from vidcli.provenance import file_sha256  # noqa: F401
from vidcli.train.inputs import read_training_records  # noqa: F401
from vidcli.train.optim import (OPTIMIZERS, SCHEDULES, OptimConfig, build_optimizer, build_scheduler,  # noqa: F401
                                clip_and_step, decay_groups, lr_factor, total_steps)
from vidcli.train.order import DataOrder, seeded_uniform  # noqa: F401
from vidcli.train.start import (aligned_storage, compute_dtype, make_accelerator, resolve_mixed_precision,  # noqa: F401
                                set_seed)
from vidcli.train.tracking import tracker_config  # noqa: F401

MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
TRACKERS = ("tensorboard", "wandb")


@dataclass
class RunConfig:
    """How long a run lasts, how it is batched, saved, logged and seeded."""

    output_dir: Path
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 6  # per device (process)
    grad_accum: int = 2
    save_every: int = 500  # steps between checkpoints; 0 = only the final model
    mixed_precision: str = "auto"
    report_to: str = "none"  # "none", or trackers joined by commas: "tensorboard", "wandb", "tensorboard,wandb"
    log_samples_every: int = 100  # steps between the media a trainer sends to the trackers (0: never)
    log_samples: int = 2  # how many samples (rollouts, prompts, triplets) each time
    resume: bool = False
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}")
        if self.report_to != "none" and (not self.trackers or set(self.trackers) - set(TRACKERS)):
            raise ValueError(f"report_to must be 'none' or a comma-separated choice of {TRACKERS}")
        if self.log_samples_every < 0 or self.log_samples < 1:
            raise ValueError("log_samples_every must be >= 0 and log_samples >= 1")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1 or self.save_every < 0:
            raise ValueError("batch_size, grad_accum and epochs must be >= 1; save_every >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers of ``report_to``, in the order given (empty for ``none``)."""
        if self.report_to == "none":
            return ()
        return tuple(dict.fromkeys(name.strip() for name in self.report_to.split(",") if name.strip()))


def run_recipe(recipe) -> Path:
    """``setup()``, ``train()`` and, whatever happens, ``cleanup()``; returns the final model's folder
    (the run's closing line, :mod:`vidcli.train.monitor`, names it)."""
    try:
        recipe.setup()
        return recipe.train()
    finally:
        recipe.cleanup()
