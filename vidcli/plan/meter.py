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

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                self._track(value.untyped_storage())
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
            self.current += size
            weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.current


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
