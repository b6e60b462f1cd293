"""``vidcli grpo``: reinforce the instruction interpreter with the ReaDe reward (ReaDe stage 2)."""
from __future__ import annotations

import click

from vidcli.commands.common import reports_errors
from vidcli.commands.training import (
    interpreter_fields, interpreter_options, lora_settings, require_cuda_for_qlora, run_config, run_options,
)

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
"""


@click.command("grpo", epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...", type=click.Path(allow_dash=True))
@click.option("--model", required=True, metavar="PATH",
              help="The starting policy and KL reference: an sft checkpoint (full or adapter) or any "
                   "image-text-to-text model.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Run folder: checkpoint-STEP/, rollouts.jsonl, and the final model in the folder itself.")
@click.option("--finetune", type=click.Choice(["full", "lora", "qlora"]), default="lora", show_default=True,
              help="lora/qlora: the reference is the base with adapters disabled (no copy); "
                   "full: a frozen second copy of the model is kept as reference.")
@click.option("--judge", default="embed", show_default=True, metavar="SPEC",
              help="Coverage judge: openai:MODEL, hf:PATH, or embed (offline matcher; no contradiction term).")
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
             batch_help="Prompts per device per micro-batch (each sampled G times).")
@interpreter_options
@reports_errors
def command(inputs, model, output, finetune, judge, judge_mode, judge_base_url, judge_concurrency, alpha, rho,
            gamma, lam, num_generations, temperature, top_p, max_completion_tokens, epsilon, beta, num_iterations,
            quiet, verbose, **opts):
    """GRPO of the interpreter with the ReaDe reward (SPEC §5).

    \b
    Records need 'key_info' (vidcli decompose --schema reade) and the request fields
    'instruction' / 'conditions'. Per prompt, G completions are sampled; each gets
    R = R_format + α·R_user + ρ·R_detail + γ·R_supp − λ·R_contra from the judge; the
    advantages are normalised within the group; the loss is the clipped ratio (ε) with
    a per-token KL to the starting policy (β). A judge failure is recorded in
    rollouts.jsonl and that part counts 0; the run goes on.

    Writes OUTPUT/rollouts.jsonl (every completion: step, prompt id, text, reward parts,
    advantage), OUTPUT/checkpoint-STEP/ every --save-every steps and the final model in
    OUTPUT (vidcli.json, trainer_state/ for --resume). Defaults follow the paper: G 8,
    ε 0.2, β 0.001, constant lr 2.5e-6 after 50 warm-up steps, weight decay 0.01,
    768 completion tokens, batch 1 prompt per device, 2 accumulation steps.
    """
    from vidcli.log import setup_logging
    from vidcli.rewards.reade import RewardWeights
    from vidcli.train.grpo import GRPOConfig, run_grpo

    setup_logging(verbose, quiet)
    if opts["save_every"] % num_iterations:
        raise click.UsageError("--num-iterations must divide --save-every (checkpoints fall between rollouts)")
    if judge == "embed" and (judge_mode != "elements" or judge_base_url):
        raise click.UsageError("--judge-mode and --judge-base-url apply to LLM judges (openai:MODEL, hf:PATH)")
    require_cuda_for_qlora(finetune)
    config = GRPOConfig(
        model=model, inputs=list(inputs), run=run_config(output, opts), finetune=finetune, lora=lora_settings(opts),
        num_generations=num_generations, temperature=temperature, top_p=top_p,
        max_completion_tokens=max_completion_tokens, epsilon=epsilon, beta=beta, num_iterations=num_iterations,
        judge=judge, judge_mode=judge_mode, judge_base_url=judge_base_url, judge_concurrency=judge_concurrency,
        weights=RewardWeights(alpha=alpha, rho=rho, gamma=gamma, lam=lam), log_every=opts["log_every"],
        arguments=dict(click.get_current_context().params), **interpreter_fields(opts),
    )
    run_grpo(config)
