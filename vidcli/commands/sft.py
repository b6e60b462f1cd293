"""``vidcli sft``: fine-tune the instruction interpreter on CoT records (ReaDe stage 1)."""
from __future__ import annotations

import click

from vidcli.commands.common import reports_errors
from vidcli.commands.training import (
    interpreter_fields, interpreter_options, lora_settings, plan_options, print_plan, require_cuda_for_qlora,
    run_config, run_options,
)

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
@run_options(lr=1e-5, schedule="cosine", warmup_steps=200, weight_decay=0.01, save_every=500, batch_size=6,
             grad_accum=2, lr_help="Peak AdamW learning rate.",
             seed_help="Seeds data order, instruction dropout and new weights.")
@click.option("--instruction-dropout", type=click.FloatRange(0, 1), default=0.4, show_default=True,
              help="Probability that an example's instruction is replaced by an empty one (stage cot; records "
                   "with conditions). The target is then make-cot's cot.no_instruction.target, which never "
                   "quotes the request; older records without it drop their step 1 (the intent, which quotes "
                   "it) rather than keep it, though steps 3-4 may still mention the text; a target without "
                   "make-cot's step labels keeps its instruction.")
@interpreter_options(dense_prompt_tokens=1024)
@plan_options(interpreter=True)
@reports_errors
def command(inputs, model, output, stage, finetune, instruction_dropout, quiet, verbose, **opts):
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
    from vidcli.train.sft import SFTConfig, run_sft

    setup_logging(verbose, quiet)
    if stage == "camera" and finetune != "full":
        raise click.UsageError("--stage camera trains only the camera encoder; leave --finetune at full")
    if not opts["plan"]:
        require_cuda_for_qlora(finetune)
    config = SFTConfig(
        model=model, inputs=list(inputs), run=run_config(output, opts), stage=stage, finetune=finetune,
        lora=lora_settings(opts), instruction_dropout=instruction_dropout, log_every=opts["log_every"],
        arguments=dict(click.get_current_context().params), **interpreter_fields(opts),
    )
    if not print_plan("sft", config, opts):
        run_sft(config)
