"""ReViSE self-reflective learning (SPEC §8): a video editor tuned with flow matching and a VLM critic.

**The editor** is a Wan DiT (:class:`InContextEditor`) that sees the source clip in
context. Both clips are VAE-encoded (posterior mean, normalised as the pipeline does);
the DiT input is ``cat([z_t, x_src], dim=2)``, the noisy *target* latent frames first and
the clean *source* latent frames after them along the frame axis, so the token sequence
is the target tokens followed by the source tokens (frame-major, as Wan flattens) and
3D RoPE gives the source frames the positions after the target's. Each token has its own
timestep (Wan's per-token timestep input): ``1000·t`` on target tokens, ``0`` on source
tokens (the source is clean). The output's source part is dropped: the velocity — and
every loss — lives on the target part only. The instruction is the text condition.

One optimiser step: ``--grad-accum`` micro-batches of ``--batch-size`` triplets per
process, one DiT forward per triplet (batch 8 = 1 × 8 accumulation by default), loss
averaged over the step's triplets and over processes. For each triplet:

1. draw t and ε from a generator seeded by ``(seed, the triplet's place in the data stream)``
   (:meth:`~vidcli.train.core.DataOrder.stream_index`), the same on any process count.
   t = s·u / (1 + (s−1)·u) with u ~ U(0, 1) and shift s (``--t-shift``; Wan's 480p value 3 by
   default, 1 = plain uniform). P(t ≤ σ_max) = σ/(s − (s−1)σ): 25% at s = 3, σ = 0.5 —
   the trigger rate the paper reports, which a plain uniform t (50%) does not give;
2. with probability ``--cfg-drop`` (0.2) the instruction is replaced by empty text;
3. z_t = (1−t)·x0 + t·ε; L_FM = mean ||v − (ε − x0)||² over the target latents;
4. if t ≤ σ_max (and the objective uses the critic): x̂0 = z_t − t·v; decode F frames of
   x̂0 spread uniformly over the clip with the frozen VAE; the frozen VLM critic sees
   (edited frames, source frames, instruction) — the source frames are the clip's own
   pixels at the same indices, and always the real instruction — and is asked to check
   edit accuracy, preservation (not for ``subset: icvg`` triplets, whose target is a new
   shot: as in ``score --metric rve``), motion and realism (:class:`Critic`). With
   ``--critic-reasoning first`` (default, the paper's order) it writes a short reasoning
   (greedy, at most ``--critic-tokens`` tokens, no gradient), then one forward with
   gradient over [prompt + reasoning + "Verdict:"] gives Δ = ℓ(Yes) − ℓ(No) at the
   verdict position; ``none`` asks for the verdict as the reply's first word and reads Δ
   there (one forward, no generation: cheaper, but the verdict comes before any
   reasoning). Δ₀ is the same on (source, source) without gradient, once per triplet.
   The critic is told each clip's real frame rate (F frames over the clip's length) or
   ``--fps``;
5. loss by ``--objective``: ``uso``: L_FM + λ·(−log σ(Δ − Δ₀)) when gated, else L_FM;
   ``sft``: L_FM (no critic); ``rwr``: P(Yes)·L_FM with P(Yes) = softmax over the
   {Yes, No} logits = σ(Δ), computed without gradient on gated steps (weight 1 otherwise,
   so rwr and uso differ only in how they use the same critic signal).

Only the DiT (full or LoRA) trains; VAE, text encoder and VLM are frozen. Per triplet,
``OUTPUT/steps.jsonl`` gets ``{step, id, t, gated, cfg_drop, l_fm, delta, delta0,
l_reason, p_yes, critique, loss}`` (``critique``: the critic's reasoning about the edit).
Checkpoints are diffusers pipeline folders (tuned ``transformer/`` or
``pytorch_lora_weights.safetensors``, other components linked) written, like the LoRA
attachment, by the DiT-tuning helpers drf-tune uses too (:mod:`vidcli.train.dit_tuning`).
With ``--report-to``, the trackers get (at step 0, every ``--log-samples-every`` steps and
at the last) the first ``--log-samples`` triplets edited by the DiT as it is then —
``vidcli generate``'s sampling (30 steps, the pipeline's guidance, noise seeded by
``(--seed, triplet id)``) — as a source | edit GIF and frame strip captioned with the
critic's Δ and Δ₀ on that edit.
The saved folder loads with ``WanPipeline.from_pretrained``; its transformer edits when
called as :meth:`InContextEditor.velocity` calls it (layout recorded in ``vidcli.json``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidcli.diffusion.editor import EDITOR_LAYOUT, Clip, InContextEditor, read_clip
from vidcli.errors import InputError
from vidcli.media_access import MediaAccess
from vidcli.records import choice_field, text_field
from vidcli.rewards.critic import CRITIC_REASONING, Critic
from vidcli.scoring.rve import SUBSETS
from vidcli.train.checkpoint import Checkpointer, RunInfo, check_output_dir, safe_arguments
from vidcli.train.core import RunConfig, run_recipe
from vidcli.train.dit_tuning import (FINETUNE, check_same_tuning, frozen_dtype, load_generator, prepare_denoiser,
                                     samples_due, save_pipeline, synced, train_dit)
from vidcli.train.inputs import read_training_records
from vidcli.train.optim import build_scheduler, clip_and_step, total_steps
from vidcli.train.order import DataOrder
from vidcli.train.start import RunStart, final_model, start_run
from vidcli.train.steplog import StepLog

log = logging.getLogger("vidcli.train")

OBJECTIVES = ("sft", "rwr", "uso")
STEPS_LOG = "steps.jsonl"


def shifted_t(u: float, shift: float) -> float:
    """Wan's timestep shift of a uniform draw: t = s·u / (1 + (s−1)·u); s = 1 is the identity."""
    return shift * u / (1 + (shift - 1) * u)


def trigger_probability(sigma_max: float, shift: float) -> float:
    """P(t ≤ σ_max) for t = s·u/(1 + (s−1)·u), u ~ U(0, 1): the expected share of gated steps."""
    return sigma_max / (shift - (shift - 1.0) * sigma_max)


@dataclass
class ReviseConfig:
    """Everything one revise-tune run needs (the CLI fills it from its flags)."""

    model: str  # WanPipeline folder
    vlm: str  # Qwen2-VL / Qwen2.5-VL folder: the critic
    inputs: list[str]
    run: RunConfig
    objective: str = "uso"
    reason_weight: float = 0.25  # λ
    sigma_max: float = 0.5
    t_shift: float = 3.0
    cfg_drop: float = 0.2
    frames_critic: int = 8  # F
    critic_reasoning: str = "first"  # "first": short reasoning, then the verdict; "none": verdict first
    critic_tokens: int = 64  # at most this many tokens of reasoning
    height: int = 288
    width: int = 512
    frames: int = 49
    fps: float | None = None  # rate the critic is told the F frames have; None: each clip's real rate
    finetune: str = "full"
    lora_rank: int = 64
    lora_alpha: int = 64
    gradient_checkpointing: bool = False
    decode_checkpointing: bool = True  # the x0-hat decode keeps only its latents until backward
    vlm_dtype: str = "auto"  # auto: the compute dtype (bf16 under bf16 mixed precision)
    text_encoder_dtype: str = "auto"
    vae_dtype: str = "float32"  # as Wan advises; bf16 halves the differentiable decode's memory
    vlm_checkpointing: bool = False  # recompute the frozen VLM's layers in backward
    offload_text_encoder: bool = False
    media_root: str | None = None
    allow_escape: bool = False
    log_every: int = 10
    arguments: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES or self.finetune not in FINETUNE:
            raise ValueError(f"objective must be one of {OBJECTIVES} and finetune one of {FINETUNE}")
        if not 0 <= self.sigma_max <= 1 or not 0 <= self.cfg_drop <= 1 or self.t_shift <= 0:
            raise ValueError("sigma_max and cfg_drop must be in [0, 1]; t_shift positive")
        if not 1 <= self.frames_critic <= self.frames:
            raise ValueError(f"frames_critic must be in 1..frames ({self.frames})")
        if self.critic_reasoning not in CRITIC_REASONING or self.critic_tokens < 1:
            raise ValueError(f"critic_reasoning must be one of {CRITIC_REASONING}; critic_tokens at least 1")


# ----------------------------------------------------------------------------- triplets


@dataclass
class Triplet:
    id: str
    instruction: str
    source: Clip
    target: Clip
    subset: str | None = None  # icvg: the target is a new shot, nothing of the source is to be preserved


def load_triplets(config: ReviseConfig) -> tuple[list[Triplet], dict[str, dict]]:
    """All triplet records, validated before the first step, and their input fingerprints."""

    def to_triplet(source) -> Triplet:
        record = source.record
        instruction = text_field(record, "instruction")
        subset = choice_field(record, "subset", SUBSETS)
        access = MediaAccess(config.media_root, config.allow_escape)
        return Triplet(str(record.get("id")), instruction, read_clip(record, "source", source.base_dir, access),
                       read_clip(record, "target", source.base_dir, access), subset)

    return read_training_records(config.inputs, to_triplet, what="triplets")


# ----------------------------------------------------------------------------- recipe


class _RoutedEditor:
    """The editor with ``velocity`` going through the prepared module (DDP / FSDP)."""

    def __init__(self, editor: InContextEditor, velocity) -> None:
        self._editor = editor
        self.velocity = velocity

    def __getattr__(self, name: str):
        return getattr(self._editor, name)


class ReviseRecipe:
    """``setup()`` → ``train()`` → ``cleanup()``; one ``optimise()`` per step (see the module docstring)."""

    def __init__(self, config: ReviseConfig) -> None:
        self.config = config
        self.step = 0
        self.position = 0
        self.metrics: dict = {}
        self.started: RunStart | None = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, run = self.config, self.config.run
        check_output_dir(run.output_dir, run.resume)
        self.tasks, fingerprints = self.load_records()
        self.started = start = start_run(
            run, fingerprints, command="revise-tune", log_every=cfg.log_every,
            line_keys=("loss", "l_fm", "l_reason", "gated_fraction", "lr"),
            check_same_run=lambda folder, saved: check_same_tuning(folder, saved, cfg.finetune, "objective",
                                                                   cfg.objective),
            project="vidcli-revise", hparams=safe_arguments(cfg.arguments))
        acc = self.accelerator = start.accelerator
        self.monitor = start.monitor
        self.base_model = start.saved.get("base_model", cfg.model)
        self.build_models(start.device, acc.mixed_precision, start.resume_from)
        self.denoiser, self.optimizer = prepare_denoiser(acc, self.adapter, self.editor.velocity, run.optim)
        self.order = DataOrder(len(self.tasks), run.batch_size, run.seed, acc.num_processes, acc.process_index)
        self.total_steps = total_steps(run, self.order.batches_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, run.optim, self.total_steps)
        info = RunInfo("revise-tune", cfg.arguments, fingerprints,
                       {"finetune": cfg.finetune, "objective": cfg.objective, "base_model": str(self.base_model),
                        "vlm": cfg.vlm, "total_steps": self.total_steps,
                        "editor": {"layout": EDITOR_LAYOUT, "source_timestep": 0, "t_shift": cfg.t_shift},
                        **self.monitor.run_info()})
        self.checkpointer = Checkpointer(acc, run.output_dir, info)
        self.step, self.position, self.metrics = start.restore(self.checkpointer, self.scheduler, self.order)
        self.steps_log = StepLog(acc, run.output_dir / STEPS_LOG)
        self.steps_log.trim(self.step)
        log.info("revise-tune %s/%s: %d triplets, %d steps, %d trainable parameters", cfg.objective, cfg.finetune,
                 len(self.tasks), self.total_steps, sum(p.numel() for p in self.trainable))

    def build_models(self, device: str, mixed_precision: str | None, resume_from: Path | None = None) -> None:
        """Every model the run holds, placed and frozen or trainable; sets ``trainable``.

        The generator (:func:`~vidcli.train.dit_tuning.load_generator`), the frozen critic,
        the editor over the generator's DiT, then the DiT made trainable
        (:func:`~vidcli.train.dit_tuning.train_dit`). ``--plan`` builds the same on the meta
        device (:mod:`vidcli.weights`).
        """
        from vidcli.rewards.vlm import VLMScorer

        cfg = self.config
        self.mixed_precision = mixed_precision
        self.adapter = load_generator(cfg, device=device, mixed_precision=mixed_precision, resume_from=resume_from)
        if type(self.adapter).__name__ != "WanAdapter":
            raise InputError(f"{cfg.model}: revise-tune needs a WanPipeline folder (the editor is a Wan DiT)")
        scorer = VLMScorer.from_pretrained(cfg.vlm, device=device, dtype=self.frozen_dtype("vlm"))
        if cfg.vlm_checkpointing:
            scorer.checkpoint_activations()
        self.critic = Critic(scorer, reasoning=cfg.critic_reasoning, max_tokens=cfg.critic_tokens)
        self.scorer = self.critic.scorer
        self.editor = InContextEditor(self.adapter)
        self.clips: dict[str, dict] = {}  # per triplet: latents and critic frames (frozen VAE: computed once)
        self.trainable, self.lora_config = train_dit(self.adapter, cfg, resume_from)

    def load_records(self) -> tuple[list, dict[str, dict]]:
        """The run's triplets, validated, and their input fingerprints (``--plan`` reads them too)."""
        return load_triplets(self.config)

    def frozen_dtype(self, which: str) -> str:
        """The dtype a frozen model is held in: its flag's, or under ``auto`` the compute dtype."""
        return frozen_dtype(getattr(self.config, f"{which}_dtype"), self.mixed_precision)

    # ------------------------------------------------------------------ data

    def clip_data(self, task: Triplet) -> dict:
        """Source and target latents, the source frames the critic sees and the frame rates it is
        told (``--fps``, else F frames over each clip's length: edited as the target), cached per triplet."""
        from vidcli.diffusion.rollout import uniform_frame_indices

        if task.id not in self.clips:
            cfg = self.config
            pixels = {name: clip.pixels(cfg.frames, cfg.width, cfg.height)  # (T, 3, H, W)
                      for name, clip in (("source", task.source), ("target", task.target))}
            indices = uniform_frame_indices(cfg.frames, cfg.frames_critic)
            fps = tuple(cfg.fps or cfg.frames_critic / clip.seconds() for clip in (task.target, task.source))
            self.clips[task.id] = {
                "source": self.editor.encode(pixels["source"].permute(1, 0, 2, 3)[None]),
                "target": self.editor.encode(pixels["target"].permute(1, 0, 2, 3)[None]),
                "critic_source": pixels["source"][indices], "indices": indices, "critic_fps": fps}
        return self.clips[task.id]

    def draw(self, seed: int, shape: tuple[int, ...]) -> tuple[float, torch.Tensor, bool]:
        """(t, ε, drop the instruction?) from one generator seeded by ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        t = shifted_t(float(torch.rand((), generator=gen)), self.config.t_shift)
        drop = float(torch.rand((), generator=gen)) < self.config.cfg_drop
        eps = torch.randn(shape, generator=gen)
        return t, eps.to(self.adapter.device), drop

    def baseline(self, task: Triplet, data: dict) -> float:
        """Δ₀: the critic's margin on (source, source), without gradient. Computed once per
        triplet: the critic is frozen and its reasoning greedy, so it never changes."""
        if "delta0" not in data:
            source, (_, source_fps) = data["critic_source"], data["critic_fps"]
            with torch.no_grad():
                data["delta0"] = self.critic.judge(source, source, task.instruction, subset=task.subset,
                                                   fps=(source_fps, source_fps)).delta.item()
        return data["delta0"]

    def sample_seed(self, slot: int) -> int:
        """The draws' seed for the ``slot``-th triplet of this process's current micro-batch."""
        key = [self.config.run.seed, self.order.stream_index(self.position) + slot]
        return int(np.random.default_rng(key).integers(2**63))

    # ------------------------------------------------------------------ the loss of one triplet

    def sample_loss(self, task: Triplet, seed: int) -> tuple[torch.Tensor, dict]:
        """L for one triplet with the draws of ``seed``; returns the loss and its log entry."""
        cfg = self.config
        data = self.clip_data(task)
        x0, source = data["target"], data["source"]
        t, eps, drop = self.draw(seed, tuple(x0.shape))
        text = self.adapter.encode_prompt(["" if drop else task.instruction], None, 1.0).positive
        z_t = (1 - t) * x0 + t * eps
        v = self.denoiser(z_t, source, t, text)  # editor.velocity, through the prepared module
        l_fm = (v - (eps - x0)).pow(2).mean()
        entry = {"step": self.step + 1, "id": task.id, "t": t, "gated": False, "cfg_drop": drop,
                 "l_fm": l_fm.item(), "delta": None, "delta0": None, "l_reason": None, "p_yes": None,
                 "critique": None}
        loss = l_fm
        if cfg.objective != "sft" and t <= cfg.sigma_max:
            entry["gated"] = True
            x0_hat = z_t - t * v
            with torch.set_grad_enabled(cfg.objective == "uso" and torch.is_grad_enabled()):
                edited = self.adapter.decode(x0_hat, data["indices"])[0]
                delta, entry["critique"] = self.critic.judge(edited, data["critic_source"], task.instruction,
                                                             subset=task.subset, fps=data["critic_fps"])
            entry["delta"] = delta.item()
            if cfg.objective == "uso":
                delta0 = self.baseline(task, data)
                l_reason = -F.logsigmoid(delta - delta0)
                loss = l_fm + cfg.reason_weight * l_reason
                entry.update(delta0=delta0, l_reason=l_reason.item())
            else:
                p_yes = torch.softmax(torch.stack([delta, torch.zeros_like(delta)]), 0)[0]  # = σ(Δ)
                loss = p_yes * l_fm
                entry["p_yes"] = p_yes.item()
        entry["loss"] = loss.item()
        return loss, entry

    # ------------------------------------------------------------------ one optimiser step

    def optimise(self) -> list[dict]:
        """grad_accum micro-batches of triplets, mean gradient over triplets and processes, AdamW, logs.

        ``accelerator.backward`` divides by ``grad_accum``; the prepared module averages
        over processes on the step's last backward.
        """
        acc, run = self.accelerator, self.config.run
        entries = []
        for micro in range(run.grad_accum):
            _, indices = self.order.micro_batch(self.position)
            for slot, index in enumerate(indices):
                last = micro == run.grad_accum - 1 and slot == len(indices) - 1
                with synced(acc, self.denoiser, last):
                    # Mixed precision applies to the DiT (the prepared module autocasts its own
                    # forward); the VAE and the critic compute in the dtypes they are held in.
                    loss, entry = self.sample_loss(self.tasks[index], self.sample_seed(slot))
                    acc.backward(loss / len(indices))
                entries.append(entry)
            self.position += 1
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(acc, self.trainable, self.optimizer, self.scheduler, run.optim.max_grad_norm)
        self.step += 1
        self._log_step(entries, lr, grad_norm)
        return entries

    def _log_step(self, entries: list[dict], lr: float, grad_norm: float | None) -> None:
        cfg = self.config
        entries = self.steps_log.gather(entries)
        gated = [e for e in entries if e["gated"]]
        self.metrics = {"loss": sum(e["loss"] for e in entries) / len(entries),
                        "l_fm": sum(e["l_fm"] for e in entries) / len(entries),
                        "gated_fraction": len(gated) / len(entries), "lr": lr}
        if gated and cfg.objective == "uso":
            self.metrics["l_reason"] = sum(e["l_reason"] for e in gated) / len(gated)
        if grad_norm is not None:
            self.metrics["grad_norm"] = grad_norm
        self.monitor.step(self.step, self.metrics)
        self.steps_log.append(entries)

    # ------------------------------------------------------------------ loop

    def train(self) -> Path:
        """Run until ``total_steps``; return the folder holding the final model."""
        run = self.config.run
        self.monitor.begin(total_steps=self.total_steps, step=self.step,
                           samples_per_step=self.order.global_batch * run.grad_accum)
        if self.step >= self.total_steps:
            log.info("nothing to do: the run is at step %d of %d", self.step, self.total_steps)
            return self.finish(final_model(run.output_dir))
        if self.step == 0 and samples_due(run, 0, self.total_steps):
            self.log_samples()  # where the run starts from
        while self.step < self.total_steps:
            self.optimise()
            if samples_due(run, self.step, self.total_steps):
                self.log_samples()
            if run.save_every and self.step % run.save_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        return self.finish()

    # ------------------------------------------------------------------ what the run shows

    def log_samples(self) -> None:
        """The first ``--log-samples`` triplets edited by the DiT as it is now, beside their source, with
        the critic's Δ (and Δ₀) on the edit, to the trackers.

        Sampling is ``vidcli generate``'s for an editor; every process samples through the
        prepared module (as FSDP needs), the main process logs. No gradient; the training
        RNG is not touched.
        """
        from vidcli.diffusion.edit import edit_videos
        from vidcli.diffusion.generate import VideoModel, default_settings, to_uint8

        cfg, media = self.config, self.monitor.media
        model = VideoModel(str(cfg.model), self.adapter, "edit", {}, editor=_RoutedEditor(self.editor, self.denoiser))
        settings = default_settings(model, num_frames=cfg.frames, height=cfg.height, width=cfg.width,
                                    seed=cfg.run.seed)
        for task in self.tasks[:cfg.run.log_samples]:
            data = self.clip_data(task)
            edited = edit_videos(model, [task.instruction], [data["source"]], [task.id], settings)[0]
            with torch.no_grad():
                delta = self.critic.judge(edited[data["indices"]], data["critic_source"], task.instruction,
                                          subset=task.subset, fps=data["critic_fps"]).delta.item()
            delta0 = self.baseline(task, data)
            source, edit = to_uint8(task.source.pixels(cfg.frames, cfg.width, cfg.height)), to_uint8(edited)
            length = min(len(source), len(edit))
            pair = np.concatenate([source[:length], edit[:length]], axis=2)  # source | edit, frame by frame
            strip = [np.concatenate(list(video[data["indices"]]), axis=1) for video in (source, edit)]
            caption = f"{task.instruction} | critic Δ = {delta:.3f}, Δ₀ = {delta0:.3f}, Δ − Δ₀ = {delta - delta0:.3f}"
            media.video(f"samples/{task.id}", pair, settings.fps, self.step, caption=caption)
            media.image(f"samples/{task.id}/frames", np.concatenate(strip, axis=0), self.step, caption=caption)
            self.accelerator.log({f"samples/{task.id}/delta": delta,
                                  f"samples/{task.id}/delta_minus_delta0": delta - delta0}, step=self.step)


    # ------------------------------------------------------------------ saving

    def finish(self, done: Path | None = None) -> Path:
        """Save the final model (unless ``done`` holds it already); the run's summary goes with it
        and closes the run on stderr."""
        return self.monitor.finish(self.step, lambda summary: done or self.save_checkpoint(True, summary),
                                   logs=[self.steps_log.path])

    def save_checkpoint(self, final: bool = False, summary: dict | None = None) -> Path:
        """``checkpoint-STEP/`` (or, ``final``, the output folder itself): a pipeline folder
        (:func:`~vidcli.train.dit_tuning.save_pipeline`), trainer state and the run's summary so far."""
        def save_weights(folder: Path) -> None:
            save_pipeline(folder, self.adapter, self.config, base_model=self.base_model, lora_config=self.lora_config)

        return self.checkpointer.save(self.step, save_weights=save_weights, scheduler=self.scheduler,
                                      micro_batches=self.position, metrics=self.metrics, final=final,
                                      order=self.order,
                                      summary=summary or self.monitor.summary(self.step, logs=[self.steps_log.path]))

    def cleanup(self) -> None:
        if self.started is not None:
            self.started.close()


def run_revise(config: ReviseConfig) -> Path:
    """Set up, train and clean up one revise-tune run; returns the folder with the final model."""
    return run_recipe(ReviseRecipe(config))
