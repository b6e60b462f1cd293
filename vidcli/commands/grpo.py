"""``vidcli grpo``: reinforce the instruction interpreter with the ReaDe reward (ReaDe stage 2)."""
from __future__ import annotations

import click

from vidcli.commands.common import LocalModel, reports_errors
from vidcli.commands.training import (
    build_config,
    log_options,
    plan_options,
    print_plan,
    require_cuda_for_qlora,
    settings_from,
)
from vidcli.rewards.coverage import CHOOSE_A_JUDGE
from vidcli.rewards.video_feedback_config import VideoFeedbackConfig
from vidcli.settings import OPTION, options_from, settings_of
from vidcli.train.interpreter_config import GRPOConfig

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
    """--reward, the frozen models of --reward video-feedback, and its settings (generated from
    VideoFeedbackConfig)."""
    options = [
        click.option("--reward", type=click.Choice(["reade", "video-feedback"]), default="reade", show_default=True,
                     help="reade: the text reward alone; video-feedback: plus w·R_video from a frozen generator "
                          "and VLM (costly: see above)."),
        click.option("--generator", type=click.Path(exists=True, file_okay=False), default=None,
                     metavar="PIPELINE_DIR", help="video-feedback: frozen diffusers Wan / CogVideoX pipeline folder "
                                                  "or drf-tune output that renders the prompts."),
        click.option("--vlm", default=None, type=LocalModel(spec=True), metavar="[hf:]PATH",
                     help="video-feedback: frozen Qwen2-VL / Qwen2.5-VL that scores the renders."),
        options_from(VideoFeedbackConfig),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def video_feedback_config(ctx: click.Context, reward: str, generator: str | None, vlm: str | None, opts: dict):
    """The VideoFeedbackConfig of --reward video-feedback (None for reade); inconsistent flags are usage errors."""
    from click.core import ParameterSource

    names = ["generator", "vlm"] + [name for name in opts if name in _VIDEO_SETTINGS]
    if reward == "reade":
        given = [n for n in names if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--{given[0].replace('_', '-')} applies to --reward video-feedback only")
        return None
    if generator is None or vlm is None:
        raise click.UsageError("--reward video-feedback needs --generator PIPELINE_DIR and --vlm hf:PATH")
    return settings_from(VideoFeedbackConfig, generator=generator, vlm=vlm)


_VIDEO_SETTINGS = {field.metadata[OPTION]["name"] or field.name for field, _ in settings_of(VideoFeedbackConfig)}


@click.command("grpo", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PATH",
              help="The starting policy and KL reference: an sft checkpoint (full or adapter) or any "
                   "image-text-to-text model.")
@options_from(GRPOConfig)
@video_feedback_options
@log_options
@plan_options(interpreter=True)
@reports_errors
def command(inputs, model, reward, generator, vlm, quiet, verbose, **opts):
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
    from vidcli.train.grpo import run_grpo

    setup_logging(verbose, quiet)
    if opts["judge"] is None and not opts["plan"]:  # a plan needs no judge: rewards take no GPU memory
        raise click.UsageError(CHOOSE_A_JUDGE)
    video = video_feedback_config(click.get_current_context(), reward, generator, vlm, opts)
    config = build_config(GRPOConfig, model=model, inputs=list(inputs), video_feedback=video)
    if not opts["plan"]:
        require_cuda_for_qlora(config.finetune)
    if not print_plan("grpo", config, opts):
        run_grpo(config)
