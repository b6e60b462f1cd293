"""Measuring activation memory with shape-only tensors at the run's sizes and widths, reduced depth.

A *probe* runs one piece of a training step — the interpreter's forward and backward on a
batch, one denoising step of a DiT, a VAE decode, a VLM query — on a copy of the run's
model cut to one or two layers per stack (every width, vocabulary and dtype as in the
run, adapters and checkpointing included), with inputs of the run's sizes, and counts the
tensor bytes it creates (:class:`~vidcli.plan.meter.LiveTensors`).

The copies hold *fake* tensors (PyTorch's ``FakeTensorMode``): each operation runs its
shape and dtype rules only, on CPU semantics (autocast included), and yields a tensor
with a storage of the right size but no data, so a probe of a 7 B model at 10 K tokens
takes a second and no memory. Small integer inputs (token ids, image grids) stay real, so
the model code that reads their values (rope positions, patch windows) runs as usual.
Measured this way, bytes equal those of the same step computed for real
(``tests/test_plan.py`` compares both on small models).

Parameter gradients are left out of a probe's peak (counted apart, with the optimiser
state). One and two layers per stack give each stack's bytes per layer and the part
that does not depend on depth; the plan evaluates them at the run's depth.

Copies are made from the meta-device build (:mod:`vidcli.weights`), so nothing is read
from disk.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

from vidcli.plan.meter import LiveTensors

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch._subclasses.fake_tensor import FakeTensorMode


@dataclass
class Reading:
    """What one probe saw: the peak over its run and the bytes held at its mark (if any)."""

    peak: int
    held: int = 0


def fake_mode() -> "FakeTensorMode":
    """A mode whose floating tensors have shapes, dtypes and storages but no data."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


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


def depths_of(module: nn.Module) -> dict[str, int]:
    return {kind: len(stack) for kind, stack in stacks(module).items()}


def cut_copy(module: nn.Module, depths: dict[str, int], fake: "FakeTensorMode") -> nn.Module:
    """A copy of a meta-device ``module`` with each stack cut to ``depths[kind]`` layers, its
    tensors fake (same shapes and dtypes)."""
    clone = copy.deepcopy(module)
    for kind, stack in stacks(clone).items():
        if kind in depths:
            del stack[depths[kind]:]
    with fake:
        materialise(clone)
    return clone


def materialise(module: nn.Module) -> None:
    """Meta tensors → zero tensors of the same shapes and dtypes (fake ones under a fake mode), in place."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.device.type == "meta":
                sub._parameters[name] = nn.Parameter(torch.zeros(param.shape, dtype=param.dtype),
                                                     requires_grad=param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.device.type == "meta":
                sub._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype)


def measure(run: Callable[[LiveTensors], int | None], trained: Iterable[nn.Parameter] = (),
            fake: "FakeTensorMode | None" = None) -> Reading:
    """Run ``run(meter)`` (under ``fake``) and read its memory.

    ``run`` may return the bytes held at a point it chose (``meter.current`` where the
    forward ends). Every gradient of a ``trained`` parameter is dropped as soon as it is
    accumulated and left out of the peak: gradients are counted apart.
    """
    meter = LiveTensors(fake)

    def drop(param: nn.Parameter) -> None:
        meter.discount(param.grad)
        param.grad = None

    handles = [p.register_post_accumulate_grad_hook(drop) for p in trained if p.requires_grad]
    try:
        with fake if fake is not None else contextlib.nullcontext(), meter:
            held = run(meter)
    finally:
        for handle in handles:
            handle.remove()
    return Reading(meter.peak_without(), int(held or 0))


@dataclass(frozen=True)
class Fit:
    """Bytes as (bytes without layers) + Σ layers × (bytes of one layer), per stack."""

    rest: float
    layer: dict[str, float]

    def parts(self, depths: dict[str, int]) -> tuple[float, dict[str, float]]:
        """(the part without layers, each stack's part) at ``depths``."""
        return self.rest, {k: depths[k] * v for k, v in self.layer.items()}

    def total(self, depths: dict[str, int]) -> float:
        rest, per_stack = self.parts(depths)
        return max(0.0, rest + sum(per_stack.values()))


def fit_depths(read_at: Callable[[dict[str, int]], float], kinds: list[str]) -> Fit:
    """Read at one layer per stack and with one more in each stack (:class:`Fit`)."""
    ones = {k: 1 for k in kinds}
    base = read_at(ones)
    layers = {kind: read_at({**ones, kind: 2}) - base for kind in kinds}
    return Fit(base - sum(layers.values()), layers)


_MEASURED: dict[tuple, object] = {}


def remembered(key: tuple, measure_it: Callable[[], object]):
    """A measurement, made once per process for ``key`` (the settings it depends on): the
    plans of a budget's measures share most of their probes with the run's own plan."""
    if key not in _MEASURED:
        _MEASURED[key] = measure_it()
    return _MEASURED[key]
