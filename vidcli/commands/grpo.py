"""``vidcli grpo``: reinforce the instruction interpreter with the ReaDe reward (ReaDe stage 2)."""
from __future__ import annotations

import click

from vidcli.commands.common import LocalModel, reports_errors
from vidcli.commands.training import (
    interpreter_fields, interpreter_options, lora_settings, plan_options, print_plan, require_cuda_for_qlora,
    run_config, run_options,
)
from vidcli.interpreter.format import PROMPT_STYLES
from vidcli.rewards.coverage import CHOOSE_A_JUDGE

EXAMPLES = """\b
Examples:
  # key-info for the reward, then GRPO from the SFT checkpoint with an LLM judge
  vidcli decompose --schema reade --llm openai:Qwen3-30B-A3B-Instruct requests.jsonl > rl.jsonl
  vidcli grpo --model runs/sft --judge openai:Qwen3-30B-A3B-Instruct --judge-mode number rl.jsonl -o runs/grpo
  # offline embedding judge (no contradiction term), LoRA, TensorBoard; --resume after a crash
  vidcli grpo --model runs/sft --judge embed --report-to tensorboard rl.jsonl -o runs/grpo-embed
  vidcli grpo --model runs/sft --judge embed --resume rl.jsonl -o runs/grpo-embed
  # many GPUs with your accelerate config
  accelerate launch -m vidcli grpo --model runs/sft --finetune full rl.jsonl -o runs/grpo-full
  # generator in the loop: render each prompt with Wan2.1, ask Qwen2.5-VL whether it fulfils the request
  vidcli grpo --model runs/sft --reward video-feedback --generator Wan2.1-T2V-1.3B-Diffusers \\
      --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct --video-weight 0.5 rl.jsonl -o runs/grpo-video
"""


def video_feedback_options(func):
    """The --reward video-feedback options (generator, VLM, weight, render size)."""
    options = [
        click.option("--reward", type=click.Choice(["reade", "video-feedback"]), default="reade", show_default=True,
                     help="reade: the text reward alone; video-feedback: plus w·R_video from a frozen generator "
                          "and VLM (costly: see above)."),
        click.option("--generator", type=click.Path(exists=True, file_okay=False), default=None,
                     metavar="PIPELINE_DIR", help="video-feedback: frozen diffusers Wan / CogVideoX pipeline folder "
                                                  "or drf-tune output that renders the prompts."),
        click.option("--vlm", default=None, type=LocalModel(spec=True), metavar="[hf:]PATH",
                     help="video-feedback: frozen Qwen2-VL / Qwen2.5-VL that scores the renders."),
        click.option("--video-weight", type=float, default=1.0, show_default=True, help="w: weight of R_video."),
        click.option("--render-steps", type=click.IntRange(1), default=10, show_default=True,
                     help="Denoising steps per render."),
        click.option("--render-frames", type=click.IntRange(1), default=17, show_default=True,
                     help="Frames per render (4k+1)."),
        click.option("--render-height", type=click.IntRange(16), default=256, show_default=True,
                     help="Multiple of 16."),
        click.option("--render-width", type=click.IntRange(16), default=448, show_default=True,
                     help="Multiple of 16."),
        click.option("--render-guidance", type=click.FloatRange(0), default=5.0, show_default=True,
                     help="Classifier-free guidance of the renders (<= 1: off, half the DiT forwards)."),
        click.option("--render-prompt-style", type=click.Choice(PROMPT_STYLES), default="dense",
                     show_default=True, help="Generator prompt from the answer, as in vidcli interpret."),
        click.option("--render-batch", type=click.IntRange(1), default=8, show_default=True,
                     help="Renders per pipeline call and questions per VLM forward (lower it to save memory)."),
        click.option("--vlm-frames", type=click.IntRange(1), default=8, show_default=True,
                     help="Frames of each render shown to the VLM (uniform, first and last included)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def video_feedback_config(ctx: click.Context, reward: str, generator: str | None, vlm: str | None, opts: dict):
    """The VideoFeedbackConfig of --reward video-feedback (None for reade); inconsistent flags are usage errors."""
    from click.core import ParameterSource

    names = ("generator", "vlm", "video_weight", "render_steps", "render_frames", "render_height", "render_width",
             "render_guidance", "render_prompt_style", "render_batch", "vlm_frames")
    if reward == "reade":
        given = [n for n in names if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} applies to --reward video-feedback only")
        return None
    if generator is None or vlm is None:
        raise click.UsageError("--reward video-feedback needs --generator PIPELINE_DIR and --vlm hf:PATH")
    frames, height, width = opts["render_frames"], opts["render_height"], opts["render_width"]
    if frames % 4 != 1:
        raise click.UsageError(f"--render-frames must be 4k+1 (1, 5, 9, 17, ...), got {frames}")
    if height % 16 or width % 16:
        raise click.UsageError(f"--render-height and --render-width must be multiples of 16, got {height}x{width}")
    if opts["vlm_frames"] > frames:
        raise click.UsageError(f"--vlm-frames {opts['vlm_frames']} is more than --render-frames {frames}")
    from vidcli.rewards.video_feedback import VideoFeedbackConfig

    return VideoFeedbackConfig(
        generator=generator, vlm=vlm, weight=opts["video_weight"], steps=opts["render_steps"], frames=frames,
        height=height, width=width, guidance=opts["render_guidance"], vlm_frames=opts["vlm_frames"],
        batch=opts["render_batch"], prompt_style=opts["render_prompt_style"])


@click.command("grpo", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PATH",
              help="The starting policy and KL reference: an sft checkpoint (full or adapter) or any "
                   "image-text-to-text model.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoint-STEP/, rollouts.jsonl, and the final model in the folder itself.")
@click.option("--finetune", type=click.Choice(["full", "lora", "qlora"]), default="full", show_default=True,
              help="full (the paper's): a frozen second copy of the model is kept as reference. lora/qlora: the "
                   "reference is the base with adapters disabled (no copy), but at the full-model rate the "
                   "adapters barely move: raise --lr.")
@click.option("--judge", default=None, metavar="SPEC",
              help="Coverage judge (required): openai:MODEL (the paper's: an LLM, with --judge-mode number), "
                   "hf:PATH, or embed (offline matcher for smoke runs: no contradiction term, and close wording "
                   "passes even when it contradicts).")
@click.option("--judge-mode", type=click.Choice(["elements", "number"]), default="elements", show_default=True,
              help="LLM judges: one yes/no per element, or one coverage number per element set (the paper's).")
@click.option("--judge-base-url", default=None, metavar="URL",
              help="OpenAI-compatible endpoint of an openai: judge [default: $OPENAI_BASE_URL].")
@click.option("--judge-concurrency", type=click.IntRange(1), default=8, show_default=True,
              help="Judge requests in flight at once.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Weight of R_user.")
@click.option("--rho", type=float, default=1.0, show_default=True, help="Weight of R_detail (over S).")
@click.option("--gamma", type=float, default=0.8, show_default=True, help="Weight of R_supp (over Z).")
@click.option("--lambda", "lam", type=float, default=0.7, show_default=True, help="Weight of the R_contra penalty.")
@click.option("-G", "--num-generations", type=click.IntRange(2), default=8, show_default=True,
              help="Completions sampled per prompt (one group).")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="Sampling temperature (log-probs are taken at the same temperature).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--max-completion-tokens", type=click.IntRange(1), default=768, show_default=True)
@click.option("--epsilon", type=click.FloatRange(0, min_open=True), default=0.2, show_default=True,
              help="Clip range of the ratio: [1-ε, 1+ε].")
@click.option("--beta", type=click.FloatRange(0), default=0.001, show_default=True,
              help="Weight of the per-token KL to the reference (0: no reference at all).")
@click.option("--num-iterations", type=click.IntRange(1), default=1, show_default=True,
              help="μ: optimiser steps per rollout (must divide --save-every).")
@run_options(lr=2.5e-6, schedule="constant", warmup_steps=50, weight_decay=0.01, save_every=100, batch_size=1,
             grad_accum=2, lr_help="AdamW learning rate (paper: identity 2.5e-6, depth 1.5e-6, camera 1.5e-6, "
                                   "pose 1e-6).",
             batch_help="Prompts per device per micro-batch (each sampled G times).",
             samples=("tables of rollouts (instruction, completion, reward parts, advantage)",
                      "completions in each table (the first prompt's group first)", 8))
@video_feedback_options
@click.option("--instruction-dropout", type=click.FloatRange(0, 1), default=0.4, show_default=True,
              help="Probability that a prompt's instruction is replaced by an empty one (all G samples alike; "
                   "decided per seed, epoch and record, as in sft).")
@interpreter_options(dense_prompt_tokens=2048)
@plan_options(interpreter=True)
@reports_errors
def command(inputs, model, output, finetune, judge, judge_mode, judge_base_url, judge_concurrency, alpha, rho,
            gamma, lam, num_generations, temperature, top_p, max_completion_tokens, epsilon, beta, num_iterations,
            instruction_dropout, reward, generator, vlm, quiet, verbose, **opts):
    """GRPO of the interpreter (ReaDe stage 2) with the ReaDe reward, optionally plus video feedback.

    \b
    Records need 'key_info' (vidcli decompose --schema reade) and the request fields
    'instruction' / 'conditions'. Per prompt, G completions are sampled; each gets
    R = R_format + α·R_user + ρ·R_detail + γ·R_supp − λ·R_contra from the judge; the
    advantages are normalised within the group; the loss is the clipped ratio (ε) with
    a per-token KL to the starting policy (β). A completion whose reward the judge
    could not give (after its retries) is masked: recorded in rollouts.jsonl with its
    errors and "masked": true, no advantage, no loss; its group is normalised over the
    others (fewer than 2 left: the group sits the step out); each step logs how many.

    \b
    --reward video-feedback (off by default) adds w·R_video: each completion's prompt
    is rendered by a frozen --generator from its own seed and a frozen --vlm gives
    p(Yes) that the clip fulfils the record's 'instruction' and each key-info element
    of U; R_video is their mean (0 without an answer, no render). Extra cost per
    completion: --render-steps DiT forwards (x2 with guidance > 1), one VAE decode
    and 1 + |U| VLM forwards; G completions per prompt, every step. Both models stay
    loaded beside the policy.

    Writes OUTPUT/rollouts.jsonl (every completion: step, prompt id, the instruction as
    the policy saw it, text, reward parts, advantage; with video feedback its prompt, seed and p(Yes) per question),
    OUTPUT/checkpoint-STEP/ every --save-every steps and the final model in
    OUTPUT (vidcli.json, trainer_state/ for --resume). Defaults follow the paper: full
    fine-tuning, G 8, ε 0.2, β 0.001, constant lr 2.5e-6 after 50 warm-up steps,
    weight decay 0.01, 768 completion tokens, batch 1 prompt per device, 2 accumulation
    steps, instruction dropout 0.4, prompts up to 1024 tokens (2048 with depth or pose).
    There is no default judge: --judge is required.
    """
    from vidcli.log import setup_logging
    from vidcli.rewards.reade import RewardWeights
    from vidcli.train.grpo import GRPOConfig, run_grpo

    setup_logging(verbose, quiet)
    if judge is None and not opts["plan"]:  # a plan needs no judge: rewards take no GPU memory
        raise click.UsageError(CHOOSE_A_JUDGE)
    if opts["save_every"] % num_iterations:
        raise click.UsageError("--num-iterations must divide --save-every (checkpoints fall between rollouts)")
    if judge == "embed" and (judge_mode != "elements" or judge_base_url):
        raise click.UsageError("--judge-mode and --judge-base-url apply to LLM judges (openai:MODEL, hf:PATH)")
    if not opts["plan"]:
        require_cuda_for_qlora(finetune)
    ctx = click.get_current_context()
    video = video_feedback_config(ctx, reward, generator, vlm, opts)
    config = GRPOConfig(
        model=model, inputs=list(inputs), run=run_config(output, opts), finetune=finetune, lora=lora_settings(opts),
        num_generations=num_generations, temperature=temperature, top_p=top_p,
        max_completion_tokens=max_completion_tokens, epsilon=epsilon, beta=beta, num_iterations=num_iterations,
        judge=judge, judge_mode=judge_mode, judge_base_url=judge_base_url, judge_concurrency=judge_concurrency,
        instruction_dropout=instruction_dropout,
        weights=RewardWeights(alpha=alpha, rho=rho, gamma=gamma, lam=lam), video_feedback=video,
        log_every=opts["log_every"], arguments=dict(ctx.params), **interpreter_fields(opts),
    )
    if not print_plan("grpo", config, opts):
        run_grpo(config)
