"""``vidcli drf-tune``: fine-tune a video DiT on a frozen VLM's differentiable reward (Diffusion-DRF)."""
from __future__ import annotations

import click

from vidcli.commands.common import LocalModel, reports_errors
from vidcli.commands.training import dit_fields, dit_options, plan_options, print_plan, run_config, run_options

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


def parse_dims(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from vidcli.train.drf import DIMS

    dims = tuple(d.strip() for d in value.split(",") if d.strip())
    unknown = sorted(set(dims) - set(DIMS))
    if not dims or unknown:
        raise click.BadParameter(f"give a comma-separated subset of {','.join(DIMS)}")
    return tuple(d for d in DIMS if d in dims)


@click.command("drf-tune", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PIPELINE_DIR",
              help="diffusers pipeline folder: WanPipeline (Wan2.1 T2V) or CogVideoXPipeline.")
@click.option("--vlm", required=True, type=LocalModel(spec=False), metavar="[hf:]PATH",
              help="Frozen Qwen2-VL / Qwen2.5-VL (folder or hub id) that scores the videos.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoint-STEP/, rewards.jsonl, and the final pipeline in the folder itself.")
@click.option("--reward", type=click.Choice(["vanilla", "rich", "binary"]), default="rich", show_default=True,
              help="vanilla: log p(Yes) that the video matches the prompt; rich: likelihood of whole reference "
                   "answers; binary: of their verdicts only.")
@click.option("--dims", default="TA,Phy,VQ", show_default=True, callback=parse_dims,
              help="Question dimensions used by rich/binary rewards.")
@click.option("--frames-vlm", type=click.IntRange(1), default=10, show_default=True,
              help="N_f: frames decoded and shown to the VLM (uniform over the video).")
@click.option("--k-grad", type=click.IntRange(1), default=4, show_default=True,
              help="K: last denoising steps that carry gradient.")
@click.option("--steps", type=click.IntRange(1), default=25, show_default=True, help="Denoising steps per rollout.")
@click.option("--guidance", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Classifier-free guidance scale (<= 1: off).")
@click.option("--shift", type=click.FloatRange(0, min_open=True), default=None,
              help="Flow shift of the sampling scheduler (the paper lists 5.0) [default: the checkpoint's own, "
                   "3.0 in Wan2.1's folders]. Saved with the tuned pipeline.")
@click.option("--height", type=click.IntRange(16), default=288, show_default=True)
@click.option("--width", type=click.IntRange(16), default=512, show_default=True)
@click.option("--frames", type=click.IntRange(1), default=49, show_default=True, help="Video frames generated.")
@click.option("--fps", type=click.FloatRange(0, min_open=True), default=None,
              help="Frame rate the VLM is told the generated frames have [default: their real rate, --frames-vlm × "
                   "the generator's rate (Wan 16 fps, CogVideoX 8) / --frames]. Real videos: always their own rate.")
@click.option("--finetune", type=click.Choice(["full", "lora"]), default="full", show_default=True,
              help="Train every DiT weight, or LoRA adapters on its attention and feed-forward layers.")
@click.option("--lora-rank", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(1), default=64, show_default=True)
@dit_options
@click.option("--step-checkpointing/--no-step-checkpointing", default=True, show_default=True,
              help="Keep only each grad-carrying denoising step's input latent between forward and backward.")
@click.option("--save-grad-heatmaps", "heatmaps_dir", type=click.Path(file_okay=False), default=None,
              help="Write a figure per sample into this folder: the N_f frames (with their times) and under them "
                   "|dR/dframe| in colour over each frame, titled with the prompt.")
@click.option("--heatmap-samples", type=click.IntRange(1), default=4, show_default=True,
              help="How many samples (the first ones) get a heatmap figure.")
@click.option("--heatmap-per-question", is_flag=True,
              help="Add one heatmap row per question (dimension, key, text): where each question looks.")
@run_options(lr=1e-5, schedule="constant", warmup_steps=0, weight_decay=0.0, save_every=200, grad_accum=1,
             lr_help="AdamW learning rate.", seed_help="Seeds data order and noise.",
             samples=("videos of fixed prompts (fixed noise) and heatmap figures",
                      "records (the first ones) whose prompts are watched", 2))
@click.option("--media-root", type=click.Path(file_okay=False), default=None,
              help="Resolve the records' 'video' paths against this folder instead of each JSONL file's folder.")
@click.option("--allow-escape", is_flag=True, help="Allow relative media paths that leave the media folder with '..'.")
@plan_options()
@reports_errors
def command(inputs, model, vlm, output, reward, dims, frames_vlm, k_grad, steps, guidance, shift, height, width, frames,
            fps, finetune, lora_rank, lora_alpha, step_checkpointing, heatmaps_dir, heatmap_samples,
            heatmap_per_question, media_root, allow_escape, quiet, verbose, **opts):
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
    from vidcli.train.drf import DRFConfig, run_drf

    setup_logging(verbose, quiet)
    if k_grad > steps:
        raise click.UsageError(f"--k-grad {k_grad} is more than --steps {steps}")
    if frames_vlm > frames:
        raise click.UsageError(f"--frames-vlm {frames_vlm} is more than --frames {frames}")
    # One video per process and micro-batch; --mixed-precision applies to the DiT's forward.
    run = run_config(output, opts, batch_size=1)
    config = DRFConfig(
        model=model, vlm=vlm, inputs=list(inputs), run=run, reward=reward, dims=dims, frames_vlm=frames_vlm,
        k_grad=k_grad, steps=steps, guidance=guidance, shift=shift, height=height, width=width, frames=frames, fps=fps,
        finetune=finetune, lora_rank=lora_rank, lora_alpha=lora_alpha, checkpoint_steps=step_checkpointing,
        heatmaps_dir=heatmaps_dir, heatmap_samples=heatmap_samples, heatmap_per_question=heatmap_per_question,
        media_root=media_root,
        allow_escape=allow_escape, log_every=opts["log_every"], arguments=dict(click.get_current_context().params),
        **dit_fields(opts),
    )
    if not print_plan("drf-tune", config, opts):
        run_drf(config)
