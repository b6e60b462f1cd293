"""The settings of the interpreter trainers (``sft``, ``grpo``), declared once (:mod:`vidcli.train.config`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vidcli.media_access import MediaSettings
from vidcli.rewards.reade import RewardWeights
from vidcli.settings import group, retune, setting
from vidcli.train.config import RunConfig
from vidcli.train.interpreter_tuning import LoraSettings
from vidcli.train.optim import OptimConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.rewards.video_feedback_config import VideoFeedbackConfig

INTERPRETER_FINETUNE = ("full", "lora", "qlora")
STAGES = ("cot", "camera")
JUDGE_MODES = ("elements", "number")


@dataclass(kw_only=True)
class InterpreterTuning(MediaSettings):
    """The settings of every interpreter trainer (sft, grpo): what trains, prompt limits, media, memory."""

    finetune: str = setting("full", type=click.Choice(INTERPRETER_FINETUNE),
                            help="Which weights train; qlora (4-bit base + LoRA) needs a CUDA GPU.")
    lora: LoraSettings = group(LoraSettings, prefix="lora_")
    max_prompt_tokens: int = setting(1024, type=click.IntRange(1),
                                     help="Prompt limit in tokens. Every prompt is measured before the first step; "
                                          "the longer ones are all listed and the run stops (or see "
                                          "--drop-long-prompts).")
    max_prompt_tokens_dense: int = setting(1024, type=click.IntRange(1),
                                           help="Prompt limit for records with a depth or pose condition.")
    # Drop over-long records instead of stopping before the first step.
    drop_long_prompts: bool = setting(False, help="Leave out the records whose prompt is over its limit (each is "
                                                  "named on stderr) instead of stopping.")
    video_frames: int = setting(16, type=click.IntRange(1), help="Frames sampled from each video condition.")
    gradient_checkpointing: bool = setting(False, help="Recompute activations in backward to save memory.")
    trust_remote_code: bool = setting(False, help="Run model code shipped with the checkpoint.")


@dataclass
class SFTOptim(OptimConfig):
    """The paper's stage-1 optimiser: AdamW 1e-5, cosine after 200 warm-up steps, weight decay 0.01."""

    lr: float = retune(OptimConfig, "lr", 1e-5, help="Peak AdamW learning rate.")
    schedule: str = retune(OptimConfig, "schedule", "cosine")
    warmup_steps: int = retune(OptimConfig, "warmup_steps", 200)
    weight_decay: float = retune(OptimConfig, "weight_decay", 0.01)


@dataclass
class SFTRun(RunConfig):
    """sft's run: batch 6 per device, 2 accumulation steps, a checkpoint every 500 steps; no samples to trackers."""

    seed: int = retune(RunConfig, "seed", help="Seeds data order, instruction dropout and new weights.")
    optim: OptimConfig = retune(RunConfig, "optim", SFTOptim)
    save_every: int = retune(RunConfig, "save_every", 500)
    batch_size: int = retune(RunConfig, "batch_size", 6)
    grad_accum: int = retune(RunConfig, "grad_accum", 2)
    log_samples_every: int = retune(RunConfig, "log_samples_every", 0, cli=False)
    log_samples: int = retune(RunConfig, "log_samples", 1, cli=False)


@dataclass(kw_only=True)
class SFTConfig(InterpreterTuning):
    """Everything one SFT run needs; the ``sft`` command's options are generated from it."""

    model: str
    inputs: list[str]
    run: RunConfig = group(SFTRun, required=True)
    stage: str = setting("cot", type=click.Choice(STAGES),
                         help="cot: learn cot.target; camera: pre-train only the camera encoder on camera-to-text "
                              "records.")
    instruction_dropout: float = setting(
        0.4, type=click.FloatRange(0, 1),
        help="Probability that an example's instruction is replaced by an empty one (stage cot; records with "
             "conditions). The target is then make-cot's cot.no_instruction.target, which never quotes the "
             "request; older records without it drop their step 1 (the intent, which quotes it) rather than keep "
             "it, though steps 3-4 may still mention the text; a target without make-cot's step labels keeps its "
             "instruction.")
    # the paper's stage 1 uses 1024 for every condition type
    max_prompt_tokens_dense: int = retune(InterpreterTuning, "max_prompt_tokens_dense", 1024)
    arguments: dict = field(default_factory=dict)  # as given by the user, for vidcli.json

    def __post_init__(self) -> None:
        if self.stage not in STAGES or self.finetune not in INTERPRETER_FINETUNE:
            raise ValueError(f"stage must be one of {STAGES} and finetune one of {INTERPRETER_FINETUNE}")
        if not 0.0 <= self.instruction_dropout <= 1.0:
            raise ValueError("instruction_dropout must be in [0, 1]")
        if self.stage == "camera" and self.finetune != "full":
            raise ValueError("stage camera trains only the camera encoder; leave finetune at full")


# ----------------------------------------------------------------------------- grpo


@dataclass
class GRPOOptim(OptimConfig):
    """The paper's stage-2 optimiser: constant AdamW 2.5e-6 after 50 warm-up steps, weight decay 0.01."""

    lr: float = retune(OptimConfig, "lr", 2.5e-6, help="AdamW learning rate (paper: identity 2.5e-6, depth 1.5e-6, "
                                                       "camera 1.5e-6, pose 1e-6).")
    schedule: str = retune(OptimConfig, "schedule", "constant")
    warmup_steps: int = retune(OptimConfig, "warmup_steps", 50)
    weight_decay: float = retune(OptimConfig, "weight_decay", 0.01)


@dataclass
class GRPORun(RunConfig):
    """grpo's run: 1 prompt per device, 2 accumulation steps, a checkpoint every 100 steps, 8 completions logged."""

    output_dir: Path = retune(RunConfig, "output_dir", help="Run folder: checkpoint-STEP/, rollouts.jsonl, and the "
                                                            "final model in the folder itself.")
    optim: OptimConfig = retune(RunConfig, "optim", GRPOOptim)
    save_every: int = retune(RunConfig, "save_every", 100)
    batch_size: int = retune(RunConfig, "batch_size", 1, help="Prompts per device per micro-batch (each sampled G "
                                                              "times).")
    grad_accum: int = retune(RunConfig, "grad_accum", 2)
    log_samples_every: int = retune(RunConfig, "log_samples_every", 100,
                                    help="Steps between the tables of rollouts (instruction, completion, reward "
                                         "parts, advantage) sent to the trackers (0: never; only with --report-to).")
    log_samples: int = retune(RunConfig, "log_samples", 8,
                              help="How many completions in each table (the first prompt's group first).")


@dataclass(kw_only=True)
class GRPOConfig(InterpreterTuning):
    """Everything one GRPO run needs; the ``grpo`` command's options are generated from it (but those of
    ``--reward video-feedback``, which it checks together)."""

    model: str
    inputs: list[str]
    run: RunConfig = group(GRPORun, required=True)
    finetune: str = retune(InterpreterTuning, "finetune",  # the paper's; LoRA at its learning rate barely moves
                           help="full (the paper's): a frozen second copy of the model is kept as reference. "
                                "lora/qlora: the reference is the base with adapters disabled (no copy), but at the "
                                "full-model rate the adapters barely move: raise --lr.")
    # Required unless a reward model is passed to the recipe (or for --plan, which needs none).
    judge: str | None = setting(None, metavar="SPEC",
                                help="Coverage judge (required): openai:MODEL (the paper's: an LLM, with --judge-mode "
                                     "number), hf:PATH, or embed (offline matcher for smoke runs: no contradiction "
                                     "term, and close wording passes even when it contradicts).")
    judge_mode: str = setting("elements", type=click.Choice(JUDGE_MODES),
                              help="LLM judges: one yes/no per element, or one coverage number per element set (the "
                                   "paper's).")
    judge_base_url: str | None = setting(None, metavar="URL", help="OpenAI-compatible endpoint of an openai: judge "
                                                                   "[default: $OPENAI_BASE_URL].")
    judge_concurrency: int = setting(8, type=click.IntRange(1), help="Judge requests in flight at once.")
    weights: RewardWeights = group(RewardWeights)
    num_generations: int = setting(8, flag=("-G", "--num-generations"), type=click.IntRange(2),
                                   help="Completions sampled per prompt (one group).")
    temperature: float = setting(1.0, type=click.FloatRange(0, min_open=True),
                                 help="Sampling temperature (log-probs are taken at the same temperature).")
    top_p: float = setting(1.0, type=click.FloatRange(0, 1, min_open=True))
    max_completion_tokens: int = setting(768, type=click.IntRange(1))
    # > 0 holds EOS back: the longest steps' memory and speed, measured before a real run (tests/bench use it too).
    min_completion_tokens: int = setting(0, type=click.IntRange(0),
                                         help="Sample at least N tokens per completion (the stop token is held back "
                                              "until then); equal to --max-completion-tokens, every completion is "
                                              "as long as allowed: the peak memory and speed of the longest steps, "
                                              "measured before a real run. 0: completions end at their stop token.")
    epsilon: float = setting(0.2, type=click.FloatRange(0, min_open=True),
                             help="Clip range of the ratio: [1-ε, 1+ε].")
    beta: float = setting(0.001, type=click.FloatRange(0),
                          help="Weight of the per-token KL to the reference (0: no reference at all).")
    num_iterations: int = setting(1, type=click.IntRange(1),
                                  help="μ: optimiser steps per rollout (must divide --save-every).")
    instruction_dropout: float = setting(
        0.4, type=click.FloatRange(0, 1),
        help="Probability that a prompt's instruction is replaced by an empty one (all G samples alike; decided per "
             "seed, epoch and record, as in sft).")
    video_feedback: VideoFeedbackConfig | None = None  # None: the ReaDe reward alone
    # the paper's stage-2 limit for depth and pose
    max_prompt_tokens_dense: int = retune(InterpreterTuning, "max_prompt_tokens_dense", 2048)
    arguments: dict = field(default_factory=dict)  # as given by the user, for vidcli.json

    def __post_init__(self) -> None:
        if self.finetune not in INTERPRETER_FINETUNE:
            raise ValueError(f"finetune must be one of {INTERPRETER_FINETUNE}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: advantages compare completions of one prompt")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.epsilon <= 0 or self.beta < 0:
            raise ValueError("temperature and epsilon must be positive, top_p in (0, 1], beta non-negative")
        if self.num_iterations < 1:
            raise ValueError("num_iterations must be at least 1")
        if self.run.save_every % self.num_iterations:
            raise ValueError("num_iterations must divide save_every (checkpoints fall between rollouts)")
        if not 0 <= self.min_completion_tokens <= self.max_completion_tokens:
            raise ValueError("min_completion_tokens must be between 0 and max_completion_tokens")
        if not 0.0 <= self.instruction_dropout <= 1.0:
            raise ValueError("instruction_dropout must be in [0, 1]")
        if self.judge_mode not in JUDGE_MODES:
            raise ValueError(f"judge_mode must be one of {JUDGE_MODES}")
        if self.judge == "embed" and (self.judge_mode != "elements" or self.judge_base_url):
            raise ValueError("judge_mode and judge_base_url apply to LLM judges (openai:MODEL, hf:PATH)")
