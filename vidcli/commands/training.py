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


def parse_report_to(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``none``, or trackers joined by commas (``tensorboard,wandb``), de-duplicated in order."""
    from vidcli.train.core import TRACKERS

    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return "none"
    unknown = [name for name in names if name not in TRACKERS]
    if not names or unknown:
        raise click.BadParameter(f"give none, or one or more of {', '.join(TRACKERS)} joined by commas"
                                 + (f" (not {', '.join(unknown)})" if unknown else ""))
    return ",".join(dict.fromkeys(names))


def run_options(*, lr: float, schedule: str, warmup_steps: int, weight_decay: float, save_every: int,
                batch_size: int | None = None, grad_accum: int | None = None, lr_help: str = "AdamW learning rate.",
                seed_help: str = "Seeds data order, sampling and new weights.",
                batch_help: str = "Per device.", samples: tuple[str, str, int] | None = None) -> Callable:
    """--resume, --epochs, --max-steps, --save-every, --save-total-limit, --seed, the optimiser, batch and
    tracker options (--save-total-limit reaches the Checkpointer through the run's arguments).

    With ``batch_size=None`` the per-device batch is fixed by the method (one sample) and
    ``--batch-size`` is left out; ``grad_accum=None`` leaves ``--grad-accum`` out too.
    ``samples`` — (what the trackers get, what ``--log-samples`` counts, its default) — adds
    ``--log-samples-every`` and ``--log-samples`` for a trainer that sends media to the trackers.
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
        click.option("--optimizer", type=click.Choice(["adamw", "adamw8bit"]), default="adamw", show_default=True,
                     help="adamw (fused on CUDA) or bitsandbytes' 8-bit AdamW (CUDA; optimiser state 2 bytes per "
                          "trained parameter instead of 8)."),
    ]
    if batch_size is not None:
        options.append(click.option("--batch-size", type=click.IntRange(1), default=batch_size, show_default=True,
                                    help=batch_help))
    if grad_accum is not None:
        options.append(click.option("--grad-accum", type=click.IntRange(1), default=grad_accum, show_default=True,
                                    help="Micro-batches per optimiser step."))
    options.append(click.option("--mixed-precision", type=click.Choice(["auto", "bf16", "fp16", "no"]),
                                default="auto", show_default=True,
                                help="auto: bf16 where the GPU has it (or your accelerate config's choice)."))
    options += [
        click.option("--report-to", default="none", show_default=True, callback=parse_report_to,
                     metavar="none|tensorboard|wandb[,...]",
                     help="Experiment trackers, comma-separated (through accelerate; pip install 'vidcli[tracking]'); "
                          "logs in OUTPUT/logs. A resumed run continues its TensorBoard history and W&B run."),
        click.option("--log-every", type=click.IntRange(1), default=10, show_default=True,
                     help="Steps between log lines (loss, s/step, samples/s, time left, peak memory)."),
    ]
    if samples is not None:
        what, counted, count = samples
        options += [
            click.option("--log-samples-every", type=click.IntRange(0), default=100, show_default=True,
                         help=f"Steps between the {what} sent to the trackers (0: never; only with --report-to)."),
            click.option("--log-samples", type=click.IntRange(1), default=count, show_default=True,
                         help=f"How many {counted}."),
        ]
    options += [
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no info logs."),
        click.option("-v", "--verbose", count=True, help="More logs on stderr (-vv for debug)."),
    ]
    return lambda func: _apply(func, options)


def interpreter_options(*, dense_prompt_tokens: int) -> Callable:
    """Prompt limits, media, LoRA and checkpointing options of the interpreter trainers.

    ``dense_prompt_tokens`` is the command's prompt limit for depth and pose records
    (the paper: 1024 in stage 1, 2048 in stage 2).
    """
    options = [
        click.option("--max-prompt-tokens", type=click.IntRange(1), default=1024, show_default=True,
                     help="Prompt limit in tokens. Every prompt is measured before the first step; the longer "
                          "ones are all listed and the run stops (or see --drop-long-prompts)."),
        click.option("--max-prompt-tokens-dense", type=click.IntRange(1), default=dense_prompt_tokens,
                     show_default=True, help="Prompt limit for records with a depth or pose condition."),
        click.option("--drop-long-prompts", is_flag=True,
                     help="Leave out the records whose prompt is over its limit (each is named on stderr) "
                          "instead of stopping."),
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
    ]
    return lambda func: _apply(func, options)


def run_config(output: str, opts: dict[str, Any], *, batch_size: int = 1, grad_accum: int = 1,
               mixed_precision: str = "auto"):
    """The RunConfig (with its OptimConfig) from the parsed ``run_options`` values.

    The keyword values apply to commands whose run options leave the batch options out.
    """
    from vidcli.train.core import OptimConfig, RunConfig

    optim = OptimConfig(lr=opts["lr"], weight_decay=opts["weight_decay"], schedule=opts["schedule"],
                        warmup_steps=opts["warmup_steps"], max_grad_norm=opts["max_grad_norm"] or None,
                        optimizer=opts["optimizer"])
    return RunConfig(output_dir=output, seed=opts["seed"], epochs=opts["epochs"], max_steps=opts["max_steps"],
                     batch_size=opts.get("batch_size", batch_size), grad_accum=opts.get("grad_accum", grad_accum),
                     save_every=opts["save_every"], mixed_precision=opts.get("mixed_precision", mixed_precision),
                     report_to=opts["report_to"], log_samples_every=opts.get("log_samples_every", 0),
                     log_samples=opts.get("log_samples", 1), resume=opts["resume"], optim=optim)


def lora_settings(opts: dict[str, Any]):
    """LoraSettings from the parsed ``interpreter_options`` values."""
    from vidcli.train.interpreter_tuning import LoraSettings

    lora = LoraSettings(rank=opts["lora_rank"], alpha=opts["lora_alpha"], dropout=opts["lora_dropout"])
    if opts["lora_targets"]:
        lora.targets = opts["lora_targets"]
    return lora


def interpreter_fields(opts: dict[str, Any]) -> dict[str, Any]:
    """The config fields every interpreter trainer takes from ``interpreter_options``."""
    keys = ("max_prompt_tokens", "max_prompt_tokens_dense", "drop_long_prompts", "video_frames",
            "gradient_checkpointing", "media_root", "allow_escape", "trust_remote_code")
    return {key: opts[key] for key in keys}


def require_cuda_for_qlora(finetune: str) -> None:
    if finetune == "qlora":
        import torch

        if not torch.cuda.is_available():
            raise click.UsageError("--finetune qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora or full here")


def dit_options(func: Callable) -> Callable:
    """Precision and memory options of the DiT trainers (drf-tune, revise-tune)."""
    dtypes = click.Choice(["auto", "float32", "bf16"])
    return _apply(func, [
        click.option("--gradient-checkpointing", is_flag=True, help="Recompute the DiT's block activations in backward."),
        click.option("--decode-checkpointing/--no-decode-checkpointing", default=True, show_default=True,
                     help="Keep only the latents of the differentiable VAE decode until backward, then decode "
                          "again frame by frame."),
        click.option("--vlm-dtype", type=dtypes, default="auto", show_default=True,
                     help="Precision of the frozen VLM (auto: the compute dtype, bf16 under bf16 mixed precision)."),
        click.option("--text-encoder-dtype", type=dtypes, default="auto", show_default=True,
                     help="Precision of the frozen text encoder (auto: as --vlm-dtype)."),
        click.option("--offload-text-encoder", is_flag=True,
                     help="Keep the text encoder in CPU memory, on the GPU only while it encodes a step's prompts."),
        click.option("--vae-dtype", type=click.Choice(["float32", "bf16"]), default="float32", show_default=True,
                     help="Precision of the frozen VAE (float32 as Wan advises; bf16 halves the memory of the "
                          "differentiable decode)."),
        click.option("--vlm-checkpointing", is_flag=True,
                     help="Recompute the frozen VLM's layers in backward: a query keeps only each layer's input."),
    ])


def dit_fields(opts: dict[str, Any]) -> dict[str, Any]:
    """The config fields every DiT trainer takes from ``dit_options``."""
    named = {"bf16": "bfloat16"}
    return {"gradient_checkpointing": opts["gradient_checkpointing"],
            "decode_checkpointing": opts["decode_checkpointing"],
            "vlm_dtype": named.get(opts["vlm_dtype"], opts["vlm_dtype"]),
            "text_encoder_dtype": named.get(opts["text_encoder_dtype"], opts["text_encoder_dtype"]),
            "offload_text_encoder": opts["offload_text_encoder"],
            "vae_dtype": named.get(opts["vae_dtype"], opts["vae_dtype"]),
            "vlm_checkpointing": opts["vlm_checkpointing"]}


def plan_options(*, interpreter: bool = False) -> Callable:
    """``--plan`` and the settings only a plan reads (the GPU budget, processes, sharding, workload)."""
    options = [
        click.option("--plan", is_flag=True,
                      help="Print the run's memory plan per device (weights, gradients, optimiser state, activations "
                           "by phase, peak) and exit: no weights are read (a folder of config files is enough), "
                           "nothing is trained."),
        click.option("--gpu-memory", type=click.FloatRange(0, min_open=True), default=None, metavar="GIB",
                     help="With --plan: the memory of one GPU; the plan lists the measures that bring the peak under it."),
        click.option("--plan-processes", type=click.IntRange(1), default=None, metavar="N",
                     help="With --plan: processes (GPUs) of the run [default: the accelerate config's, else 1]."),
        click.option("--accelerate-config", type=click.Path(dir_okay=False), default=None,
                     help="With --plan: the accelerate config whose DeepSpeed / FSDP sharding applies "
                          "[default: accelerate's default config when there is one]."),
    ]
    if interpreter:
        options += [
            click.option("--plan-visual-tokens", type=click.IntRange(0), default=None, metavar="N",
                         help="With --plan: image/video tokens in each prompt [default: half the prompt limit]."),
            click.option("--plan-target-tokens", type=click.IntRange(1), default=512, show_default=True,
                         metavar="N", help="With --plan (sft): target tokens of each example."),
        ]
    return lambda func: _apply(func, options)


def print_plan(command: str, config: Any, opts: dict[str, Any]) -> bool:
    """With ``--plan``: print the plan of ``config`` and say so (the command then stops)."""
    if not opts.get("plan"):
        return False
    from vidcli.plan import default_workload, plan_run
    from vidcli.plan.static import read_accelerate_config

    sharding = read_accelerate_config(opts.get("accelerate_config"), opts.get("plan_processes"))
    workload = None
    if command in ("sft", "grpo"):
        work = default_workload(command, config)
        visual = opts.get("plan_visual_tokens")
        target = opts.get("plan_target_tokens") if command == "sft" else work.target_tokens
        workload = type(work)(work.prompt_tokens, work.visual_tokens if visual is None else min(visual, work.prompt_tokens),
                              target)
    plan = plan_run(command, config, sharding=sharding, gpu_memory=opts.get("gpu_memory"), workload=workload)
    click.echo(plan.render())
    return True
