"""``vidcli revise-tune``: train a video editor with flow matching and a frozen VLM critic (ReViSE)."""
from __future__ import annotations

import click

from vidcli.commands.common import LocalModel, reports_errors
from vidcli.commands.training import build_config, log_options, plan_options, print_plan
from vidcli.settings import options_from
from vidcli.train.dit_config import ReviseConfig

EXAMPLES = """\b
Examples:
  # triplets from the mining stage, then the paper's USO objective on a Wan DiT
  vidcli mine-triplets --mode rave ... > triplets.jsonl
  vidcli revise-tune --model Wan2.1-T2V-1.3B-Diffusers --vlm Qwen/Qwen2.5-VL-7B-Instruct \\
      --vlm-dtype bf16 triplets.jsonl -o runs/revise
  # the paper's ablations: flow matching only, reward-weighted regression, other lambda
  vidcli revise-tune --objective sft ... ;  vidcli revise-tune --objective rwr ...
  vidcli revise-tune --reason-weight 0.5 ...
  # the critic's verdict as its first word (one forward pass, no reasoning generated first)
  vidcli revise-tune --critic-reasoning none ...
  # uniform t (gating then triggers on ~50% of steps instead of ~25%)
  vidcli revise-tune --t-shift 1 ...
  # many GPUs; continue after a crash with --resume
  accelerate launch -m vidcli revise-tune --model ... --vlm ... triplets.jsonl -o runs/revise --resume
"""


@click.command("revise-tune", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PIPELINE_DIR", help="WanPipeline folder whose DiT becomes the editor.")
@click.option("--vlm", required=True, type=LocalModel(spec=False), metavar="[hf:]PATH",
              help="Frozen Qwen2-VL / Qwen2.5-VL (folder or hub id): the critic.")
@options_from(ReviseConfig)
@log_options
@plan_options()
@reports_errors
def command(inputs, model, vlm, quiet, verbose, **opts):
    """ReViSE: tune a Wan DiT to edit videos, judged by a frozen VLM critic.

    \b
    INPUT records are triplets: 'instruction', 'source' and 'target' as
    {video, start, end} (seconds), and 'subset' (icvg: the critic does not ask for the
    source's content to be preserved). The source clip's latents sit beside the noisy
    target latents (clean, timestep 0); the loss is on the target part. When
    t <= --sigma-max the one-step estimate x0-hat is decoded and the critic's
    Yes-minus-No logit at its verdict (after a short reasoning of its own, see
    --critic-reasoning), against its score for (source, source), gives
    L_reason = -log sigmoid(D - D0).
    VAE, text encoder and critic stay frozen.

    Writes OUTPUT/steps.jsonl (per step and triplet: t, gated, l_fm, delta, delta0,
    l_reason, critique), OUTPUT/checkpoint-STEP/ and the final pipeline folder in
    OUTPUT (tuned transformer/ or pytorch_lora_weights.safetensors; the rest linked to
    --model), with vidcli.json and trainer_state/ for --resume.
    """
    from vidcli.log import setup_logging
    from vidcli.train.revise import run_revise

    setup_logging(verbose, quiet)
    config = build_config(ReviseConfig, model=model, vlm=vlm, inputs=list(inputs))
    if not print_plan("revise-tune", config, opts):
        run_revise(config)
