"""Diffusion-DRF (SPEC §6): fine-tune a video DiT on a frozen VLM's answer likelihoods.

One optimiser step takes ``grad_accum`` caption records per process, one video each:

1. **Rollout** from noise seeded by ``(seed, the record's place in the data stream)``
   (:meth:`~vidcli.train.core.DataOrder.stream_index`) with ``steps`` denoising steps;
   the first T−K run without gradient, the last K with gradient, each under activation
   checkpointing (:func:`~vidcli.diffusion.rollout.truncated_rollout`).
2. **Decode** only the N_f frames the reward needs, spread uniformly over the video
   (:func:`~vidcli.diffusion.rollout.uniform_frame_indices`), through the frozen VAE.
3. **Reward** from the frozen VLM on those frames (differentiable preprocessing):
   ``vanilla``: loss −log p(Yes | video, "does it match the prompt?");
   ``rich``: L_VQA = −Σ_i log p(y_i | c_i), y_i the whole reference answer (verdict and
   explanation) of each question of the chosen dimensions; TA sees the generated video,
   Phy and VQ also the caption-matched real video (record field ``video``);
   ``binary``: the same with only each reference verdict scored.
4. **Backward** one query at a time: the decoded frames are cut from the graph, each
   query's loss is back-propagated into them (so only one VLM graph is alive at a time),
   then the summed frame gradient goes back through the VAE and the last K steps into
   the DiT. The summed frame gradient is also what ``--save-grad-heatmaps`` draws
   (:mod:`vidcli.train.heatmaps`; with ``--heatmap-per-question``, each query's share too).
5. **Update** the DiT (all weights, or LoRA adapters on its attention and feed-forward
   projections) with AdamW on the mean gradient over the step's records; VAE, text
   encoder and VLM never change. Over processes the mean is taken by the module
   accelerate prepares (:class:`TrainedDenoiser`), on the step's last backward.

Checkpoints are diffusers pipeline folders: ``transformer/`` is the tuned DiT
(``full``) and the other components link to the base pipeline, so
``WanPipeline.from_pretrained(OUTPUT)`` loads the tuned model. With ``lora`` the base
transformer is linked too and the adapter is ``pytorch_lora_weights.safetensors``:
``pipe = WanPipeline.from_pretrained(OUTPUT); pipe.load_lora_weights(OUTPUT)``.
Each step's per-query log-likelihoods go to ``OUTPUT/rewards.jsonl``.

**What the trackers get** (``--report-to``), besides the step's scalars: at step 0 of a
fresh run, every ``--log-samples-every`` steps and at the last step, the videos of the
first ``--log-samples`` records' prompts sampled without gradient by the DiT as it is
then — the rollout's settings, each prompt's noise fixed by ``(--seed, record id)`` as
``vidcli generate`` seeds it, so one prompt is watched changing over the run — as an
animated GIF and a strip of its N_f reward frames; and the heatmap figure of the
step's first record.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidcli.train.checkpoint import Checkpointer, RunInfo, check_output_dir, safe_arguments
from vidcli.train.core import RunConfig, run_recipe
from vidcli.train.dit_tuning import (FINETUNE, check_same_tuning, frozen_dtype, load_generator, prepare_denoiser,
                                     samples_due, save_pipeline, synced, train_dit)
from vidcli.train.drf_data import Task, load_tasks
from vidcli.train.optim import build_scheduler, clip_and_step, total_steps
from vidcli.train.order import DataOrder
from vidcli.train.start import RunStart, final_model, start_run
from vidcli.train.steplog import StepLog

log = logging.getLogger("vidcli.train")

REWARDS = ("vanilla", "rich", "binary")
DIMS = ("TA", "Phy", "VQ")
REWARDS_LOG = "rewards.jsonl"


@dataclass
class DRFConfig:
    """Everything one drf-tune run needs (the CLI fills it from its flags)."""

    model: str  # diffusers pipeline folder (WanPipeline or CogVideoXPipeline)
    vlm: str  # Qwen2-VL / Qwen2.5-VL folder
    inputs: list[str]
    run: RunConfig
    reward: str = "rich"
    dims: tuple[str, ...] = DIMS
    frames_vlm: int = 10
    k_grad: int = 4
    steps: int = 25
    guidance: float = 5.0
    shift: float | None = None  # the sampling scheduler's flow shift; None: the checkpoint's own
    height: int = 288
    width: int = 512
    frames: int = 49
    fps: float | None = None  # rate the VLM is told the N_f generated frames have; None: their real rate
    finetune: str = "full"
    lora_rank: int = 64
    lora_alpha: int = 64
    gradient_checkpointing: bool = False  # inside the DiT
    checkpoint_steps: bool = True  # per denoising step
    decode_checkpointing: bool = True  # the VAE decode keeps only its latents until backward
    vlm_dtype: str = "auto"  # auto: the compute dtype (bf16 under bf16 mixed precision)
    text_encoder_dtype: str = "auto"
    vae_dtype: str = "float32"  # as Wan advises; bf16 halves the differentiable decode's memory
    vlm_checkpointing: bool = False  # recompute the frozen VLM's layers in backward
    offload_text_encoder: bool = False
    heatmaps_dir: str | None = None
    heatmap_samples: int = 4
    heatmap_per_question: bool = False  # one heatmap row per question (its own gradient), not only the sum
    media_root: str | None = None
    allow_escape: bool = False
    log_every: int = 10
    arguments: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reward not in REWARDS or self.finetune not in FINETUNE:
            raise ValueError(f"reward must be one of {REWARDS} and finetune one of {FINETUNE}")
        if not self.dims or set(self.dims) - set(DIMS):
            raise ValueError(f"dims must be a non-empty subset of {DIMS}")
        if not 1 <= self.k_grad <= self.steps:
            raise ValueError(f"k_grad must be in 1..steps ({self.steps})")
        if not 1 <= self.frames_vlm <= self.frames:
            raise ValueError(f"frames_vlm must be in 1..frames ({self.frames})")


class _RoutedAdapter:
    """The generator adapter with ``denoise`` going through the prepared module."""

    def __init__(self, adapter, denoise) -> None:
        self._adapter = adapter
        self.denoise = denoise

    def __getattr__(self, name: str):
        return getattr(self._adapter, name)


class DRFRecipe:
    """``setup()`` → ``train()`` → ``cleanup()``; ``save_checkpoint()`` in between."""

    def __init__(self, config: DRFConfig) -> None:
        self.config = config
        self.step = 0
        self.position = 0
        self.metrics: dict = {}
        self.heatmaps_written = 0
        self.started: RunStart | None = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, run = self.config, self.config.run
        check_output_dir(run.output_dir, run.resume)
        self.tasks, fingerprints = self.load_records()
        self.started = start = start_run(
            run, fingerprints, command="drf-tune", log_every=cfg.log_every, line_keys=("loss", "reward", "lr"),
            check_same_run=lambda folder, saved: check_same_tuning(folder, saved, cfg.finetune, "reward", cfg.reward),
            project="vidcli-drf", hparams=safe_arguments(cfg.arguments))
        acc = self.accelerator = start.accelerator
        self.monitor = start.monitor
        self.base_model = start.saved.get("base_model", cfg.model)
        self.build_models(start.device, acc.mixed_precision, start.resume_from)
        self.denoiser, self.optimizer = prepare_denoiser(acc, self.adapter, self.adapter.denoise, run.optim)
        self.rollout_adapter = _RoutedAdapter(self.adapter, self.denoiser)
        self.order = DataOrder(len(self.tasks), 1, run.seed, acc.num_processes, acc.process_index)  # one video
        self.total_steps = total_steps(run, self.order.batches_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, run.optim, self.total_steps)
        info = RunInfo("drf-tune", cfg.arguments, fingerprints,
                       {"finetune": cfg.finetune, "reward": cfg.reward, "base_model": str(self.base_model),
                        "vlm": cfg.vlm, "total_steps": self.total_steps, **self.monitor.run_info()})
        self.checkpointer = Checkpointer(acc, run.output_dir, info)
        self.step, self.position, self.metrics = start.restore(self.checkpointer, self.scheduler, self.order)
        self.rewards_log = StepLog(acc, run.output_dir / REWARDS_LOG)
        self.rewards_log.trim(self.step)
        log.info("drf-tune %s/%s: %d records, %d steps, %d trainable parameters", cfg.reward, cfg.finetune,
                 len(self.tasks), self.total_steps, sum(p.numel() for p in self.trainable))

    def build_models(self, device: str, mixed_precision: str | None, resume_from: Path | None = None) -> None:
        """Every model the run holds, placed and frozen or trainable; sets ``trainable``.

        The generator (:func:`~vidcli.train.dit_tuning.load_generator`), the frozen reward
        model, then the DiT made trainable (:func:`~vidcli.train.dit_tuning.train_dit`).
        ``--plan`` builds the same on the meta device (:mod:`vidcli.weights`).
        """
        from vidcli.rewards.vlm import VLMScorer

        cfg = self.config
        self.mixed_precision = mixed_precision
        self.adapter = load_generator(cfg, device=device, mixed_precision=mixed_precision, resume_from=resume_from)
        self.scorer = VLMScorer.from_pretrained(cfg.vlm, device=device, dtype=self.frozen_dtype("vlm"))
        if cfg.vlm_checkpointing:
            self.scorer.checkpoint_activations()
        self.trainable, self.lora_config = train_dit(self.adapter, cfg, resume_from)

    def load_records(self) -> tuple[list, dict[str, dict]]:
        """The run's records, validated, and their input fingerprints (``--plan`` reads them too)."""
        return load_tasks(self.config)

    def frozen_dtype(self, which: str) -> str:
        """The dtype a frozen model is held in: its flag's, or under ``auto`` the compute dtype."""
        return frozen_dtype(getattr(self.config, f"{which}_dtype"), self.mixed_precision)

    # ------------------------------------------------------------------ one step

    def noise_seed(self) -> int:
        """The rollout's seed: a function of (seed, the record's place in the data stream), so a
        resumed run, or a run split over another number of processes, draws the same noise."""
        return int(np.random.default_rng([self.config.run.seed, self.order.stream_index(self.position)])
                   .integers(2**63))

    def native_fps(self) -> float:
        """The rate the generator makes videos at (Wan 16 fps, CogVideoX 8)."""
        from vidcli.diffusion.generate import FAMILY_FPS

        return FAMILY_FPS.get(type(self.adapter.pipe).__name__, 16.0)

    def generated_fps(self) -> float:
        """The frame rate the VLM is told the N_f generated frames have.

        ``--fps`` when given; else their real rate: N_f frames spread over a video of
        ``frames`` frames at the generator's own rate (Wan 16 fps, CogVideoX 8), e.g. 10 of
        49 at 16 fps ≈ 3.3 fps — the rate score vqa and decompose give a real video's frames.
        """
        cfg = self.config
        if cfg.fps is not None:
            return cfg.fps
        return self.native_fps() * cfg.frames_vlm / cfg.frames

    def reference_frames(self, task: Task) -> tuple[torch.Tensor, float] | None:
        """N_f frames of the caption-matched real video, (F, 3, H, W) in [0, 1], and their real
        rate (frames over the video's duration); None when unused."""
        from vidcli.media import load_video
        from vidcli.scoring.vqa import clip_tensor

        if task.video is None:
            return None
        return clip_tensor(load_video(task.video, num_frames=self.config.frames_vlm))

    def query_losses(self, frames: torch.Tensor, task: Task):
        """Yield ``(query log entry, loss)`` for each query; the losses sum to the step's loss."""
        from vidcli.rewards.vlm import vanilla_reward, vqa_loss

        cfg = self.config
        fps = self.generated_fps()
        if cfg.reward == "vanilla":
            logp_yes = vanilla_reward(self.scorer, frames, task.prompt, fps=fps)
            yield {"dim": "vanilla", "key": "prompt", "logp_yes": logp_yes.item()}, -logp_yes
            return
        reference, reference_fps = self.reference_frames(task) or (None, None)
        for question in task.questions:
            loss = vqa_loss(self.scorer, frames, [question], reference_frames=reference, fps=fps,
                            reference_fps=reference_fps, verdict_only=cfg.reward == "binary")
            yield {"dim": question.get("dim"), "key": question.get("key"), "loglik": -loss.item()}, loss

    def train_step(self, task: Task, per_query: bool = False) -> dict:
        """Rollout, decode, reward, backward for one record; returns its log entry, the frames and their
        gradient (``per_query``: also each query's own, on the CPU, for a heatmap row per question)."""
        from vidcli.diffusion.rollout import truncated_rollout, uniform_frame_indices

        cfg = self.config
        latents = truncated_rollout(
            self.rollout_adapter, [task.prompt], steps=cfg.steps, guidance=cfg.guidance, k_grad=cfg.k_grad,
            height=cfg.height, width=cfg.width, frames=cfg.frames, seed=self.noise_seed(),
            checkpoint_steps=cfg.checkpoint_steps)
        decoded = self.adapter.decode(latents, uniform_frame_indices(cfg.frames, cfg.frames_vlm))[0]
        # Cut the graph at the frames: each query's VLM graph is freed right after its backward.
        frames = decoded.detach().requires_grad_(True)
        queries, total, query_grads = [], 0.0, []
        for entry, loss in self.query_losses(frames, task):
            before = frames.grad.detach().clone() if per_query and frames.grad is not None else None
            loss.backward()
            if per_query:  # this query's share: the gradient it added (a copy: frames.grad accumulates in place)
                share = frames.grad - before if before is not None else frames.grad
                query_grads.append(share.detach().to("cpu", copy=True))
            queries.append(entry)
            total += loss.item()
        self.accelerator.backward(decoded, gradient=frames.grad)
        return {"id": task.id, "prompt": task.prompt, "loss": total, "queries": queries, "frames": frames.detach(),
                "frame_grad": frames.grad.detach(), "query_grads": query_grads, "questions": task.questions}

    # ------------------------------------------------------------------ loop

    def optimise(self) -> list[dict]:
        """One optimiser step: ``grad_accum`` records through train_step, AdamW on the mean gradient, logs.

        ``accelerator.backward`` divides by ``grad_accum``; the prepared module averages
        over processes.
        """
        acc, run = self.accelerator, self.config.run
        results = []
        for micro in range(run.grad_accum):
            _, (index,) = self.order.micro_batch(self.position)
            with synced(acc, self.denoiser, micro == run.grad_accum - 1):
                results.append(self.train_step(self.tasks[index], per_query=self.wants_heatmap(micro)))
            self.position += 1
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = clip_and_step(acc, self.trainable, self.optimizer, self.scheduler, run.optim.max_grad_norm)
        self.step += 1
        self._log_step(results, lr, grad_norm)
        return results

    def train(self) -> Path:
        """Run until ``total_steps``; return the folder holding the final model."""
        run = self.config.run
        self.monitor.begin(total_steps=self.total_steps, step=self.step,
                           samples_per_step=self.order.global_batch * run.grad_accum)
        if self.step >= self.total_steps:
            log.info("nothing to do: the run is at step %d of %d", self.step, self.total_steps)
            return self.finish(final_model(run.output_dir))
        if self.step == 0 and self.samples_due(0):
            self.log_samples()  # where the run starts from
        while self.step < self.total_steps:
            self.optimise()
            if self.samples_due(self.step):
                self.log_samples()
            if run.save_every and self.step % run.save_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        return self.finish()

    def _log_step(self, results: list[dict], lr: float, grad_norm: float | None) -> None:
        acc, cfg = self.accelerator, self.config
        entries = self.rewards_log.gather([{"step": self.step, "id": r["id"], "loss": r["loss"],
                                            "queries": r["queries"]} for r in results])
        mean_loss = sum(e["loss"] for e in entries) / len(entries)
        self.metrics = {"loss": mean_loss, "reward": -mean_loss, "lr": lr}
        if grad_norm is not None:
            self.metrics["grad_norm"] = grad_norm
        self.monitor.step(self.step, self.metrics)
        self.rewards_log.append(entries)
        if acc.is_main_process:
            for result in results:
                if cfg.heatmaps_dir and self.heatmaps_written < cfg.heatmap_samples:
                    path = Path(cfg.heatmaps_dir) / f"step{self.step:06d}-{result['id']}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.heatmap(result).savefig(path, format="png", dpi=100)
                    self.heatmaps_written += 1
            if self.samples_due(self.step) and self.monitor.media.active:
                from vidcli.train.heatmaps import figure_pixels

                self.monitor.media.image("heatmaps", figure_pixels(self.heatmap(results[0])), self.step,
                                         caption=results[0]["prompt"])

    # ------------------------------------------------------------------ what the run shows

    def samples_due(self, step: int) -> bool:
        """Whether the trackers get media at ``step`` (:func:`~vidcli.train.dit_tuning.samples_due`)."""
        return samples_due(self.config.run, step, self.total_steps)

    def wants_heatmap(self, micro: int) -> bool:
        """Whether micro-batch ``micro`` of the coming step is drawn, and so needs its per-question gradients."""
        cfg = self.config
        if not cfg.heatmap_per_question or not self.accelerator.is_main_process:
            return False
        to_file = bool(cfg.heatmaps_dir) and self.heatmaps_written + micro < cfg.heatmap_samples
        return to_file or (micro == 0 and self.monitor.media.active and self.samples_due(self.step + 1))

    def heatmap(self, result: dict):
        """The heatmap figure (matplotlib) of one train_step result."""
        from vidcli.diffusion.rollout import uniform_frame_indices
        from vidcli.train.heatmaps import heatmap_figure, question_label

        cfg = self.config
        rows = [("R (sum of all queries)" if len(result["queries"]) > 1 else "R", result["frame_grad"].cpu())]
        if result["query_grads"]:
            labels = [question_label(q) for q in result["questions"]] if cfg.reward != "vanilla" \
                else ["vanilla: p(Yes | prompt)"]
            rows += list(zip(labels, result["query_grads"]))
        times = [i / self.native_fps() for i in uniform_frame_indices(cfg.frames, cfg.frames_vlm)]
        title = f"{result['prompt']}  (step {self.step}, record {result['id']})"
        return heatmap_figure(result["frames"].cpu(), rows, times=times, title=title)

    def sample_settings(self):
        """How the watched prompts are sampled: the rollout's steps, guidance and size; seeded as generate seeds."""
        from vidcli.diffusion.generate import Settings

        cfg = self.config
        return Settings(steps=cfg.steps, guidance=cfg.guidance, num_frames=cfg.frames, height=cfg.height,
                        width=cfg.width, fps=self.native_fps(), seed=cfg.run.seed)

    def log_samples(self) -> None:
        """The first ``--log-samples`` records' videos as the DiT makes them now, to the trackers.

        Every process samples (through the prepared module, which FSDP needs on all of
        them); the main process logs. No gradient; the training RNG is not touched (the
        noise comes from each record's own generator).
        """
        from vidcli.diffusion.generate import VideoModel, generate_videos, to_uint8
        from vidcli.diffusion.rollout import uniform_frame_indices

        cfg, media = self.config, self.monitor.media
        settings = self.sample_settings()
        model = VideoModel(str(cfg.model), self.rollout_adapter, "t2v", {})
        strip = uniform_frame_indices(cfg.frames, cfg.frames_vlm)
        for task in self.tasks[:cfg.run.log_samples]:
            frames = to_uint8(generate_videos(model, [task.prompt], [task.id], settings)[0])
            media.video(f"samples/{task.id}", frames, settings.fps, self.step, caption=task.prompt)
            media.image(f"samples/{task.id}/frames", np.concatenate(list(frames[strip]), axis=1), self.step,
                        caption=task.prompt)

    # ------------------------------------------------------------------ saving

    def finish(self, done: Path | None = None) -> Path:
        """Save the final model (unless ``done`` holds it already); the run's summary goes with it
        and closes the run on stderr."""
        return self.monitor.finish(self.step, lambda summary: done or self.save_checkpoint(True, summary),
                                   logs=[self.rewards_log.path])

    def save_checkpoint(self, final: bool = False, summary: dict | None = None) -> Path:
        """``checkpoint-STEP/`` (or, ``final``, the output folder itself): a pipeline folder
        (:func:`~vidcli.train.dit_tuning.save_pipeline`), trainer state and the run's summary so far."""
        def save_weights(folder: Path) -> None:
            save_pipeline(folder, self.adapter, self.config, base_model=self.base_model, lora_config=self.lora_config)

        return self.checkpointer.save(self.step, save_weights=save_weights, scheduler=self.scheduler,
                                      micro_batches=self.position, metrics=self.metrics, final=final,
                                      order=self.order,
                                      summary=summary or self.monitor.summary(self.step, logs=[self.rewards_log.path]))

    def cleanup(self) -> None:
        if self.started is not None:
            self.started.close()


def run_drf(config: DRFConfig) -> Path:
    """Set up, train and clean up one drf-tune run; returns the folder with the final model."""
    return run_recipe(DRFRecipe(config))
