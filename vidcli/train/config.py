"""The trainers' settings, each declared once: field, default, help and command-line form
(:mod:`vidcli.settings`) and the checks (``__post_init__``).

- :class:`RunConfig` (with :class:`~vidcli.train.optim.OptimConfig`): how long a run lasts, how it
  is batched, saved, logged and seeded; generic defaults.
- Groups every trainer of a kind shares: :class:`InterpreterTuning` (sft, grpo; with
  :class:`~vidcli.media_access.MediaSettings` and :class:`~vidcli.train.interpreter_tuning.LoraSettings`)
  and :class:`DitTuning` (drf-tune, revise-tune).
- One config per command (:class:`SFTConfig`, :class:`GRPOConfig`, :class:`DRFConfig`,
  :class:`ReviseConfig`), each with its method's run (``SFTRun``, ...) that retunes the generic
  defaults to the paper's (SFT: cosine from 1e-5; GRPO: constant 2.5e-6; ...).

The command modules generate their options from these classes; the recipes read them.
This module imports neither torch nor numpy, so ``vidcli sft --help`` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vidcli.media_access import MediaSettings
from vidcli.rewards.critic import CRITIC_REASONING
from vidcli.rewards.reade import RewardWeights
from vidcli.settings import group, retune, setting
from vidcli.train.interpreter_tuning import LoraSettings
from vidcli.train.optim import OptimConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.rewards.video_feedback import VideoFeedbackConfig

MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
TRACKERS = ("tensorboard", "wandb")
INTERPRETER_FINETUNE = ("full", "lora", "qlora")
DIT_FINETUNE = ("full", "lora")
STAGES = ("cot", "camera")
JUDGE_MODES = ("elements", "number")
DRF_REWARDS = ("vanilla", "rich", "binary")
DIMS = ("TA", "Phy", "VQ")
OBJECTIVES = ("sft", "rwr", "uso")


def parse_report_to(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``none``, or trackers joined by commas (``tensorboard,wandb``), de-duplicated in order."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["none"]:
        return "none"
    unknown = [name for name in names if name not in TRACKERS]
    if not names or unknown:
        raise click.BadParameter(f"give none, or one or more of {', '.join(TRACKERS)} joined by commas"
                                 + (f" (not {', '.join(unknown)})" if unknown else ""))
    return ",".join(dict.fromkeys(names))


def parse_dims(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """A comma-separated subset of :data:`DIMS`, in DIMS' order."""
    dims = tuple(d.strip() for d in value.split(",") if d.strip())
    unknown = sorted(set(dims) - set(DIMS))
    if not dims or unknown:
        raise click.BadParameter(f"give a comma-separated subset of {','.join(DIMS)}")
    return tuple(d for d in DIMS if d in dims)


@dataclass
class RunConfig:
    """How long a run lasts, how it is batched, saved, logged and seeded.

    These defaults are generic; each command's config gives its method's own (a subclass
    that :func:`~vidcli.settings.retune` s them, e.g. :class:`~vidcli.train.sft.SFTRun`).
    """

    output_dir: Path = setting(flag=("-o", "--output"), name="output", type=click.Path(file_okay=False),
                               help="Run folder: checkpoint-STEP/ folders, and the final model in the folder itself.")
    resume: bool = setting(False, help="Continue exactly from the latest complete checkpoint in --output (same "
                                       "inputs and flags).")
    epochs: int = setting(1, type=click.IntRange(1), help="Passes over the records.")
    max_steps: int | None = setting(None, type=click.IntRange(1),  # overrides epochs when set
                                    help="Optimiser steps to run (overrides --epochs).")
    save_every: int = setting(500, type=click.IntRange(0),  # 0 = only the final model
                              help="Steps between checkpoints (0: only the final model).")
    # Read by the Checkpointer from the run's saved arguments (a resumed run may change it).
    save_total_limit: int | None = setting(None, type=click.IntRange(1),
                                           help="Keep only the newest N checkpoint-STEP/ folders (older ones are "
                                                "deleted) [default: keep all].")
    seed: int = setting(0, type=click.IntRange(0), help="Seeds data order, sampling and new weights.")
    optim: OptimConfig = group(OptimConfig)
    batch_size: int = setting(6, type=click.IntRange(1), help="Per device.")  # per device (process)
    grad_accum: int = setting(2, type=click.IntRange(1), help="Micro-batches per optimiser step.")
    mixed_precision: str = setting("auto", type=click.Choice(MIXED_PRECISION),
                                   help="auto: bf16 where the GPU has it (or your accelerate config's choice).")
    # "none", or trackers joined by commas: "tensorboard", "wandb", "tensorboard,wandb"
    report_to: str = setting("none", callback=parse_report_to, metavar="none|tensorboard|wandb[,...]",
                             help="Experiment trackers, comma-separated (through accelerate; pip install "
                                  "'vidcli[tracking]'); logs in OUTPUT/logs. A resumed run continues its "
                                  "TensorBoard history and W&B run.")
    log_every: int = setting(10, type=click.IntRange(1),
                             help="Steps between log lines (loss, s/step, samples/s, time left, peak memory).")
    # The media a trainer sends to the trackers: every log_samples_every steps (0: never), log_samples of them.
    log_samples_every: int = setting(100, type=click.IntRange(0),
                                     help="Steps between the samples sent to the trackers (0: never; only with "
                                          "--report-to).")
    log_samples: int = setting(2, type=click.IntRange(1), help="How many samples.")

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}")
        if self.report_to != "none" and (not self.trackers or set(self.trackers) - set(TRACKERS)):
            raise ValueError(f"report_to must be 'none' or a comma-separated choice of {TRACKERS}")
        if self.log_samples_every < 0 or self.log_samples < 1:
            raise ValueError("log_samples_every must be >= 0 and log_samples >= 1")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1 or self.save_every < 0:
            raise ValueError("batch_size, grad_accum and epochs must be >= 1; save_every >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers of ``report_to``, in the order given (empty for ``none``)."""
        if self.report_to == "none":
            return ()
        return tuple(dict.fromkeys(name.strip() for name in self.report_to.split(",") if name.strip()))


# ----------------------------------------------------------------------------- shared groups


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


_DTYPES = ("auto", "float32", "bf16")


def _dtype_name(flag: str) -> str:
    """The torch name of a dtype flag (``bf16`` → ``bfloat16``)."""
    return {"bf16": "bfloat16"}.get(flag, flag)


@dataclass(kw_only=True)
class DitTuning:
    """The settings of every DiT trainer (drf-tune, revise-tune): what trains, precision and memory."""

    finetune: str = setting("full", type=click.Choice(DIT_FINETUNE),
                            help="Train every DiT weight, or LoRA adapters on its attention and feed-forward layers.")
    lora_rank: int = setting(64, type=click.IntRange(1))
    lora_alpha: int = setting(64, type=click.IntRange(1))
    gradient_checkpointing: bool = setting(False, help="Recompute the DiT's block activations in backward.")
    # The differentiable VAE decode keeps only its latents until backward.
    decode_checkpointing: bool = setting(True, flag="--decode-checkpointing/--no-decode-checkpointing",
                                         help="Keep only the latents of the differentiable VAE decode until "
                                              "backward, then decode again frame by frame.")
    vlm_dtype: str = setting("auto", type=click.Choice(_DTYPES), convert=_dtype_name,
                             help="Precision of the frozen VLM (auto: the compute dtype, bf16 under bf16 mixed "
                                  "precision).")
    text_encoder_dtype: str = setting("auto", type=click.Choice(_DTYPES), convert=_dtype_name,
                                      help="Precision of the frozen text encoder (auto: as --vlm-dtype).")
    offload_text_encoder: bool = setting(False, help="Keep the text encoder in CPU memory, on the GPU only while it "
                                                     "encodes a step's prompts.")
    # float32 as Wan advises; bf16 halves the differentiable decode's memory.
    vae_dtype: str = setting("float32", type=click.Choice(["float32", "bf16"]), convert=_dtype_name,
                             help="Precision of the frozen VAE (float32 as Wan advises; bf16 halves the memory of "
                                  "the differentiable decode).")
    vlm_checkpointing: bool = setting(False, help="Recompute the frozen VLM's layers in backward: a query keeps "
                                                  "only each layer's input.")



# ----------------------------------------------------------------------------- sft


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


# ----------------------------------------------------------------------------- drf-tune


@dataclass
class DRFOptim(OptimConfig):
    """drf-tune's optimiser: constant AdamW 1e-5, no warm-up, no weight decay."""

    schedule: str = retune(OptimConfig, "schedule", "constant")
    warmup_steps: int = retune(OptimConfig, "warmup_steps", 0)
    weight_decay: float = retune(OptimConfig, "weight_decay", 0.0)


@dataclass
class DRFRun(RunConfig):
    """drf-tune's run: one video per process and micro-batch, a checkpoint every 200 steps."""

    output_dir: Path = retune(RunConfig, "output_dir", help="Run folder: checkpoint-STEP/, rewards.jsonl, and the "
                                                            "final pipeline in the folder itself.")
    seed: int = retune(RunConfig, "seed", help="Seeds data order and noise.")
    optim: OptimConfig = retune(RunConfig, "optim", DRFOptim)
    save_every: int = retune(RunConfig, "save_every", 200)
    batch_size: int = retune(RunConfig, "batch_size", 1, cli=False)  # --mixed-precision applies to the DiT's forward
    grad_accum: int = retune(RunConfig, "grad_accum", 1)
    log_samples_every: int = retune(RunConfig, "log_samples_every", 100,
                                    help="Steps between the videos of fixed prompts (fixed noise) and heatmap figures "
                                         "sent to the trackers (0: never; only with --report-to).")
    log_samples: int = retune(RunConfig, "log_samples", 2,
                              help="How many records (the first ones) whose prompts are watched.")


@dataclass(kw_only=True)
class DRFConfig(DitTuning, MediaSettings):
    """Everything one drf-tune run needs; the ``drf-tune`` command's options are generated from it."""

    model: str  # diffusers pipeline folder (WanPipeline or CogVideoXPipeline)
    vlm: str  # Qwen2-VL / Qwen2.5-VL folder
    inputs: list[str]
    run: RunConfig = group(DRFRun, required=True)
    reward: str = setting("rich", type=click.Choice(DRF_REWARDS),
                          help="vanilla: log p(Yes) that the video matches the prompt; rich: likelihood of whole "
                               "reference answers; binary: of their verdicts only.")
    dims: tuple[str, ...] = setting(DIMS, cli_default=",".join(DIMS), callback=parse_dims,
                                    help="Question dimensions used by rich/binary rewards.")
    frames_vlm: int = setting(10, type=click.IntRange(1),
                              help="N_f: frames decoded and shown to the VLM (uniform over the video).")
    k_grad: int = setting(4, type=click.IntRange(1), help="K: last denoising steps that carry gradient.")
    steps: int = setting(25, type=click.IntRange(1), help="Denoising steps per rollout.")
    guidance: float = setting(5.0, type=click.FloatRange(0), help="Classifier-free guidance scale (<= 1: off).")
    # The sampling scheduler's flow shift; None: the checkpoint's own.
    shift: float | None = setting(None, type=click.FloatRange(0, min_open=True),
                                  help="Flow shift of the sampling scheduler (the paper lists 5.0) [default: the "
                                       "checkpoint's own, 3.0 in Wan2.1's folders]. Saved with the tuned pipeline.")
    height: int = setting(288, type=click.IntRange(16))
    width: int = setting(512, type=click.IntRange(16))
    frames: int = setting(49, type=click.IntRange(1), help="Video frames generated.")
    # Rate the VLM is told the N_f generated frames have; None: their real rate.
    fps: float | None = setting(None, type=click.FloatRange(0, min_open=True),
                                help="Frame rate the VLM is told the generated frames have [default: their real rate, "
                                     "--frames-vlm × the generator's rate (Wan 16 fps, CogVideoX 8) / --frames]. "
                                     "Real videos: always their own rate.")
    checkpoint_steps: bool = setting(True, flag="--step-checkpointing/--no-step-checkpointing",
                                     name="step_checkpointing",
                                     help="Keep only each grad-carrying denoising step's input latent between forward "
                                          "and backward.")
    heatmaps_dir: str | None = setting(None, flag="--save-grad-heatmaps", type=click.Path(file_okay=False),
                                       help="Write a figure per sample into this folder: the N_f frames (with their "
                                            "times) and under them |dR/dframe| in colour over each frame, titled with "
                                            "the prompt.")
    heatmap_samples: int = setting(4, type=click.IntRange(1),
                                   help="How many samples (the first ones) get a heatmap figure.")
    # One heatmap row per question (its own gradient), not only the sum.
    heatmap_per_question: bool = setting(False, help="Add one heatmap row per question (dimension, key, text): where "
                                                     "each question looks.")
    media_root: str | None = retune(MediaSettings, "media_root",
                                    help="Resolve the records' 'video' paths against this folder instead of each "
                                         "JSONL file's folder.")
    arguments: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reward not in DRF_REWARDS or self.finetune not in DIT_FINETUNE:
            raise ValueError(f"reward must be one of {DRF_REWARDS} and finetune one of {DIT_FINETUNE}")
        if not self.dims or set(self.dims) - set(DIMS):
            raise ValueError(f"dims must be a non-empty subset of {DIMS}")
        if self.k_grad < 1 or self.frames_vlm < 1:
            raise ValueError("k_grad and frames_vlm must be at least 1")
        if self.k_grad > self.steps:
            raise ValueError(f"k_grad {self.k_grad} is more than steps {self.steps}")
        if self.frames_vlm > self.frames:
            raise ValueError(f"frames_vlm {self.frames_vlm} is more than frames {self.frames}")


# ----------------------------------------------------------------------------- revise-tune


@dataclass
class ReviseOptim(OptimConfig):
    """The paper's editor optimiser: constant AdamW 3e-6, weight decay 1e-4, gradients clipped at 0.1."""

    lr: float = retune(OptimConfig, "lr", 3e-6)
    schedule: str = retune(OptimConfig, "schedule", "constant")
    warmup_steps: int = retune(OptimConfig, "warmup_steps", 0)
    weight_decay: float = retune(OptimConfig, "weight_decay", 1e-4)
    max_grad_norm: float | None = retune(OptimConfig, "max_grad_norm", 0.1)


@dataclass
class ReviseRun(RunConfig):
    """revise-tune's run: batch 8 = 1 triplet per device × 8 accumulation steps, a checkpoint every 500 steps."""

    output_dir: Path = retune(RunConfig, "output_dir", help="Run folder: checkpoint-STEP/, steps.jsonl, and the final "
                                                            "pipeline in the folder itself.")
    seed: int = retune(RunConfig, "seed", help="Seeds data order, t, noise and instruction dropout.")
    optim: OptimConfig = retune(RunConfig, "optim", ReviseOptim)
    save_every: int = retune(RunConfig, "save_every", 500)
    batch_size: int = retune(RunConfig, "batch_size", 1,
                             help="Triplets per device and micro-batch (batch = batch-size x grad-accum x processes; "
                                  "the paper's 8 = 1 x 8 on one device).")
    grad_accum: int = retune(RunConfig, "grad_accum", 8)
    log_samples_every: int = retune(RunConfig, "log_samples_every", 100,
                                    help="Steps between the edits of fixed triplets (source | edit, with the critic's "
                                         "delta) sent to the trackers (0: never; only with --report-to).")
    log_samples: int = retune(RunConfig, "log_samples", 2, help="How many triplets (the first ones) that are watched.")


@dataclass(kw_only=True)
class ReviseConfig(DitTuning, MediaSettings):
    """Everything one revise-tune run needs; the ``revise-tune`` command's options are generated from it."""

    model: str  # WanPipeline folder
    vlm: str  # Qwen2-VL / Qwen2.5-VL folder: the critic
    inputs: list[str]
    run: RunConfig = group(ReviseRun, required=True)
    objective: str = setting("uso", type=click.Choice(OBJECTIVES),
                             help="sft: flow matching only; rwr: P(Yes)·L_FM; uso: L_FM + lambda·L_reason.")
    reason_weight: float = setting(0.25, type=click.FloatRange(0),  # λ
                                   help="lambda: weight of the self-reflective loss.")
    sigma_max: float = setting(0.5, type=click.FloatRange(0, 1), help="The critic judges x0-hat only when t <= this.")
    t_shift: float = setting(3.0, type=click.FloatRange(0, min_open=True),
                             help="t = s·u/(1+(s-1)·u), u ~ U(0,1) (Wan's timestep shift; 1: uniform t).")
    cfg_drop: float = setting(0.2, type=click.FloatRange(0, 1),
                              help="Probability that the instruction is replaced by empty text.")
    frames_critic: int = setting(8, type=click.IntRange(1),  # F
                                 help="F: frames of x0-hat decoded and shown to the critic (uniform over the clip).")
    height: int = setting(288, type=click.IntRange(16))
    width: int = setting(512, type=click.IntRange(16))
    frames: int = setting(49, type=click.IntRange(1),
                          help="Frames sampled from each source and target clip (4k+1 for Wan).")
    # "first": short reasoning, then the verdict; "none": verdict first
    critic_reasoning: str = setting("first", type=click.Choice(CRITIC_REASONING),
                                    help="first: the critic writes a short reasoning (greedy, no gradient), then its "
                                         "verdict is read after it (the paper's order); none: the verdict is the "
                                         "reply's first word (one forward instead of a generation and a forward: "
                                         "cheaper).")
    critic_tokens: int = setting(64, type=click.IntRange(1), help="At most this many tokens of critic reasoning.")
    # Rate the critic is told the F frames have; None: each clip's real rate.
    fps: float | None = setting(None, type=click.FloatRange(0, min_open=True),
                                help="Frame rate the critic is told the sampled frames have [default: their real rate, "
                                     "--frames-critic over each clip's length].")
    media_root: str | None = retune(MediaSettings, "media_root",
                                    help="Resolve the triplets' video paths against this folder instead of each "
                                         "JSONL file's folder.")
    arguments: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES or self.finetune not in DIT_FINETUNE:
            raise ValueError(f"objective must be one of {OBJECTIVES} and finetune one of {DIT_FINETUNE}")
        if not 0 <= self.sigma_max <= 1 or not 0 <= self.cfg_drop <= 1 or self.t_shift <= 0:
            raise ValueError("sigma_max and cfg_drop must be in [0, 1]; t_shift positive")
        if self.frames_critic < 1:
            raise ValueError("frames_critic must be at least 1")
        if self.frames_critic > self.frames:
            raise ValueError(f"frames_critic {self.frames_critic} is more than frames {self.frames}")
        if self.critic_reasoning not in CRITIC_REASONING or self.critic_tokens < 1:
            raise ValueError(f"critic_reasoning must be one of {CRITIC_REASONING}; critic_tokens at least 1")
