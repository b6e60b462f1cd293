"""The trainers' settings, each declared once: field, default, help and command-line form
(:mod:`vidcli.settings`) and the checks (``__post_init__``).

- :class:`RunConfig` (with :class:`~vidcli.train.optim.OptimConfig`), here: how long a run
  lasts, how it is batched, saved, logged and seeded; generic defaults.
- :mod:`vidcli.train.interpreter_config`: :class:`~vidcli.train.interpreter_config.InterpreterTuning`
  and the ``sft`` and ``grpo`` configs; :mod:`vidcli.train.dit_config`:
  :class:`~vidcli.train.dit_config.DitTuning` and the ``drf-tune`` and ``revise-tune`` configs.
  Each command's config has its method's run (``SFTRun``, ...), which retunes the generic
  defaults to the paper's (SFT: cosine from 1e-5; GRPO: constant 2.5e-6; ...).

The command modules generate their options from these classes; the recipes read them.
None of these modules imports torch or numpy, so ``vidcli sft --help`` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from vidcli.settings import group, setting
from vidcli.train.optim import OptimConfig

MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
TRACKERS = ("tensorboard", "wandb")


def parse_report_to(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``none``, or trackers joined by commas (``tensorboard,wandb``), de-duplicated in order."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return "none"
    unknown = [name for name in names if name not in TRACKERS]
    if not names or unknown:
        raise click.BadParameter(f"give none, or one or more of {', '.join(TRACKERS)} joined by commas"
                                 + (f" (not {', '.join(unknown)})" if unknown else ""))
    return ",".join(dict.fromkeys(names))


@dataclass
class RunConfig:
    """How long a run lasts, how it is batched, saved, logged and seeded.

    These defaults are generic; each command's config gives its method's own (a subclass
    that :func:`~vidcli.settings.retune` s them, e.g. :class:`~vidcli.train.sft.SFTRun`).
    """

    output_dir: Path = setting(flag=("-o", "--output"), name="output", type=click.Path(file_okay=False),
                               help="Run folder: checkpoint-STEP/ folders, and the final model in the folder itself.")
    resume: bool = setting(False, help="Continue exactly from the latest complete checkpoint in --output (same "
                                       "inputs and flags).")
    epochs: int = setting(1, type=click.IntRange(1), help="Passes over the records.")
    max_steps: int | None = setting(None, type=click.IntRange(1),  # overrides epochs when set
                                    help="Optimiser steps to run (overrides --epochs).")
    save_every: int = setting(500, type=click.IntRange(0),  # 0 = only the final model
                              help="Steps between checkpoints (0: only the final model).")
    # Read by the Checkpointer from the run's saved arguments (a resumed run may change it).
    save_total_limit: int | None = setting(None, type=click.IntRange(1),
                                           help="Keep only the newest N checkpoint-STEP/ folders (older ones are "
                                                "deleted) [default: keep all].")
    seed: int = setting(0, type=click.IntRange(0), help="Seeds data order, sampling and new weights.")
    optim: OptimConfig = group(OptimConfig)
    batch_size: int = setting(6, type=click.IntRange(1), help="Per device.")  # per device (process)
    grad_accum: int = setting(2, type=click.IntRange(1), help="Micro-batches per optimiser step.")
    mixed_precision: str = setting("auto", type=click.Choice(MIXED_PRECISION),
                                   help="auto: bf16 where the GPU has it (or your accelerate config's choice).")
    # "none", or trackers joined by commas: "tensorboard", "wandb", "tensorboard,wandb"
    report_to: str = setting("none", callback=parse_report_to, metavar="none|tensorboard|wandb[,...]",
                             help="Experiment trackers, comma-separated (through accelerate; pip install "
                                  "'vidcli[tracking]'); logs in OUTPUT/logs. A resumed run continues its "
                                  "TensorBoard history and W&B run.")
    log_every: int = setting(10, type=click.IntRange(1),
                             help="Steps between log lines (loss, s/step, samples/s, time left, peak memory).")
    # The media a trainer sends to the trackers: every log_samples_every steps (0: never), log_samples of them.
    log_samples_every: int = setting(100, type=click.IntRange(0),
                                     help="Steps between the samples sent to the trackers (0: never; only with "
                                          "--report-to).")
    log_samples: int = setting(2, type=click.IntRange(1), help="How many samples.")

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
