"""``vidcli grpo``: reinforce the instruction interpreter with the ReaDe reward (ReaDe stage 2)."""
from __future__ import annotations

import click

from vidcli.commands.common import reports_errors

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
@click.option("--resume", is_flag=True,
              help="Continue exactly from the latest complete checkpoint in --output (same inputs and flags).")
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True, help="Passes over the records.")
@click.option("--max-steps", type=click.IntRange(1), default=None, help="Optimiser steps to run (overrides --epochs).")
@click.option("--save-every", type=click.IntRange(0), default=100, show_default=True,
              help="Steps between checkpoints (0: only the final model).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seeds data order, sampling and new weights.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2.5e-6, show_default=True,
              help="AdamW learning rate (paper: identity 2.5e-6, depth 1.5e-6, camera 1.5e-6, pose 1e-6).")
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="constant", show_default=True)
@click.option("--warmup-steps", type=click.IntRange(0), default=50, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=0.01, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Gradient clipping norm (0: off).")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True,
              help="Prompts per device per micro-batch (each sampled G times).")
@click.option("--grad-accum", type=click.IntRange(1), default=2, show_default=True,
              help="Micro-batches per optimiser step.")
@click.option("--mixed-precision", type=click.Choice(["auto", "bf16", "fp16", "no"]), default="auto",
              show_default=True, help="auto: bf16 where the GPU has it (or your accelerate config's choice).")
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
@click.option("-q", "--quiet", is_flag=True, help="No info logs.")
@click.option("-v", "--verbose", count=True, help="More logs on stderr (-vv for debug).")
@reports_errors
def command(inputs, model, output, finetune, judge, judge_mode, judge_base_url, judge_concurrency, alpha, rho,
            gamma, lam, num_generations, temperature, top_p, max_completion_tokens, epsilon, beta, num_iterations,
            resume, epochs, max_steps, save_every, seed, lr, schedule, warmup_steps, weight_decay, max_grad_norm,
            batch_size, grad_accum, mixed_precision, max_prompt_tokens, max_prompt_tokens_dense, video_frames,
            gradient_checkpointing, lora_rank, lora_alpha, lora_dropout, lora_targets, report_to, log_every,
            media_root, allow_escape, trust_remote_code, quiet, verbose):
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
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.grpo import GRPOConfig, run_grpo
    from vidcli.train.sft import LoraSettings

    setup_logging(verbose, quiet)
    if save_every % num_iterations:
        raise click.UsageError("--num-iterations must divide --save-every (checkpoints fall between rollouts)")
    if judge == "embed" and (judge_mode != "elements" or judge_base_url):
        raise click.UsageError("--judge-mode and --judge-base-url apply to LLM judges (openai:MODEL, hf:PATH)")
    if finetune == "qlora":
        import torch

        if not torch.cuda.is_available():
            raise click.UsageError("--finetune qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora or full here")
    optim = OptimConfig(lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
                        max_grad_norm=max_grad_norm or None)
    run = RunConfig(output_dir=output, seed=seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                    grad_accum=grad_accum, save_every=save_every, mixed_precision=mixed_precision,
                    report_to=report_to, resume=resume, optim=optim)
    lora = LoraSettings(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout)
    if lora_targets:
        lora.targets = lora_targets
    config = GRPOConfig(
        model=model, inputs=list(inputs), run=run, finetune=finetune, lora=lora, num_generations=num_generations,
        temperature=temperature, top_p=top_p, max_completion_tokens=max_completion_tokens, epsilon=epsilon,
        beta=beta, num_iterations=num_iterations, judge=judge, judge_mode=judge_mode,
        judge_base_url=judge_base_url, judge_concurrency=judge_concurrency,
        weights=RewardWeights(alpha=alpha, rho=rho, gamma=gamma, lam=lam), max_prompt_tokens=max_prompt_tokens,
        max_prompt_tokens_dense=max_prompt_tokens_dense, video_frames=video_frames,
        gradient_checkpointing=gradient_checkpointing, media_root=media_root, allow_escape=allow_escape,
        trust_remote_code=trust_remote_code, log_every=log_every,
        arguments=dict(click.get_current_context().params),
    )
    run_grpo(config)
