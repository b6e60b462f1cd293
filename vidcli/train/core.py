"""The shared training core: configs, accelerate setup, optimiser, schedule, data order.

Every recipe (``sft``, ``grpo``, ``drf-tune``, ``revise-tune``) builds on these pieces
and keeps its own loop, so a recipe reads top to bottom like its method.

Conventions shared by all recipes:

- **Steps** are optimiser steps. One step consumes ``grad_accum`` micro-batches of
  ``batch_size`` examples per process.
- **Data order** (:class:`DataOrder`) is an endless stream of micro-batches: epoch ``e``
  is a permutation of the examples seeded by ``(seed, e)`` and independent of every
  other random state, so the position in the stream (a micro-batch counter) is all
  that a checkpoint needs to continue exactly. A run lasts ``max_steps`` steps, or by
  default enough steps to cover ``epochs`` passes (the last step may read a few
  micro-batches of the next epoch's order to stay full).
- **Weight decay** applies to weight matrices and convolution kernels (tensors with two
  or more dimensions, embeddings included) and never to biases or normalisation scales
  (one-dimensional tensors): decaying a LayerNorm/RMSNorm gain towards zero or a bias
  towards zero is a constraint nobody asked for.
- **Schedules** (:func:`lr_factor`): linear warm-up reaching the full rate on the last
  warm-up step, then cosine decay towards zero, or constant.
- **Distribution** is accelerate's: single device as a plain command, many with
  ``accelerate launch -m vidcli ...`` and the user's accelerate config; every recipe
  trains a module made by ``accelerator.prepare`` (DDP, FSDP, ...), which synchronises
  the gradients. The global batch is ``batch_size × grad_accum × processes``; runs with
  the same per-device batch and the same ``grad_accum × processes`` see the same
  examples in the same micro-batches, with the same seeds (keyed by
  :meth:`DataOrder.stream_index`), so they train alike up to float summation order.
  Checkpoints store the data position in global terms and resume on another process
  count.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

import numpy as np

from vidcli.errors import InputError
from vidcli.provenance import file_sha256

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from accelerate import Accelerator

log = logging.getLogger("vidcli.train")

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adamw8bit")
MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
TRACKERS = ("tensorboard", "wandb")


@dataclass
class OptimConfig:
    """AdamW and learning-rate schedule settings."""

    lr: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 200
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    optimizer: str = "adamw"  # adamw8bit: bitsandbytes' 8-bit states (CUDA), 2 bytes per parameter, not 8

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be positive; weight_decay and warmup_steps non-negative")


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


# ----------------------------------------------------------------------------- optimiser


def decay_groups(named_parameters: Iterable[tuple[str, "torch.nn.Parameter"]],
                 weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: decayed weights (ndim >= 2) and the rest (biases, norms).

    Only parameters with ``requires_grad`` are included, in the order given, so the
    optimiser state lines up with the same model built again on resume.
    """
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        if param.ndim >= 2:
            decay.append(param)
            decay_names.append(name)
        else:
            no_decay.append(param)
            no_decay_names.append(name)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(named_parameters: Iterable[tuple[str, "torch.nn.Parameter"]],
                    config: OptimConfig) -> "torch.optim.Optimizer":
    """AdamW over :func:`decay_groups`; a clear error when nothing is trainable.

    On CUDA the fused kernel is used: it updates every parameter in one pass without the
    full-size temporaries of the default multi-tensor path (4 more bytes per trained
    parameter at the step's peak). ``adamw8bit`` is bitsandbytes' AdamW with 8-bit
    block-quantised moments (CUDA only).
    """
    import torch

    groups = decay_groups(named_parameters, config.weight_decay)
    if not groups:
        raise ValueError("no trainable parameters")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    if config.optimizer == "adamw8bit":
        if not on_cuda:
            raise InputError("--optimizer adamw8bit needs the trained weights on a CUDA GPU (bitsandbytes)")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(groups, lr=config.lr, betas=config.betas, eps=config.eps)
    fused = on_cuda and all(p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused or None)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The learning-rate multiplier used by optimiser step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, so the
    first step already moves the weights and the last warm-up step uses the full rate.
    Then ``constant`` stays at 1 and ``cosine`` is ``0.5·(1 + cos(π·p))`` with
    ``p = (step − warmup) / (total − warmup)``: 1 right after warm-up, approaching 0 on
    the last step.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: "torch.optim.Optimizer", config: OptimConfig,
                    total_steps: int) -> "torch.optim.lr_scheduler.LambdaLR":
    """A LambdaLR over :func:`lr_factor`, stepped once per optimiser step by the recipe."""
    import functools

    import torch

    factor = functools.partial(lr_factor, warmup_steps=config.warmup_steps, total_steps=total_steps,
                               schedule=config.schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_steps(run: RunConfig, batches_per_epoch: int) -> int:
    """``max_steps`` when set, else the steps that cover ``epochs`` passes (rounded up)."""
    if run.max_steps is not None:
        return run.max_steps
    return max(1, math.ceil(run.epochs * batches_per_epoch / run.grad_accum))


# ----------------------------------------------------------------------------- accelerate


def resolve_mixed_precision(choice: str) -> str | None:
    """``auto``: the ``accelerate launch`` config's choice if any, else bf16 where supported."""
    if choice != "auto":
        return choice
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # let the user's accelerate config decide
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def compute_dtype(mixed_precision: str | None) -> str:
    """The dtype autocast computes in under an accelerator's ``mixed_precision`` setting:
    frozen models and LoRA bases are held in it (nothing is lost: autocast would cast their
    weights to it at every matrix product anyway)."""
    return {"bf16": "bfloat16", "fp16": "float16"}.get(str(mixed_precision), "float32")


def make_accelerator(run: RunConfig, *, find_unused_parameters: bool = False) -> "Accelerator":
    """An Accelerator with gradient accumulation, mixed precision and the chosen trackers.

    The trackers are started later, by :func:`vidcli.train.tracking.start_trackers`, once
    the run knows whether it resumes (a resumed run continues its W&B run and TensorBoard
    history). A tracker whose package is missing is an error here rather than a silently
    empty log. ``find_unused_parameters`` is for models whose forward skips parts
    depending on the batch (a multimodal model on a batch without images): under DDP
    every process must then tell which gradients it lacks.
    """
    from accelerate import Accelerator
    from accelerate.utils import (DistributedDataParallelKwargs, ProjectConfiguration, is_tensorboard_available,
                                  is_wandb_available)

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    for name in run.trackers:
        if not available[name]():
            raise InputError(f"--report-to {name} needs the '{name}' package "
                             f"(pip install {name}, or pip install 'vidcli[tracking]')")
    try:
        accelerator = Accelerator(
            gradient_accumulation_steps=run.grad_accum,
            mixed_precision=resolve_mixed_precision(run.mixed_precision),
            log_with=list(run.trackers) or None,
            # Gradients as views into DDP's all-reduce buckets: no second copy of every gradient.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters,
                                                           gradient_as_bucket_view=True)],
            project_config=ProjectConfiguration(project_dir=str(run.output_dir),
                                                logging_dir=str(run.output_dir / "logs")),
        )
    except ValueError as exc:  # e.g. --mixed-precision fp16 on a machine without a GPU
        raise InputError(f"cannot set up training: {exc}") from None
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        # `accelerate launch --multi_gpu` on a machine without GPUs starts N processes that
        # each set up a single-device run: N runs into one output folder, none in sync.
        raise InputError(f"started as {launched} processes, but accelerate set up {accelerator.num_processes}; "
                         "without GPUs, launch with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu ...")
    return accelerator


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


def aligned_storage(module: "torch.nn.Module", alignment: int = 64) -> None:
    """Copy every parameter and buffer of ``module`` that starts off an ``alignment``-byte
    boundary into fresh (aligned) memory, in place.

    Weights read from a safetensors file can sit at any offset of the file's buffer (the
    tiny Wan DiT's all start 24 bytes past a 64-byte boundary). CPU matrix kernels take
    other code paths for unaligned operands and round differently (3.6e-7 on the tiny
    DiT's output), and ``accelerator.prepare`` under multi-process CPU training moves the
    model from ``cpu`` to ``cpu:0``, which copies it into aligned memory, so one process
    and two processes computed the same step with different roundings. Adam's first
    step turns that into weight differences up to 2e-5 (for gradients near its ``eps``,
    ``lr·g/(|g| + eps)`` moves by ``lr/eps`` per unit of ``g``). Aligning here, before
    ``prepare``, gives every process count the same memory layout.
    """
    for param in module.parameters():
        if param.data_ptr() % alignment:
            param.data = param.data.clone()
    for name, buffer in list(module.named_buffers()):
        if buffer.data_ptr() % alignment:
            owner, _, attr = name.rpartition(".")
            setattr(module.get_submodule(owner) if owner else module, attr, buffer.clone())


def clip_and_step(accelerator: "Accelerator", parameters: list, optimizer, scheduler,
                  max_grad_norm: float | None) -> float | None:
    """After the last micro-batch of a step: clip, step optimiser and schedule, zero grads.

    Returns the gradient norm before clipping (None when clipping is off).
    """
    norm = None
    if max_grad_norm:
        norm = float(accelerator.clip_grad_norm_(parameters, max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


# ----------------------------------------------------------------------------- data order


@dataclass(frozen=True)
class DataOrder:
    """Which examples each micro-batch holds, for every process.

    Micro-batch ``k`` of epoch ``e`` takes the next ``batch_size × num_processes``
    entries of epoch ``e``'s permutation and gives process ``r`` its ``r``-th share. The
    last, shorter global batch of an epoch is shared evenly; when it does not divide by
    the number of processes it is topped up from the start of the same permutation,
    so every process runs the same number of forward passes (collectives never wait
    on a process that has nothing to do).
    """

    num_examples: int
    batch_size: int
    seed: int
    num_processes: int = 1
    process_index: int = 0

    def __post_init__(self) -> None:
        if self.num_examples < 1:
            raise InputError("no training records")

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.num_examples / (self.batch_size * self.num_processes))

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order, a function of ``(seed, epoch)`` only."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def micro_batch(self, position: int) -> tuple[int, list[int]]:
        """``(epoch, example indices for this process)`` of micro-batch number ``position``."""
        epoch, k = divmod(position, self.batches_per_epoch)
        order = self.permutation(epoch)
        width = self.batch_size * self.num_processes
        start = k * width
        share = math.ceil(min(width, self.num_examples - start) / self.num_processes)
        chunk = np.take(order, range(start, start + share * self.num_processes), mode="wrap")
        mine = chunk[self.process_index * share:(self.process_index + 1) * share]
        return epoch, [int(i) for i in mine]

    @property
    def global_batch(self) -> int:
        """Examples per micro-batch over all processes."""
        return self.batch_size * self.num_processes

    def stream_index(self, position: int) -> int:
        """The slot number of this process's first example of micro-batch ``position``.

        Slots number the global batches laid end to end (an epoch holds
        ``batches_per_epoch × global_batch`` of them, a short last batch included), so
        no two examples share one, and a slot names the same example whatever the
        process count when the global batch divides the epoch: seeds keyed by it draw
        alike whether a global batch is split over 1 process or 2.
        """
        epoch, k = divmod(position, self.batches_per_epoch)
        start = k * self.global_batch
        share = math.ceil(min(self.global_batch, self.num_examples - start) / self.num_processes)
        return (epoch * self.batches_per_epoch + k) * self.global_batch + self.process_index * share

    def progress(self, position: int) -> dict:
        """The data position in global terms, for a checkpoint: micro-batches and examples consumed."""
        epoch, k = divmod(position, self.batches_per_epoch)
        return {"micro_batches": position, "global_batch": self.global_batch,
                "samples": epoch * self.num_examples + k * self.global_batch}

    def resume_position(self, progress: dict) -> int:
        """The micro-batch counter that continues a checkpoint's :meth:`progress` under this order.

        Equal global batches (e.g. 2 processes × batch b and 1 process × batch b with
        twice the accumulation, or 2 processes × b and 1 × 2b) keep the counter. Another
        global batch continues from the same example when it divides the examples
        consumed in the current epoch; otherwise the run cannot continue exactly.
        """
        position = progress["micro_batches"]
        # A progress record without the global batch: the per-device batch is taken as unchanged.
        saved_batch = progress.get("global_batch") or self.batch_size * progress.get("num_processes",
                                                                                     self.num_processes)
        if saved_batch == self.global_batch:
            return position
        epoch, k = divmod(position, math.ceil(self.num_examples / saved_batch))
        offset = k * saved_batch  # examples of the epoch consumed
        if offset % self.global_batch:
            raise InputError(f"--resume: the checkpoint stopped {offset} examples into epoch {epoch}, "
                             f"which the global batch of {self.global_batch} (batch size × processes) does "
                             f"not divide; resume with a global batch of {saved_batch}")
        return epoch * self.batches_per_epoch + offset // self.global_batch


def seeded_uniform(seed: int, *keys: int) -> float:
    """A uniform number in [0, 1) fixed by ``(seed, *keys)``; independent of global RNGs.

    Used for per-example coin flips (e.g. instruction dropout per ``(epoch, example)``),
    so a resumed run flips the same coins as an uninterrupted one.
    """
    return float(np.random.default_rng([seed, *keys]).random())


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) before models are built."""
    from accelerate.utils import set_seed as accelerate_set_seed

    accelerate_set_seed(seed)


Item = TypeVar("Item")


def read_training_records(inputs: list[str], convert: Callable, *, what: str = "training records"
                          ) -> tuple[list, dict[str, dict]]:
    """Every record of ``inputs`` through ``convert``, validated before training starts.

    An InputError from a line or from ``convert`` is located at its file, line and id.
    Also returns the input fingerprints for ``vidcli.json``: a file's sha256 of its bytes,
    stdin's of its non-blank lines, and the number of records each gave.
    """
    import hashlib

    from vidcli.jsonl import read_sources

    items, stdin_hash, counts = [], hashlib.sha256(), {}
    for source in read_sources(inputs):
        try:
            if source.error is not None:
                raise source.error
            items.append(convert(source))
        except InputError as exc:
            raise exc.located(file=source.file, line=source.line, record_id=source.id) from None
        counts[source.file] = counts.get(source.file, 0) + 1
        if source.file == "<stdin>":
            stdin_hash.update(source.raw.encode("utf-8"))
    if not items:
        raise InputError(f"no {what} in " + ", ".join(inputs))
    fingerprints = {path: {"sha256": stdin_hash.hexdigest() if path == "-" else file_sha256(path),
                           "records": counts.get("<stdin>" if path == "-" else path, 0)}
                    for path in dict.fromkeys(inputs)}
    return items, fingerprints


def run_recipe(recipe) -> Path:
    """``setup()``, ``train()`` and, whatever happens, ``cleanup()``; returns the final model's folder
    (the run's closing line, :mod:`vidcli.train.monitor`, names it)."""
    try:
        recipe.setup()
        return recipe.train()
    finally:
        recipe.cleanup()
