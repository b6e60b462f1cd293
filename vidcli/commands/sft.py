"""``vidcli sft``: fine-tune the instruction interpreter on CoT records (ReaDe stage 1)."""
from __future__ import annotations

import click

from vidcli.commands.common import reports_errors
from vidcli.commands.training import build_config, log_options, plan_options, print_plan, require_cuda_for_qlora
from vidcli.settings import options_from
from vidcli.train.interpreter_config import SFTConfig

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
@options_from(SFTConfig)
@log_options
@plan_options(interpreter=True)
@reports_errors
def command(inputs, model, quiet, verbose, **opts):
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
    0.01, batch 6 per device, 2 accumulation steps, bf16 where available, prompts up
    to 1024 tokens for every condition type (measured before the first step).
    """
    from vidcli.log import setup_logging
    from vidcli.train.sft import run_sft

    setup_logging(verbose, quiet)
    config = build_config(SFTConfig, model=model, inputs=list(inputs))
    if not opts["plan"]:
        require_cuda_for_qlora(config.finetune)
    if not print_plan("sft", config, opts):
        run_sft(config)
