"""The optimiser and its learning-rate schedule, shared by every recipe.

- **Weight decay** applies to weight matrices and convolution kernels (tensors with two
  or more dimensions, embeddings included) and never to biases or normalisation scales
  (one-dimensional tensors): decaying a LayerNorm/RMSNorm gain towards zero or a bias
  towards zero is a constraint nobody asked for.
- **Schedules** (:func:`lr_factor`): linear warm-up reaching the full rate on the last
  warm-up step, then cosine decay towards zero, or constant.
- **Steps** are optimiser steps; a run lasts ``max_steps`` of them, or enough to cover
  ``epochs`` passes (:func:`total_steps`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import click

from vidcli.errors import InputError
from vidcli.settings import setting

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from accelerate import Accelerator

    from vidcli.train.core import RunConfig

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adamw", "adamw8bit")


@dataclass
class OptimConfig:
    """AdamW and learning-rate schedule settings."""

    lr: float = setting(1e-5, type=click.FloatRange(0, min_open=True), help="AdamW learning rate.")
    weight_decay: float = setting(0.01, type=click.FloatRange(0),
                                  help="AdamW decay of weight matrices (not biases or norms).")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = setting("cosine", type=click.Choice(SCHEDULES),
                            help="After the linear warm-up: cosine decay towards 0, or constant.")
    warmup_steps: int = setting(200, type=click.IntRange(0), help="Steps of linear warm-up to the peak rate.")
    # None or 0: no clipping (the option's 0 arrives as None)
    max_grad_norm: float | None = setting(1.0, type=click.FloatRange(0), convert=lambda norm: norm or None,
                                          help="Gradient clipping norm (0: off).")
    optimizer: str = setting("adamw", type=click.Choice(OPTIMIZERS),
                             help="adamw (fused on CUDA) or bitsandbytes' 8-bit AdamW (CUDA; optimiser state 2 bytes "
                                  "per trained parameter instead of 8).")

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be positive; weight_decay and warmup_steps non-negative")


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


def total_steps(run: "RunConfig", batches_per_epoch: int) -> int:
    """``max_steps`` when set, else the steps that cover ``epochs`` passes (rounded up)."""
    if run.max_steps is not None:
        return run.max_steps
    return max(1, math.ceil(run.epochs * batches_per_epoch / run.grad_accum))


def clip_and_step(accelerator: "Accelerator | None", parameters: list, optimizer, scheduler,
                  max_grad_norm: float | None) -> float | None:
    """After the last micro-batch of a step: clip, step optimiser and schedule, zero grads.

    ``accelerator`` None: a single-process loop (the toy world's model builders), clipped
    by torch directly. Returns the gradient norm before clipping (None when clipping is off).
    """
    norm = None
    if max_grad_norm:
        if accelerator is None:
            import torch

            norm = float(torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm))
        else:
            norm = float(accelerator.clip_grad_norm_(parameters, max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm

