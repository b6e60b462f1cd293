"""``vidcli revise-tune``: train a video editor with flow matching and a frozen VLM critic (ReViSE)."""
from __future__ import annotations

import click

from vidcli.commands.common import LocalModel, reports_errors
from vidcli.commands.training import dit_fields, dit_options, plan_options, print_plan, run_config, run_options

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
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoint-STEP/, steps.jsonl, and the final pipeline in the folder itself.")
@click.option("--objective", type=click.Choice(["sft", "rwr", "uso"]), default="uso", show_default=True,
              help="sft: flow matching only; rwr: P(Yes)·L_FM; uso: L_FM + lambda·L_reason.")
@click.option("--reason-weight", "reason_weight", type=click.FloatRange(0), default=0.25, show_default=True,
              help="lambda: weight of the self-reflective loss.")
@click.option("--sigma-max", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The critic judges x0-hat only when t <= this.")
@click.option("--t-shift", type=click.FloatRange(0, min_open=True), default=3.0, show_default=True,
              help="t = s·u/(1+(s-1)·u), u ~ U(0,1) (Wan's timestep shift; 1: uniform t).")
@click.option("--cfg-drop", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Probability that the instruction is replaced by empty text.")
@click.option("--frames-critic", type=click.IntRange(1), default=8, show_default=True,
              help="F: frames of x0-hat decoded and shown to the critic (uniform over the clip).")
@click.option("--height", type=click.IntRange(16), default=288, show_default=True)
@click.option("--width", type=click.IntRange(16), default=512, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=49, show_default=True,
              help="Frames sampled from each source and target clip (4k+1 for Wan).")
@click.option("--critic-reasoning", type=click.Choice(["first", "none"]), default="first", show_default=True,
              help="first: the critic writes a short reasoning (greedy, no gradient), then its verdict is read "
                   "after it (the paper's order); none: the verdict is the reply's first word (one forward "
                   "instead of a generation and a forward: cheaper).")
@click.option("--critic-tokens", type=click.IntRange(1), default=64, show_default=True,
              help="At most this many tokens of critic reasoning.")
@click.option("--fps", type=click.FloatRange(0, min_open=True), default=None,
              help="Frame rate the critic is told the sampled frames have [default: their real rate, "
                   "--frames-critic over each clip's length].")
@click.option("--finetune", type=click.Choice(["full", "lora"]), default="full", show_default=True,
              help="Train every DiT weight, or LoRA adapters on its attention and feed-forward layers.")
@click.option("--lora-rank", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(1), default=64, show_default=True)
@dit_options
@run_options(lr=3e-6, schedule="constant", warmup_steps=0, weight_decay=1e-4, save_every=500,
             batch_size=1, grad_accum=8, seed_help="Seeds data order, t, noise and instruction dropout.",
             batch_help="Triplets per device and micro-batch (batch = batch-size x grad-accum x processes; "
                        "the paper's 8 = 1 x 8 on one device).",
             samples=("edits of fixed triplets (source | edit, with the critic's delta)",
                      "triplets (the first ones) that are watched", 2))
@click.option("--media-root", type=click.Path(file_okay=False), default=None,
              help="Resolve the triplets' video paths against this folder instead of each JSONL file's folder.")
@click.option("--allow-escape", is_flag=True, help="Allow relative media paths that leave the media folder with '..'.")
@plan_options()
@reports_errors
def command(inputs, model, vlm, output, objective, reason_weight, sigma_max, t_shift, cfg_drop, frames_critic,
            critic_reasoning, critic_tokens, height, width, frames, fps, finetune, lora_rank, lora_alpha, media_root,
            allow_escape, quiet, verbose, **opts):
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
    from vidcli.train.revise import ReviseConfig, run_revise

    setup_logging(verbose, quiet)
    if frames_critic > frames:
        raise click.UsageError(f"--frames-critic {frames_critic} is more than --frames {frames}")
    run = run_config(output, opts)
    config = ReviseConfig(
        model=model, vlm=vlm, inputs=list(inputs), run=run, objective=objective, reason_weight=reason_weight,
        sigma_max=sigma_max, t_shift=t_shift, cfg_drop=cfg_drop, frames_critic=frames_critic,
        critic_reasoning=critic_reasoning, critic_tokens=critic_tokens, height=height,
        width=width, frames=frames, fps=fps, finetune=finetune, lora_rank=lora_rank, lora_alpha=lora_alpha,
        media_root=media_root, allow_escape=allow_escape, log_every=opts["log_every"],
        arguments=dict(click.get_current_context().params), **dit_fields(opts),
    )
    if not print_plan("revise-tune", config, opts):
        run_revise(config)


# The paper clips gradients at 0.1; the shared option's default (1.0) suits the other trainers.
next(p for p in command.params if p.name == "max_grad_norm").default = 0.1
