"""Data order: which examples each micro-batch holds, on every process, in every epoch.

The order is an endless stream of micro-batches: epoch ``e`` is a permutation of the
examples seeded by ``(seed, e)`` and independent of every other random state, so the
position in the stream (a micro-batch counter) is all that a checkpoint needs to
continue exactly. Runs with the same per-device batch and the same ``grad_accum ×
processes`` see the same examples in the same micro-batches, with the same seeds (keyed
by :meth:`DataOrder.stream_index`). Checkpoints store the data position in global terms
and resume on another process count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vidcli.errors import InputError


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
