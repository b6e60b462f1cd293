"""``vidcli sft``: fine-tune the instruction interpreter on CoT records (ReaDe stage 1)."""
from __future__ import annotations

import click

from vidcli.commands.common import reports_errors

EXAMPLES = """\b
Examples:
  # camera encoder first (everything else frozen), then CoT SFT from that checkpoint
  vidcli sft --stage camera --model Qwen/Qwen2.5-Omni-7B camera-captions.jsonl -o runs/camera
  vidcli sft --model runs/camera cot.jsonl -o runs/sft
  # LoRA on one GPU, logging to TensorBoard; continue after a crash with --resume
  vidcli sft --finetune lora --model Qwen/Qwen2.5-VL-7B-Instruct --report-to tensorboard \\
      cot.jsonl -o runs/sft-lora
  vidcli sft --finetune lora --model Qwen/Qwen2.5-VL-7B-Instruct --resume cot.jsonl -o runs/sft-lora
  # many GPUs with your accelerate config (DDP, FSDP or DeepSpeed)
  accelerate launch -m vidcli sft --model Qwen/Qwen2.5-Omni-7B cot.jsonl -o runs/sft
"""


@click.command("sft", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PATH",
              help="Hugging Face image-text-to-text model (folder or id), or a vidcli checkpoint.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoint-STEP/ folders, and the final model in the folder itself.")
@click.option("--stage", type=click.Choice(["cot", "camera"]), default="cot", show_default=True,
              help="cot: learn cot.target; camera: pre-train only the camera encoder on camera-to-text records.")
@click.option("--finetune", type=click.Choice(["full", "lora", "qlora"]), default="full", show_default=True,
              help="Which weights train; qlora (4-bit base + LoRA) needs a CUDA GPU.")
@click.option("--resume", is_flag=True,
              help="Continue exactly from the latest complete checkpoint in --output (same inputs and flags; "
                   "full weights come from the checkpoint, adapters are put back on --model).")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True, help="Passes over the records.")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Optimiser steps to run (overrides --epochs).")
@click.option("--save-every", type=click.IntRange(0), default=500, show_default=True,
              help="Steps between checkpoints (0: only the final model).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seeds data order, instruction dropout and new weights.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-5, show_default=True,
              help="Peak AdamW learning rate.")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="After the linear warm-up: cosine decay towards 0, or constant.")
@click.option("--warmup-steps", type=click.IntRange(0), default=200, show_default=True,
              help="Steps of linear warm-up to the peak rate.")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.01, show_default=True,
              help="AdamW decay of weight matrices (not biases or norms).")
@click.option("--max-grad-norm", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Gradient clipping norm (0: off).")
@click.option("--batch-size", type=click.IntRange(1), default=6, show_default=True, help="Per device.")
@click.option("--grad-accum", type=click.IntRange(1), default=2, show_default=True,
              help="Micro-batches per optimiser step.")
@click.option("--mixed-precision", type=click.Choice(["auto", "bf16", "fp16", "no"]), default="auto",
              show_default=True, help="auto: bf16 where the GPU has it (or your accelerate config's choice).")
@click.option("--instruction-dropout", type=click.FloatRange(0, 1), default=0.4, show_default=True,
              help="Probability that an example's instruction is replaced by an empty one (stage cot).")
@click.option("--max-prompt-tokens", type=click.IntRange(1), default=1024, show_default=True,
              help="A longer prompt stops the run, naming the record.")
@click.option("--max-prompt-tokens-dense", type=click.IntRange(1), default=2048, show_default=True,
              help="Prompt limit for records with a depth or pose condition.")
@click.option("--video-frames", type=click.IntRange(1), default=16, show_default=True,
              help="Frames sampled from each video condition.")
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in backward to save memory.")
@click.option("--lora-rank", type=click.IntRange(1), default=16, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lora-dropout", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--lora-targets", default=None, metavar="REGEX",
              help="Module names that get adapters [default: the language model's attention and MLP projections].")
@click.option("--report-to", type=click.Choice(["none", "tensorboard", "wandb"]), default="none",
              show_default=True, help="Experiment tracker (through accelerate); logs in OUTPUT/logs.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True, help="Steps between log lines.")
@click.option("--media-root", type=click.Path(file_okay=False), default=None,
              help="Resolve relative media paths against this folder instead of each JSONL file's folder.")
@click.option("--allow-escape", is_flag=True, help="Allow relative media paths that leave the media folder with '..'.")
@click.option("--trust-remote-code", is_flag=True, help="Run model code shipped with the checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no info logs.")
@click.option("-v", "--verbose", count=True, help="More logs on stderr (-vv for debug).")
@reports_errors
def command(inputs, model, output, stage, finetune, resume, epochs, max_steps, save_every, seed, lr, schedule,
            warmup_steps, weight_decay, max_grad_norm, batch_size, grad_accum, mixed_precision,
            instruction_dropout, max_prompt_tokens, max_prompt_tokens_dense, video_frames,
            gradient_checkpointing, lora_rank, lora_alpha, lora_dropout, lora_targets, report_to, log_every,
            media_root, allow_escape, trust_remote_code, quiet, verbose):
    """Supervised fine-tuning of the interpreter on make-cot records (or camera-to-text pairs).

    \b
    --stage cot     records from `vidcli make-cot`: the prompt is built from 'instruction'
                    and 'conditions', the loss is on 'cot.target' (assistant turn only).
    --stage camera  records {id, conditions: [{type: camera, path}], target | caption};
                    only the camera encoder trains (a fresh one when the model has none).

    Writes OUTPUT/checkpoint-STEP/ every --save-every steps and the final model into
    OUTPUT itself: weights loadable with transformers' or peft's from_pretrained,
    vidcli.json (arguments, input sha256, step, metrics) and trainer_state/ for --resume.
    Defaults follow the paper: AdamW lr 1e-5, cosine, 200 warm-up steps, weight decay
    0.01, batch 6 per device, 2 accumulation steps, bf16 where available.
    """
    from vidcli.log import setup_logging
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.sft import LoraSettings, SFTConfig, run_sft

    setup_logging(verbose, quiet)
    if stage == "camera" and finetune != "full":
        raise click.UsageError("--stage camera trains only the camera encoder; leave --finetune at full")
    if finetune == "qlora":
        import torch

        if not torch.cuda.is_available():
            raise click.UsageError("--finetune qlora needs a CUDA GPU (bitsandbytes 4-bit); "
                                   "use --finetune lora or full here")
    optim = OptimConfig(lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
                        max_grad_norm=max_grad_norm or None)
    run = RunConfig(output_dir=output, seed=seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                    grad_accum=grad_accum, save_every=save_every, mixed_precision=mixed_precision,
                    report_to=report_to, resume=resume, optim=optim)
    lora = LoraSettings(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout)
    if lora_targets:
        lora.targets = lora_targets
    config = SFTConfig(
        model=model, inputs=list(inputs), run=run, stage=stage, finetune=finetune, lora=lora,
        instruction_dropout=instruction_dropout, max_prompt_tokens=max_prompt_tokens,
        max_prompt_tokens_dense=max_prompt_tokens_dense, video_frames=video_frames,
        gradient_checkpointing=gradient_checkpointing, media_root=media_root, allow_escape=allow_escape,
        trust_remote_code=trust_remote_code, log_every=log_every,
        arguments=dict(click.get_current_context().params),
    )
    run_sft(config)
