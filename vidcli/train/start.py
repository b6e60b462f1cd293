"""Starting a run: the accelerator, its precision, resume state, trackers and seeds.

Every recipe's ``setup()`` starts the same way (:func:`start_run`): an accelerator,
the run monitor, one log per run (not one per process), half-written checkpoints of a
killed run removed, the checkpoint to resume from checked against this run's settings
and inputs, the trackers started (a resumed run continues its own), the seeds set.
What follows — models, optimiser, data order — is the recipe's own.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from vidcli.errors import InputError
from vidcli.train.checkpoint import check_same_inputs, latest_checkpoint, read_run_info, remove_partials

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from accelerate import Accelerator

    from vidcli.train.checkpoint import Checkpointer
    from vidcli.train.core import RunConfig
    from vidcli.train.monitor import RunMonitor
    from vidcli.train.order import DataOrder

log = logging.getLogger("vidcli.train")


@dataclass
class RunStart:
    """A started run: what every recipe's setup has before it builds its models."""

    run: "RunConfig"
    accelerator: "Accelerator"
    monitor: "RunMonitor"
    resume_from: Path | None  # the checkpoint this run continues, None for a fresh run
    saved: dict = field(default_factory=dict)  # that checkpoint's vidcli.json ({} for a fresh run)
    finished: bool = False  # the recipe's train() returned (set by run_recipe)

    @property
    def device(self) -> str:
        """Where the models are loaded: multi-CPU runs name their device "cpu:0", which loaders refuse."""
        device = self.accelerator.device
        return "cpu" if device.type == "cpu" else str(device)

    def restore(self, checkpointer: "Checkpointer", scheduler, order: "DataOrder") -> tuple[int, int, dict]:
        """``(step, data position, metrics)`` to continue from: the checkpoint's (optimiser, schedule and
        RNG states loaded), or a fresh run's start."""
        if self.resume_from is None:
            if self.run.resume:
                log.info("--resume: no checkpoint in %s yet, starting from step 0", self.run.output_dir)
            return 0, 0, {}
        progress = checkpointer.load(self.resume_from, scheduler)
        step = progress["step"]
        log.info("resumed from %s at step %d", self.resume_from, step)
        return step, order.resume_position(progress), self.saved.get("metrics", {})

    def close(self) -> None:
        """Close the monitor (bar, trackers' media), end the trackers and tear the process group down.

        After a finished run of several processes each waits for the others first, so none tears
        its part of the group down while another still runs its last lines (a CPU run's second
        process was seen to abort there under load, "terminate called without an active
        exception", after the run had finished and saved). Not after a failure: a process that
        failed cannot count on the others reaching the barrier. What left the group's threads
        running into interpreter shutdown, where that abort happens, is a late import
        (:func:`release_world_group_at_teardown`, called by :func:`make_accelerator`)."""
        self.monitor.close()
        if self.finished and self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def start_run(run: "RunConfig", fingerprints: dict[str, dict], *, command: str, log_every: int,
              check_same_run: Callable[[Path, dict], None], project: str, hparams: dict,
              line_keys: Sequence[str] = ("loss", "lr"), find_unused_parameters: bool = False) -> RunStart:
    """Start one run of ``command`` whose inputs have ``fingerprints`` (see the module docstring).

    ``check_same_run(folder, saved)`` refuses a checkpoint trained with other settings
    than this run's (the recipe knows which matter); ``project`` and ``hparams`` go to
    the trackers. Whatever this opened is closed again when a later part fails.
    """
    from vidcli.train.monitor import RunMonitor

    accelerator = make_accelerator(run, find_unused_parameters=find_unused_parameters)
    monitor = RunMonitor(accelerator, run, command=command, log_every=log_every, line_keys=line_keys)
    started = RunStart(run, accelerator, monitor, None)
    try:
        if not accelerator.is_main_process:
            logging.getLogger("vidcli").setLevel(logging.WARNING)  # one log per run, not one per process
        if accelerator.is_main_process and run.resume:
            remove_partials(run.output_dir)
        accelerator.wait_for_everyone()
        started.resume_from = latest_checkpoint(run.output_dir) if run.resume else None
        if started.resume_from is not None:
            started.saved = read_run_info(started.resume_from) or {}
            check_same_run(started.resume_from, started.saved)
            check_same_inputs(started.resume_from, fingerprints)
            monitor.restore(started.saved)
        monitor.start_trackers(project=project, hparams=hparams)
        set_seed(run.seed)
    except BaseException:
        started.close()
        raise
    return started


def final_model(output_dir: Path) -> Path | None:
    """``output_dir`` when it holds the run's final model already (a finished run resumed), else None."""
    return output_dir if latest_checkpoint(output_dir) == output_dir else None


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


def make_accelerator(run: "RunConfig", *, find_unused_parameters: bool = False) -> "Accelerator":
    """An Accelerator with gradient accumulation, mixed precision and the chosen trackers.

    The trackers are started later, by :func:`vidcli.train.tracking.start_trackers`, once
    the run knows whether it resumes (a resumed run continues its W&B run and TensorBoard
    history). A tracker whose package is missing is an error here rather than a silently
    empty log. ``find_unused_parameters`` is for models whose forward skips parts
    depending on the batch (a multimodal model on a batch without images): under DDP
    every process must then tell which gradients it lacks.
    """
    from accelerate import Accelerator
    from accelerate.utils import (
        DistributedDataParallelKwargs,
        ProjectConfiguration,
        is_tensorboard_available,
        is_wandb_available,
    )

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
    for name in run.trackers:
        if not available[name]():
            raise InputError(f"--report-to {name} needs the '{name}' package "
                             f"(pip install {name}, or pip install 'vidcli[tracking]')")
    release_world_group_at_teardown()
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

def release_world_group_at_teardown() -> None:
    """Import ``torch.distributed.nn.functional`` before a process group exists.

    Ten functions of that module take ``group=group.WORLD`` as a default argument, a value
    read once, when the module is first imported. Imported after ``init_process_group``
    (``torch._dynamo`` imports it, and DDP imports ``torch._dynamo`` the first time it needs
    it), those defaults hold the world group for the rest of the process (torch 2.14), so
    ``destroy_process_group`` at the end of a run cannot free it: a CPU run's gloo threads
    then live on into interpreter shutdown, where a thread that is torn down while it needs
    the interpreter aborts the process ("terminate called without an active exception",
    after the run has finished and saved; pytorch/pytorch#179291 describes that shutdown).
    Imported first, the defaults are ``None`` and the group is freed when it is destroyed.
    """
    import torch.distributed

    if torch.distributed.is_available():
        import torch.distributed.nn.functional  # noqa: F401  (imported for its side effect, above)


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

def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) before models are built."""
    from accelerate.utils import set_seed as accelerate_set_seed

    accelerate_set_seed(seed)

