"""Options shared by the training commands (sft, grpo, drf-tune), and their configs.

Each command states only its own defaults (the papers differ: SFT runs a cosine schedule
from 1e-5, GRPO a constant 2.5e-6); the option names, help and checks are written once.
"""
from __future__ import annotations

from typing import Any, Callable

import click


def _apply(func: Callable, decorators: list[Callable]) -> Callable:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def run_options(*, lr: float, schedule: str, warmup_steps: int, weight_decay: float, save_every: int,
                batch_size: int | None = None, grad_accum: int | None = None, lr_help: str = "AdamW learning rate.",
                seed_help: str = "Seeds data order, sampling and new weights.",
                batch_help: str = "Per device.") -> Callable:
    """--resume, --epochs, --max-steps, --save-every, --save-total-limit, --seed, the optimiser, batch and
    tracker options (--save-total-limit reaches the Checkpointer through the run's arguments).

    With ``batch_size=None`` the batch is fixed by the method (one sample) and the batch,
    accumulation and mixed-precision options are left out.
    """
    options = [
        click.option("--resume", is_flag=True,
                     help="Continue exactly from the latest complete checkpoint in --output (same inputs and flags)."),
        click.option("--epochs", type=click.IntRange(1), default=1, show_default=True, help="Passes over the records."),
        click.option("--max-steps", type=click.IntRange(1), default=None,
                     help="Optimiser steps to run (overrides --epochs)."),
        click.option("--save-every", type=click.IntRange(0), default=save_every, show_default=True,
                     help="Steps between checkpoints (0: only the final model)."),
        click.option("--save-total-limit", type=click.IntRange(1), default=None,
                     help="Keep only the newest N checkpoint-STEP/ folders (older ones are deleted) "
                          "[default: keep all]."),
        click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help=seed_help),
        click.option("--lr", type=click.FloatRange(0, min_open=True), default=lr, show_default=True, help=lr_help),
        click.option("--schedule", type=click.Choice(["cosine", "constant"]), default=schedule, show_default=True,
                     help="After the linear warm-up: cosine decay towards 0, or constant."),
        click.option("--warmup-steps", type=click.IntRange(0), default=warmup_steps, show_default=True,
                     help="Steps of linear warm-up to the peak rate."),
        click.option("--weight-decay", type=click.FloatRange(0), default=weight_decay, show_default=True,
                     help="AdamW decay of weight matrices (not biases or norms)."),
        click.option("--max-grad-norm", type=click.FloatRange(0), default=1.0, show_default=True,
                     help="Gradient clipping norm (0: off)."),
    ]
    if batch_size is not None:
        options += [
            click.option("--batch-size", type=click.IntRange(1), default=batch_size, show_default=True,
                         help=batch_help),
            click.option("--grad-accum", type=click.IntRange(1), default=grad_accum, show_default=True,
                         help="Micro-batches per optimiser step."),
            click.option("--mixed-precision", type=click.Choice(["auto", "bf16", "fp16", "no"]), default="auto",
                         show_default=True,
                         help="auto: bf16 where the GPU has it (or your accelerate config's choice)."),
        ]
    options += [
        click.option("--report-to", type=click.Choice(["none", "tensorboard", "wandb"]), default="none",
                     show_default=True, help="Experiment tracker (through accelerate); logs in OUTPUT/logs."),
        click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
                     help="Steps between log lines."),
        click.option("-q", "--quiet", is_flag=True, help="No info logs."),
        click.option("-v", "--verbose", count=True, help="More logs on stderr (-vv for debug)."),
    ]
    return lambda func: _apply(func, options)


def interpreter_options(func: Callable) -> Callable:
    """Prompt limits, media, LoRA and checkpointing options of the interpreter trainers."""
    return _apply(func, [
        click.option("--max-prompt-tokens", type=click.IntRange(1), default=1024, show_default=True,
                     help="A longer prompt stops the run, naming the record."),
        click.option("--max-prompt-tokens-dense", type=click.IntRange(1), default=2048, show_default=True,
                     help="Prompt limit for records with a depth or pose condition."),
        click.option("--video-frames", type=click.IntRange(1), default=16, show_default=True,
                     help="Frames sampled from each video condition."),
        click.option("--gradient-checkpointing", is_flag=True,
                     help="Recompute activations in backward to save memory."),
        click.option("--lora-rank", type=click.IntRange(1), default=16, show_default=True),
        click.option("--lora-alpha", type=click.IntRange(1), default=32, show_default=True),
        click.option("--lora-dropout", type=click.FloatRange(0, 1), default=0.05, show_default=True),
        click.option("--lora-targets", default=None, metavar="REGEX",
                     help="Module names that get adapters [default: the language model's attention and MLP "
                          "projections]."),
        click.option("--media-root", type=click.Path(file_okay=False), default=None,
                     help="Resolve relative media paths against this folder instead of each JSONL file's folder."),
        click.option("--allow-escape", is_flag=True,
                     help="Allow relative media paths that leave the media folder with '..'."),
        click.option("--trust-remote-code", is_flag=True, help="Run model code shipped with the checkpoint."),
    ])


def run_config(output: str, opts: dict[str, Any], *, batch_size: int = 1, grad_accum: int = 1,
               mixed_precision: str = "auto"):
    """The RunConfig (with its OptimConfig) from the parsed ``run_options`` values.

    The keyword values apply to commands whose run options leave the batch options out.
    """
    from vidcli.train.core import OptimConfig, RunConfig

    optim = OptimConfig(lr=opts["lr"], weight_decay=opts["weight_decay"], schedule=opts["schedule"],
                        warmup_steps=opts["warmup_steps"], max_grad_norm=opts["max_grad_norm"] or None)
    return RunConfig(output_dir=output, seed=opts["seed"], epochs=opts["epochs"], max_steps=opts["max_steps"],
                     batch_size=opts.get("batch_size", batch_size), grad_accum=opts.get("grad_accum", grad_accum),
                     save_every=opts["save_every"], mixed_precision=opts.get("mixed_precision", mixed_precision),
                     report_to=opts["report_to"], resume=opts["resume"], optim=optim)


def lora_settings(opts: dict[str, Any]):
    """LoraSettings from the parsed ``interpreter_options`` values."""
    from vidcli.train.sft import LoraSettings

    lora = LoraSettings(rank=opts["lora_rank"], alpha=opts["lora_alpha"], dropout=opts["lora_dropout"])
    if opts["lora_targets"]:
        lora.targets = opts["lora_targets"]
    return lora


def interpreter_fields(opts: dict[str, Any]) -> dict[str, Any]:
    """The config fields every interpreter trainer takes from ``interpreter_options``."""
    keys = ("max_prompt_tokens", "max_prompt_tokens_dense", "video_frames", "gradient_checkpointing",
            "media_root", "allow_escape", "trust_remote_code")
    return {key: opts[key] for key in keys}


def require_cuda_for_qlora(finetune: str) -> None:
    if finetune == "qlora":
        import torch

        if not torch.cuda.is_available():
            raise click.UsageError("--finetune qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora or full here")
