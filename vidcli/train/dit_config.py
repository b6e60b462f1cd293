"""The settings of the DiT trainers (``drf-tune``, ``revise-tune``), declared once (:mod:`vidcli.train.config`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from vidcli.media_access import MediaSettings
from vidcli.rewards.critic import CRITIC_REASONING
from vidcli.settings import group, retune, setting
from vidcli.train.config import RunConfig
from vidcli.train.optim import OptimConfig

DIT_FINETUNE = ("full", "lora")
DRF_REWARDS = ("vanilla", "rich", "binary")
DIMS = ("TA", "Phy", "VQ")
OBJECTIVES = ("sft", "rwr", "uso")


def parse_dims(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    """A comma-separated subset of :data:`DIMS`, in DIMS' order."""
    dims = tuple(d.strip() for d in value.split(",") if d.strip())
    unknown = sorted(set(dims) - set(DIMS))
    if not dims or unknown:
        raise click.BadParameter(f"give a comma-separated subset of {','.join(DIMS)}")
    return tuple(d for d in DIMS if d in dims)


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
    fold_text_padding: bool = setting(False, help="Wan: attend to each prompt's zero padding as one key weighted "
                                                  "by its count; the same model up to rounding, faster where a "
                                                  "video has few tokens (small sizes, CPU).")



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
