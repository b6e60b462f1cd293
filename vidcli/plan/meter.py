"""Counting tensor memory on any device, CPU included, where no allocator statistics exist.

- :class:`LiveTensors` counts the bytes of every tensor storage created inside its block
  (forward, backward, optimiser step alike) and frees them as their storages die: its
  ``peak`` is what ``torch.cuda.max_memory_allocated`` would add over the memory held
  before the block, without the allocator's rounding and caching.
- :class:`SavedTensors` counts only what autograd keeps for backward (distinct storages,
  parameters excluded), through ``saved_tensors_hooks``; inside an activation-checkpointed
  region autograd keeps nothing but the region's inputs, which this meter does not see.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[id(storage)] = storage.nbytes()
    return sum(seen.values())


class LiveTensors(TorchDispatchMode):
    """Live and peak bytes of the storages created by operations inside the block.

    Storages are told apart by identity (PyTorch keeps one Python object per storage
    while it lives) and counted until they are freed, wherever that happens. Tensors
    that existed before the block are not counted, even if the block frees them.
    """

    def __init__(self, fake: Any = None) -> None:
        super().__init__()
        self.fake = fake  # a FakeTensorMode beneath this one: operations on real tensors only run for real
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}
        self._born: dict[int, int] = {}  # storage → index in the timeline where it appeared
        self._timeline: list[int] = []  # ``current`` after each allocation and free
        self._discounted: set[int] = set()
        self._intervals: list[tuple[int, int, int]] = []  # (born, freed, bytes) of discounted storages

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.fake is not None and not _has_fake(args, kwargs):
            # Index arithmetic on real token ids and grids (rope positions, patch windows) must
            # see values: only operations that touch a fake tensor are left to the fake mode.
            from torch.utils._python_dispatch import _disable_current_modes

            with _disable_current_modes():
                out = func(*args, **kwargs)
        else:
            if self.fake is not None and func is torch.ops.aten.index.Tensor:
                args = _long_indices(args)
            out = func(*args, **kwargs)
        inputs = None
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                storage = value.untyped_storage()
                if id(storage) not in self._live:
                    if inputs is None:  # a view or in-place result shares an input's storage: nothing new
                        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0]
                                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
                    if id(storage) in inputs:
                        continue
                self._track(storage)
        return out

    def _track(self, storage: Any) -> None:
        key = id(storage)
        if key in self._live:
            size = storage.nbytes()  # resized in place (rare): count the new size
            self.current += size - self._live[key]
            self._live[key] = size
        else:
            size = storage.nbytes()
            self._live[key] = size
            self._born[key] = len(self._timeline)
            self.current += size
            weakref.finalize(storage, self._free, key)
        self._timeline.append(self.current)
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        size = self._live.pop(key, 0)
        born = self._born.pop(key, None)
        if key in self._discounted:
            self._discounted.discard(key)
            self._intervals.append((born, len(self._timeline), size))
        self.current -= size
        self._timeline.append(self.current)

    def reset_peak(self) -> None:
        self.peak = self.current
        self._start = len(self._timeline)

    def discount(self, tensor: torch.Tensor) -> None:
        """Leave ``tensor``'s storage out of :meth:`peak_without` for its whole life (e.g. a
        parameter gradient, which the caller counts elsewhere)."""
        key = id(tensor.untyped_storage())
        if key in self._live:
            self._discounted.add(key)

    def peak_without(self) -> int:
        """The peak since the start (or the last :meth:`reset_peak`) without the discounted storages."""
        import numpy as np

        start = getattr(self, "_start", 0)
        values = np.asarray(self._timeline[start:] or [self.current], dtype=np.int64)
        for born, freed, size in self._intervals:
            lo, hi = max(born - start, 0), max(freed - start, 0)
            values[lo:hi] -= size
        return int(values.max()) if values.size else self.current


def _long_indices(args: tuple) -> tuple:
    """``x[mask]`` with a real boolean mask as ``x[i, j, ...]`` with the mask's real positions:
    the same result, whose shape a fake tensor can know without the mask's values."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.utils._python_dispatch import _disable_current_modes

    source, indices = args[0], list(args[1])
    out: list = []
    for index in indices:
        if isinstance(index, torch.Tensor) and not isinstance(index, FakeTensor) and index.dtype == torch.bool:
            with _disable_current_modes():
                out.extend(index.nonzero(as_tuple=True))
        else:
            out.append(index)
    return (source, out, *args[2:])


def _has_fake(args, kwargs) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return any(isinstance(t, FakeTensor) for t in tree_flatten((args, kwargs))[0])


class SavedTensors:
    """Live and peak bytes of distinct non-parameter storages held for backward."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.exclude = {id(t.untyped_storage()) for t in exclude}
        self.holders: dict[int, list[int]] = {}  # storage id -> [bytes, holders]
        self.current = self.peak = 0

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.exclude or tensor.device.type == "meta":
            return tensor
        entry = self.holders.setdefault(key, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        return _Held(tensor, self, key)

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Held) else packed

    def release(self, key: int) -> None:
        entry = self.holders[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.holders[key]

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    """What autograd keeps for one saved tensor; freeing the graph node frees this."""

    def __init__(self, tensor: torch.Tensor, meter: SavedTensors, key: int) -> None:
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self) -> None:
        self.meter.release(self.key)
