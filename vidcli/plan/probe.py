"""Measuring activation memory at reduced size with the real layer widths, and scaling it up.

A *probe* runs one piece of a training step — a forward and backward of the interpreter,
one denoising step of a DiT, a VAE decode, a VLM query — on a copy of the run's model cut
to one or two layers per stack (every width, vocabulary and dtype as in the run, adapters
and checkpointing included), on CPU, with inputs a small fraction of the run's, and counts
the tensor bytes it creates (:class:`~vidcli.plan.meter.LiveTensors`). Parameter gradients
are released as soon as they are accumulated, so a probe sees activations, saved tensors
and backward temporaries only; gradients and optimiser state are counted from parameter
counts. Two sizes and one or two extra layers give, per stack, the bytes of one layer and
the part that does not depend on depth, each a linear function of the input size, which
the plan then evaluates at the run's depth and size.

Copies are made from the meta-device build (:mod:`vidcli.weights`), so nothing is read
from disk; their weights are zeros (values do not change what is allocated).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from vidcli.plan.meter import LiveTensors


@dataclass(frozen=True)
class Line:
    """y = intercept + slope·x, fitted exactly through two measured points."""

    intercept: float
    slope: float

    @classmethod
    def through(cls, x0: float, y0: float, x1: float, y1: float) -> "Line":
        slope = (y1 - y0) / (x1 - x0)
        return cls(y0 - slope * x0, slope)

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


@dataclass
class Reading:
    """What one probe saw: the peak over its run and the bytes held at its mark (if any)."""

    peak: int
    held: int = 0


def stacks(module: nn.Module) -> dict[str, nn.ModuleList]:
    """The repeated layer stacks of a model, by kind: ``text``, ``vision``, ``audio`` or ``blocks``.

    A stack is a ModuleList of two or more modules of one class (decoder layers, vision
    blocks, DiT blocks); its kind comes from its path.
    """
    found: dict[str, nn.ModuleList] = {}
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and len(child) > 1 and len({type(m) for m in child}) == 1:
            lowered = name.lower()
            kind = "vision" if ("visual" in lowered or "vision" in lowered) else \
                "audio" if "audio" in lowered else "text" if "layers" in lowered else "blocks"
            if kind not in found:
                found[kind] = child
    return found


def cut_copy(module: nn.Module, depths: dict[str, int]) -> nn.Module:
    """A materialised copy of a meta-device ``module`` with each stack cut to ``depths[kind]`` layers."""
    clone = copy.deepcopy(module)
    for kind, stack in stacks(clone).items():
        if kind in depths:
            del stack[depths[kind]:]
    materialise(clone)
    return clone


def materialise(module: nn.Module) -> None:
    """Meta tensors → zero-filled CPU tensors of the same shapes and dtypes, in place."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.device.type == "meta":
                sub._parameters[name] = nn.Parameter(torch.zeros(param.shape, dtype=param.dtype),
                                                     requires_grad=param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.device.type == "meta":
                sub._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype)


def release_gradients(parameters: Iterable[nn.Parameter]) -> list:
    """Drop each trained parameter's gradient as soon as it is accumulated (the probe counts activations)."""
    handles = []
    for param in parameters:
        if param.requires_grad:
            handles.append(param.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None)))
    return handles


def read(run: Callable[[LiveTensors], int | None], parameters: Iterable[nn.Parameter] = ()) -> Reading:
    """Run ``run(meter)`` under a fresh meter; it may return the bytes held at a point it chose."""
    handles = release_gradients(parameters)
    try:
        with LiveTensors() as meter:
            held = run(meter)
    finally:
        for handle in handles:
            handle.remove()
    return Reading(meter.peak, int(held or 0))
