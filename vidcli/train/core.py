"""The shared training core: the conventions every recipe keeps (the run's settings,
:class:`~vidcli.train.config.RunConfig`, are declared in :mod:`vidcli.train.config`).

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

from pathlib import Path

# The pieces every recipe is built from, named here together for callers outside vidcli.train.
from vidcli.provenance import file_sha256  # noqa: F401
from vidcli.train.config import MIXED_PRECISION, TRACKERS, RunConfig, parse_report_to  # noqa: F401
from vidcli.train.inputs import read_training_records  # noqa: F401
from vidcli.train.optim import (  # noqa: F401
    OPTIMIZERS,
    SCHEDULES,
    OptimConfig,
    build_optimizer,
    build_scheduler,
    clip_and_step,
    decay_groups,
    lr_factor,
    total_steps,
)
from vidcli.train.order import DataOrder, seeded_uniform  # noqa: F401
from vidcli.train.start import aligned_storage, compute_dtype, make_accelerator, resolve_mixed_precision, set_seed  # noqa: F401
from vidcli.train.tracking import tracker_config  # noqa: F401


def run_recipe(recipe) -> Path:
    """``setup()``, ``train()`` and, whatever happens, ``cleanup()``; returns the final model's folder
    (the run's closing line, :mod:`vidcli.train.monitor`, names it). A run whose ``train()`` returned
    is marked finished before the cleanup (:meth:`~vidcli.train.start.RunStart.close`)."""
    try:
        recipe.setup()
        model = recipe.train()
        if getattr(recipe, "started", None) is not None:
            recipe.started.finished = True
        return model
    finally:
        recipe.cleanup()
