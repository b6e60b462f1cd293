"""Checkpoint directories (DESIGN.md §2): written whole or not at all, resumed exactly.

Layout of ``OUTPUT/checkpoint-STEP/`` and of the final model in ``OUTPUT/`` itself
(which has no ``trainer_state/``: optimizer state, twice the model's size for AdamW, is
kept only where a run can resume from it)::

    <weights>            whatever the recipe's ``save_weights`` writes: a transformers /
                         diffusers folder or a peft adapter (safetensors), loadable by
                         the plain library
    vidcli.json          command, arguments, package version, input fingerprints, step,
                         metrics, the run summary so far (:mod:`vidcli.train.monitor`),
                         the W&B run id (never environment variables or keys)
    trainer_state/       accelerate's ``save_state`` without model weights: optimizer,
                         RNG states (python, numpy, torch, CUDA) of every process;
                         plus progress.json: step, data position in global terms
                         (:meth:`DataOrder.progress`), process count, scheduler state

Under ``accelerate launch`` every process calls :meth:`Checkpointer.save`; the main
process alone writes weights, progress and ``vidcli.json`` and renames the folder, after
every process has written its RNG state. A run resumes on another process count: the
data position converts (:meth:`DataOrder.resume_position`), optimizer state is the
same on every process, and the per-process RNG streams, which cannot carry over to a
different number of processes, are reseeded from ``(step, process)``.

A checkpoint is first written to ``OUTPUT/.checkpoint-STEP.partial`` and renamed when
complete, so a killed run leaves every earlier checkpoint intact. The final model is
moved into ``OUTPUT`` with ``vidcli.json`` last: a folder without it is not a finished
checkpoint. ``--resume`` picks the complete checkpoint with the highest step whose files
are whole (a damaged one is skipped with a warning naming the file);
``--save-total-limit N`` keeps the newest N checkpoints. Files get the permissions of
the process umask (safetensors would write them owner-only).

Nothing is unpickled unsafely: accelerate loads the optimizer and RNG files with
``torch.load(weights_only=True)``, progress is JSON and weights are safetensors.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vidcli import __version__
from vidcli.errors import InputError
from vidcli.redact import safe_settings

if TYPE_CHECKING:  # pragma: no cover - typing only
    from accelerate import Accelerator

    from vidcli.train.core import DataOrder

log = logging.getLogger("vidcli.train")

RUN_INFO = "vidcli.json"
TRAINER_STATE = "trainer_state"
PROGRESS = "progress.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
RNG_PREFIX = "random_states_"  # accelerate's per-process RNG files in trainer_state/


@dataclass
class RunInfo:
    """What ``vidcli.json`` says about the run besides step and metrics."""

    command: str
    arguments: dict
    inputs: dict[str, dict] = field(default_factory=dict)  # path -> {"sha256", "records"}
    extra: dict = field(default_factory=dict)  # recipe-specific facts (base model, finetune mode, ...)


def safe_arguments(arguments: dict) -> dict:
    """Arguments as JSON values: none whose name suggests a credential, no secret in a URL."""
    return safe_settings(arguments)


def read_run_info(folder: Path) -> dict | None:
    """The parsed ``vidcli.json`` of a folder, or None when absent or unreadable."""
    try:
        value = json.loads((Path(folder) / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_complete(folder: Path) -> bool:
    """A finished checkpoint: ``vidcli.json`` with a step, and trainer state beside it."""
    info = read_run_info(folder)
    return (info is not None and isinstance(info.get("step"), int)
            and (Path(folder) / TRAINER_STATE / PROGRESS).is_file())


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete ``checkpoint-STEP/`` folders of a run, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(read_run_info(entry)["step"], entry) for entry in output_dir.iterdir()
             if _CHECKPOINT.match(entry.name) and entry.is_dir() and is_complete(entry)]
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step whose files are whole.

    A damaged one (a truncated weights file, an optimizer archive failing its checksum)
    is skipped with a warning naming the file, so the run resumes from the one before;
    when every checkpoint is damaged, that is an error. A damaged RNG state alone does
    not disqualify a checkpoint: :meth:`Checkpointer.load` warns about it.
    """
    from vidcli.filecheck import state_problems

    found = checkpoints(output_dir)
    damaged: list[str] = []
    for folder in reversed(found):
        problems = [p for p in state_problems(folder) if f"{os.sep}{RNG_PREFIX}" not in p]
        if not problems:
            if damaged:
                log.warning("resuming from %s instead", folder.name)
            return folder
        log.warning("skipping damaged checkpoint %s: %s", folder.name, "; ".join(problems))
        damaged += problems
    if damaged:
        raise InputError(f"--resume: every checkpoint is damaged ({damaged[0]}); "
                         "remove the checkpoint folders to start afresh", file=str(output_dir))
    return None


def check_output_dir(output_dir: Path, resume: bool) -> None:
    """Refuse to train into a folder that holds another run unless ``--resume`` was given."""
    output_dir = Path(output_dir)
    if resume or not output_dir.is_dir():
        return
    taken = (output_dir / RUN_INFO).exists() or any(_CHECKPOINT.match(p.name) for p in output_dir.iterdir())
    if taken:
        raise InputError(f"output folder {output_dir} already holds a training run; "
                         "pass --resume to continue it or choose another folder")


def remove_partials(output_dir: Path) -> list[Path]:
    """Delete ``.checkpoint-*.partial`` folders that a killed run left behind; return them."""
    output_dir = Path(output_dir)
    stale = sorted(output_dir.glob(".checkpoint-*.partial")) if output_dir.is_dir() else []
    for path in stale:
        _remove(path)
    return stale


def check_same_inputs(folder: Path, inputs: dict[str, dict]) -> None:
    """A resumed run must read the same data, or its saved data position means nothing.

    Compares the sha256 fingerprints (not the paths: the files may have moved).
    """
    saved = (read_run_info(folder) or {}).get("inputs", {})
    before = sorted(v.get("sha256") for v in saved.values())
    now = sorted(v.get("sha256") for v in inputs.values())
    if before != now:
        raise InputError(f"--resume: the input files differ from those of {folder} "
                         "(sha256 fingerprints in its vidcli.json); resume with the same data")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Checkpointer:
    """Saves and restores checkpoints for one run (call on every process).

    Model weights are not part of accelerate's state here: the recipe writes them in
    the library's own format through ``save_weights``, and on resume builds the model
    from the checkpoint folder. Both hooks below keep accelerate from writing or
    reading a second copy.
    """

    def __init__(self, accelerator: "Accelerator", output_dir: Path, info: RunInfo) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.info = info
        accelerator.register_save_state_pre_hook(lambda models, weights, out: weights.clear())
        accelerator.register_load_state_pre_hook(lambda models, inp: models.clear())

    def save(self, step: int, *, save_weights: Callable[[Path], None], scheduler, micro_batches: int,
             metrics: dict, final: bool = False, order: "DataOrder | None" = None,
             summary: dict | None = None) -> Path:
        """Write a checkpoint for ``step``; ``final`` writes it into the output folder itself.

        ``save_weights(folder)`` runs on the main process only. ``order`` records the
        data position in global terms, so the run can resume on another process count.
        ``summary`` (:meth:`RunMonitor.summary`) goes into ``vidcli.json``. Returns the folder.
        """
        acc = self.accelerator
        tmp = self.output_dir / f".checkpoint-{step}.partial"
        if acc.is_main_process:
            _remove(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_weights(tmp)
            apply_umask(tmp)
        if not final:  # the final model is not resumed from: no optimizer state beside it
            acc.save_state(str(tmp / TRAINER_STATE))
        acc.wait_for_everyone()  # every process's RNG file is in place before the rename
        if acc.is_main_process:
            if not final:
                data = order.progress(micro_batches) if order is not None else {"micro_batches": micro_batches}
                progress = {"step": step, **data, "num_processes": acc.num_processes,
                            "scheduler": scheduler.state_dict()}
                _write_json(tmp / TRAINER_STATE / PROGRESS, progress)
            _write_json(tmp / RUN_INFO, self._run_info(step, metrics, final, summary))
            target = self._publish_final(tmp) if final else self._publish(tmp, step)
            if not final:
                self._prune()
        else:
            target = self.output_dir if final else self.output_dir / f"checkpoint-{step}"
        acc.wait_for_everyone()
        log.info("saved %s at step %d", target, step)
        return target

    def load(self, folder: Path, scheduler) -> dict:
        """Restore optimizer, RNG and scheduler from ``folder``; return its progress record."""
        state_dir = Path(folder) / TRAINER_STATE
        try:
            progress = json.loads((state_dir / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read trainer state: {exc}", file=str(state_dir / PROGRESS)) from None
        acc = self.accelerator
        from vidcli.filecheck import archive_problem

        rng_file = state_dir / f"{RNG_PREFIX}{acc.process_index}.pkl"
        problem = archive_problem(rng_file) if rng_file.exists() else "missing"
        if problem:
            # accelerate would carry on with whatever random state the process has, silently.
            log.warning("the random-number state %s is %s: training continues with fresh random streams, "
                        "so this run is no longer exactly reproducible", rng_file, problem)
        try:
            acc.load_state(str(state_dir))
        except Exception as exc:  # unpickling and shape errors of a damaged or foreign state
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "weights_only" in reason:  # torch's hint to turn safe loading off: never the fix here
                reason = "the file is damaged or was not written by vidcli"
            raise InputError(f"cannot restore the trainer state ({type(exc).__name__}: {reason}); "
                             f"remove {Path(folder).name} to resume from the checkpoint before it",
                             file=str(state_dir)) from None
        # accelerate restores its micro-batch counter, which decides when accumulate() syncs;
        # a checkpoint lies between optimiser steps, so the counter starts a step, whatever
        # --grad-accum the run had (it changes when the process count does).
        acc.step = 0
        scheduler.load_state_dict(progress["scheduler"])
        saved = progress.get("num_processes", acc.num_processes)
        if saved != acc.num_processes:
            import numpy as np
            from accelerate.utils import set_seed

            log.warning("resuming a %d-process checkpoint on %d processes: per-process random streams "
                        "(dropout) are reseeded, data order and sampling seeds continue exactly",
                        saved, acc.num_processes)
            set_seed(int(np.random.default_rng([progress["step"], acc.process_index]).integers(2**31)))
        return progress

    # ------------------------------------------------------------------ internals

    def _prune(self) -> None:
        """``--save-total-limit N`` (in the run's arguments): keep the newest N checkpoints."""
        limit = self.info.arguments.get("save_total_limit")
        if not limit:
            return
        for old in checkpoints(self.output_dir)[:-limit]:
            _remove(old)
            log.info("removed %s (--save-total-limit %d)", old.name, limit)

    def _run_info(self, step: int, metrics: dict, final: bool, summary: dict | None = None) -> dict:
        return {
            "command": self.info.command,
            "version": __version__,
            "arguments": safe_arguments(self.info.arguments),
            "inputs": self.info.inputs,
            "step": step,
            "final": final,
            "metrics": metrics,
            **({"summary": summary} if summary is not None else {}),
            **self.info.extra,
        }

    def _publish(self, tmp: Path, step: int) -> Path:
        target = self.output_dir / f"checkpoint-{step}"
        if target.exists():  # a rerun of the same step after resume: the new one wins
            _remove(target)
        os.replace(tmp, target)
        return target

    def _publish_final(self, tmp: Path) -> Path:
        # Without vidcli.json the folder is not a checkpoint while its files are replaced.
        marker = self.output_dir / RUN_INFO
        marker.unlink(missing_ok=True)
        for entry in sorted(tmp.iterdir()):
            if entry.name == RUN_INFO:
                continue
            dest = self.output_dir / entry.name
            _remove(dest)
            os.replace(entry, dest)
        os.replace(tmp / RUN_INFO, marker)
        tmp.rmdir()
        return self.output_dir


def apply_umask(folder: Path) -> None:
    """Give every file under ``folder`` the mode the process umask allows (``0666 & ~umask``),
    as ``open`` would: some writers (safetensors, ``tempfile``) create files owner-only."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~mask)


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
