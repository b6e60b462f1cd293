"""``vidcli drf-tune``: fine-tune a video DiT on a frozen VLM's differentiable reward (Diffusion-DRF)."""
from __future__ import annotations

import click

from vidcli.commands.common import LocalModel, reports_errors
from vidcli.commands.training import build_config, log_options, plan_options, print_plan
from vidcli.settings import options_from
from vidcli.train.dit_config import DRFConfig

EXAMPLES = """\b
Examples:
  # questions and reference answers first, then tune Wan2.1 with the rich reward
  vidcli decompose --schema drf --llm openai:gpt-4o --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct \\
      --keep-consistent captions.jsonl > drf.jsonl
  vidcli drf-tune --model Wan2.1-T2V-1.3B-Diffusers --vlm Qwen/Qwen2.5-VL-7B-Instruct \\
      --vlm-dtype bf16 --gradient-checkpointing drf.jsonl -o runs/drf
  # ablations: Vanilla-DRF, binary verdicts only, TA questions only, LoRA
  vidcli drf-tune --reward vanilla ... ;  vidcli drf-tune --reward binary ...
  vidcli drf-tune --dims TA --finetune lora ...
  # many GPUs (gradients averaged over processes); continue after a crash with --resume
  accelerate launch -m vidcli drf-tune --model ... --vlm ... drf.jsonl -o runs/drf --resume
\b
Loading the result:
  pipe = WanPipeline.from_pretrained("runs/drf")            # --finetune full
  pipe.load_lora_weights("runs/drf")                        # and this too for --finetune lora
"""


@click.command("drf-tune", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PIPELINE_DIR",
              help="diffusers pipeline folder: WanPipeline (Wan2.1 T2V) or CogVideoXPipeline.")
@click.option("--vlm", required=True, type=LocalModel(spec=False), metavar="[hf:]PATH",
              help="Frozen Qwen2-VL / Qwen2.5-VL (folder or hub id) that scores the videos.")
@options_from(DRFConfig)
@log_options
@plan_options()
@reports_errors
def command(inputs, model, vlm, quiet, verbose, **opts):
    """Diffusion-DRF: tune the DiT so a frozen VLM gives its videos the reference answers.

    \b
    INPUT records come from `vidcli decompose --schema drf`: 'caption' (the prompt),
    'questions' ({dim, key, question, reference}) and 'video' (the caption-matched real
    video that Phy and VQ questions compare against). Each step generates one video per
    process, decodes --frames-vlm frames, and back-propagates the VLM loss through the VAE
    and the last --k-grad denoising steps. VAE, text encoder and VLM stay frozen.

    Writes OUTPUT/rewards.jsonl (per step and record: each query's log-likelihood),
    OUTPUT/checkpoint-STEP/ and the final pipeline folder in OUTPUT (tuned transformer/
    or pytorch_lora_weights.safetensors; other components linked to --model),
    vidcli.json and trainer_state/ for --resume.
    """
    from vidcli.log import setup_logging
    from vidcli.train.drf import run_drf

    setup_logging(verbose, quiet)
    config = build_config(DRFConfig, model=model, vlm=vlm, inputs=list(inputs))
    if not print_plan("drf-tune", config, opts):
        run_drf(config)
