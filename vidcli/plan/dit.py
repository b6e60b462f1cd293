"""Memory plans of the DiT trainers, ``drf-tune`` and ``revise-tune``.

**drf-tune**, one record per process and micro-batch, in the order the step runs:

1. rollout: T−K steps without gradient, then K with it; under step checkpointing each
   of the K keeps its input latent only (counted), without it each keeps the DiT's saved
   tensors of one guided evaluation (measured, below);
2. decode: the N_f frames through the VAE — with ``--decode-checkpointing`` only the
   latents and the frames are held (measured), without it the decoder's saved tensors;
3. reward: one VLM query at a time, forward and backward to the frames (measured: the
   largest query, the Phy/VQ form with the reference video beside the generated one);
4. backward: the decode's backward (measured; frame by frame under checkpointing), then
   each of the K steps recomputed and back-propagated, one at a time (the DiT's saved
   tensors of one step, its backward transient, and under ``--gradient-checkpointing`` one
   block recomputed).

The peak is the largest of the phases 3 and 4 over the static memory (weights,
gradients, optimiser state); gradients exist from the first step's backward on (from the
start with ``--grad-accum`` above 1).

**revise-tune**, per triplet: the editor's forward on target + source tokens keeps its
saved tensors; when the critic judges (t ≤ σ_max) the x̂0 decode and the critic's forward
and backward come on top (its Δ₀ forward, without gradient, is smaller); then the decode's
and the DiT's backward. The plan is for a triplet the critic judges (the worst case).

DiT, VAE and VLM probes run on copies cut to one and two blocks (the VAE whole: it is
small) at a small fraction of the run's tokens, frames and pixels, and are scaled as
:mod:`vidcli.plan.probe` says: DiT bytes linear in tokens, VAE bytes linear in pixels
per frame and in latent frames, VLM bytes linear in frames.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import torch

from vidcli import weights
from vidcli.plan.interpreter import _autocast, ordinary_ids
from vidcli.plan.meter import LiveTensors, SavedTensors
from vidcli.plan.probe import Reading, cut_copy, depths_of, fake_mode, fit_depths, materialise, measure, remembered, stacks
from vidcli.plan.report import Phase, Plan, Term, count_text
from vidcli.plan.static import Sharding, trained_terms, weight_term

# Text lengths of one query (tokens), from the prompt templates with a caption of ~60 words
# and reference answers of ≤ 50 words; the reasoning a critic writes first is ≤ 64 tokens.
QUERY_TOKENS = {"TA": (70, 80), "Phy": (230, 120), "VQ": (170, 100), "vanilla": (90, 1), "critic": (330, 2)}


# ----------------------------------------------------------------------------- the DiT


def _latent_geometry(adapter, frames: int, height: int, width: int) -> tuple[int, int, int]:
    pipe = adapter.pipe
    t = (frames - 1) // pipe.vae_scale_factor_temporal + 1
    return t, height // pipe.vae_scale_factor_spatial, width // pipe.vae_scale_factor_spatial


def _tokens(adapter, latent: tuple[int, int, int]) -> int:
    patch = adapter.pipe.transformer.config.patch_size
    ph, pw = (patch[1], patch[2]) if isinstance(patch, (list, tuple)) else (patch, patch)
    t, h, w = latent
    return t * (h // ph) * (w // pw)


class DiTProbe:
    """One DiT evaluation's memory, forward and backward, on cut copies of the meta build."""

    def __init__(self, adapter, mixed_precision: str | None, *, editor: bool, checkpoint_step: bool,
                 guidance: float) -> None:
        self.adapter = adapter
        self.mixed_precision = mixed_precision
        self.meta = adapter.pipe.transformer
        self.editor = editor
        self.checkpoint_step = checkpoint_step
        self.guidance = guidance
        self.fake = fake_mode()

    def _adapter(self, blocks: int):
        dit = cut_copy(self.meta, {"blocks": blocks}, self.fake)
        dit.train()
        clone = copy.copy(self.adapter)
        clone.pipe = copy.copy(self.adapter.pipe)
        clone.pipe.__dict__["transformer"] = dit
        clone.device = torch.device("cpu")
        return clone, dit

    def _inputs(self, clone, latent: tuple[int, int, int]):
        from vidcli.diffusion import TextEmbeds

        pipe = clone.pipe
        config = pipe.transformer.config
        dtype = next(pipe.transformer.parameters()).dtype
        width = getattr(config, "text_dim", None) or getattr(config, "text_embed_dim", 4096)
        length = getattr(clone, "max_sequence_length", 512)
        text = torch.zeros(1, length, width, dtype=dtype)
        embeds = TextEmbeds(text, text.clone() if self.guidance > 1 else None)
        t, h, w = latent
        channels = config.in_channels
        shape = (1, t, channels, h, w) if type(clone).__name__ == "CogVideoXAdapter" else (1, channels, t, h, w)
        return torch.zeros(shape), embeds

    def step(self, blocks: int, latent: tuple[int, int, int]) -> Reading:
        """Bytes held after one evaluation's forward and its peak through the backward (gradients excluded):
        the guided denoiser step of a rollout (under step checkpointing when the run uses it), or the
        editor's velocity on target + source tokens."""
        from torch.utils.checkpoint import checkpoint

        clone, dit = self._adapter(blocks)
        with self.fake:
            x, embeds = self._inputs(clone, latent)
        t = torch.tensor(900.0)

        def call():
            if self.editor:
                from vidcli.diffusion.editor import InContextEditor

                return InContextEditor(clone).velocity(x, x.clone(), 0.5, embeds.positive)
            if self.checkpoint_step:
                return checkpoint(clone.denoise, x, t, embeds, self.guidance, use_reentrant=False)
            return clone.denoise(x, t, embeds, self.guidance)

        def run(meter: LiveTensors) -> int:
            with _autocast(self.mixed_precision):
                out = call()
            held = meter.current
            out.float().sum().backward()
            return held

        return measure(run, dit.parameters(), self.fake)


@dataclass
class DiTActivations:
    held: float  # after one evaluation's forward, until its backward
    peak: float  # through one evaluation's forward and backward
    blocks: int


def fit_dit(probe: DiTProbe, latent: tuple[int, int, int]) -> DiTActivations:
    """Read at 1 and 2 blocks on the run's latent (t, h, w); evaluate at the run's blocks."""
    blocks = len(stacks(probe.meta)["blocks"])
    readings = {n: probe.step(n, latent) for n in (1, 2)}
    held = fit_depths(lambda d: readings[d["blocks"]].held, ["blocks"]).total({"blocks": blocks})
    peak = fit_depths(lambda d: readings[d["blocks"]].peak, ["blocks"]).total({"blocks": blocks})
    return DiTActivations(held, max(peak, held), blocks)


# ----------------------------------------------------------------------------- the VAE decode


@dataclass
class DecodeActivations:
    held: float  # from the decode's forward until its backward
    backward_peak: float  # during its backward, over what it held


def fit_decode(adapter, latent: tuple[int, int, int], indices: list[int], checkpointing: bool) -> DecodeActivations:
    """Held and backward-peak bytes of the differentiable decode of the frames at ``indices``
    from a latent of (t, h, w), measured (shapes only) on the whole VAE at the run's size."""
    fake = fake_mode()
    vae = copy.deepcopy(adapter.pipe.vae)
    with fake:
        materialise(vae)
    clone = copy.copy(adapter)
    clone.pipe = copy.copy(adapter.pipe)
    clone.pipe.__dict__["vae"] = vae
    clone.decode_checkpointing = checkpointing
    t, h, w = latent
    cog = type(clone).__name__ == "CogVideoXAdapter"
    with fake:
        shape = (1, t, vae.config.latent_channels, h, w) if cog else (1, vae.config.z_dim, t, h, w)
        z = torch.zeros(shape, requires_grad=True)

    def run(meter: LiveTensors) -> int:
        out = clone.decode(z, indices)
        held = meter.current
        meter.reset_peak()
        out.sum().backward()
        return held

    meter_reading = measure(run, (), fake)
    return DecodeActivations(meter_reading.held, max(0, meter_reading.peak - meter_reading.held))


# ----------------------------------------------------------------------------- the VLM


def _video_processor(scorer):
    from transformers import Qwen2VLVideoProcessor

    processor = scorer.processor
    if processor is not None and getattr(processor, "video_processor", None) is not None:
        return processor.video_processor
    vision = scorer.model.config.vision_config
    return Qwen2VLVideoProcessor(patch_size=getattr(vision, "patch_size", 14),
                                 temporal_patch_size=getattr(vision, "temporal_patch_size", 2),
                                 merge_size=getattr(vision, "spatial_merge_size", 2))


def query_inputs(model, videos: list, text_tokens: int, answer_tokens: int) -> tuple[dict, int]:
    """Forward inputs shaped like a scorer query: each video's tokens, the question, the answer."""
    import inspect

    config = model.config
    video_id = getattr(config, "video_token_id", None)
    start, end = getattr(config, "vision_start_token_id", None), getattr(config, "vision_end_token_id", None)
    merge = config.vision_config.spatial_merge_size ** 2
    ids: list[int] = []
    for video in videos:
        ids += [start] if start is not None else []
        ids += [video_id] * (int(video.grid_thw.prod()) // merge)
        ids += [end] if end is not None else []
    ordinary = ordinary_ids(model)
    ids += [i % ordinary for i in range(text_tokens + answer_tokens)]
    input_ids = torch.tensor([ids])
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
              "pixel_values_videos": torch.cat([v.pixel_values for v in videos]),
              "video_grid_thw": torch.stack([v.grid_thw for v in videos])}
    accepted = inspect.signature(model.forward).parameters
    if "second_per_grid_ts" in accepted:
        inputs["second_per_grid_ts"] = torch.tensor([1.0] * len(videos))
    if "mm_token_type_ids" in accepted:
        inputs["mm_token_type_ids"] = (input_ids == video_id).long() * 2
    return inputs, answer_tokens


class VLMProbe:
    """Peak bytes of one frozen-VLM query with gradients to the generated frames (shapes only)."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.meta = scorer.model
        self.vp = _video_processor(scorer)
        self.kinds = [k for k in ("text", "vision") if k in stacks(self.meta)]
        self.fake = fake_mode()

    def peak(self, depths: dict[str, int], frames: int, height: int, width: int, *, reference: bool,
             text: int, answer: int, margin: bool = False) -> int:
        from vidcli.rewards.vlm import video_pixels

        model = cut_copy(self.meta, depths, self.fake)
        dtype = next(model.parameters()).dtype
        with self.fake:
            generated = torch.zeros(frames, 3, height, width, requires_grad=True)
            real = torch.zeros(frames, 3, height, width)

        def run(meter: LiveTensors) -> None:
            videos = [video_pixels(self.vp, generated)]
            if reference:
                with torch.no_grad():
                    videos.append(video_pixels(self.vp, real))
            for video in videos:
                video.pixel_values = video.pixel_values.to(dtype)
                video.grid_thw = torch.tensor(video.grid_thw.tolist())  # the grid stays a real tensor
            inputs, n = query_inputs(model, videos, text, answer)
            logits = model(**inputs, logits_to_keep=n + 1).logits[0, :-1]
            if margin:
                out = logits[-1, 0].float() - logits[-1, 1].float()
            else:
                logp = torch.log_softmax(logits.float(), dim=-1)
                out = logp.gather(1, inputs["input_ids"][0, -n:, None])[:, 0].sum()
            out.backward()

        return measure(run, (), self.fake).peak


def fit_vlm(probe: VLMProbe, frames: int, height: int, width: int, *, reference: bool, text: int, answer: int,
            margin: bool = False) -> float:
    """Peak bytes of one query at the run's frames and depth (1 and 2 layers per stack, × layers)."""
    return fit_depths(lambda d: probe.peak(d, frames, height, width, reference=reference, text=text, answer=answer,
                                           margin=margin), probe.kinds).total(depths_of_kinds(probe))


def depths_of_kinds(probe: VLMProbe) -> dict[str, int]:
    return {k: v for k, v in depths_of(probe.meta).items() if k in probe.kinds}


def query_tokens(recipe, scorer, kinds: list[str]) -> tuple[dict[str, tuple[int, int]], str]:
    """(question, answer) tokens of the longest query of each kind in the run's records, counted
    with the VLM's tokenizer; the assumed lengths (:data:`QUERY_TOKENS`) when the folder has no
    tokenizer or the records cannot be read. Also says which it was."""
    from vidcli.errors import InputError

    assumed = {k: QUERY_TOKENS[k] for k in kinds}
    if "critic" in kinds and recipe.config.critic_reasoning == "none":
        assumed["critic"] = (QUERY_TOKENS["critic"][0], 2)
    if scorer.processor is None:
        return assumed, "assumed (the VLM folder has no tokenizer)"
    try:
        records = recipe.load_records()[0]
    except (InputError, OSError) as exc:
        return assumed, f"assumed (records not read: {exc})"
    tokenizer = scorer.processor.tokenizer
    overhead = 24  # chat template: roles, turn marks, the video slots' start/end tokens

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    found: dict[str, tuple[int, int]] = {}
    if "critic" in kinds:
        cfg = recipe.config
        reasoning = cfg.critic_tokens + 4 if cfg.critic_reasoning == "first" else 0  # and the verdict cue
        for task in records[:2000]:
            question = recipe.critic.question(task.instruction, getattr(task, "subset", None))
            found["critic"] = max(found.get("critic", (0, 0)), (count(question) + overhead + reasoning, 2))
    else:
        from vidcli.rewards.vlm import VANILLA_QUESTION, reference_answer

        for task in records[:2000]:
            if "vanilla" in kinds:
                found["vanilla"] = max(found.get("vanilla", (0, 0)),
                                       (count(VANILLA_QUESTION.format(prompt=task.prompt)) + overhead, 2))
            for question in task.questions:
                pair = (count(question["question"]) + overhead, count(reference_answer(question)) + 1)
                found[question["dim"]] = max(found.get(question["dim"], (0, 0)), pair, key=sum)
    if not found:
        return assumed, "assumed (no queries in the records)"
    return found, f"counted in the {len(records)} records with the VLM's tokenizer"


# ----------------------------------------------------------------------------- plans


def _frozen_terms(recipe, sharding: Sharding, scorer) -> list[Term]:
    pipe = recipe.adapter.pipe
    cfg = recipe.config
    terms = []
    trained_dit = cfg.finetune == "full"
    terms.append(weight_term(f"DiT ({'trained' if trained_dit else 'frozen base + LoRA'})", pipe.transformer,
                             sharding, trained=trained_dit))
    if cfg.offload_text_encoder:
        terms.append(Term("weights", "text encoder", 0.0, "offloaded: in CPU memory between prompt encodings"))
    else:
        terms.append(weight_term("text encoder (frozen)", pipe.text_encoder, sharding, trained=False))
    terms.append(weight_term("VAE (frozen)", pipe.vae, sharding, trained=False))
    terms.append(weight_term("VLM (frozen)", scorer.model, sharding, trained=False))
    return terms


def plan_drf(recipe, *, mixed_precision: str | None, sharding: Sharding) -> Plan:
    cfg, run = recipe.config, recipe.config.run
    with weights.without_weights():
        recipe.build_models("cuda", mixed_precision)
    adapter = recipe.adapter
    terms = _frozen_terms(recipe, sharding, recipe.scorer)
    terms += trained_terms(recipe.trainable, run.optim.optimizer, sharding)
    latent = _latent_geometry(adapter, cfg.frames, cfg.height, cfg.width)
    tokens = _tokens(adapter, latent)
    dit = remembered(("dit", cfg.model, cfg.finetune, cfg.lora_rank, cfg.gradient_checkpointing, mixed_precision,
                      cfg.checkpoint_steps, cfg.guidance, latent),
                     lambda: fit_dit(DiTProbe(adapter, mixed_precision, editor=False,
                                              checkpoint_step=cfg.checkpoint_steps, guidance=cfg.guidance), latent))
    from vidcli.diffusion.rollout import uniform_frame_indices

    indices = uniform_frame_indices(cfg.frames, cfg.frames_vlm)
    needed = adapter.latent_frames_for(indices) if hasattr(adapter, "latent_frames_for") else latent[0]
    decode = remembered(("decode", cfg.model, cfg.vae_dtype, latent, tuple(indices), cfg.decode_checkpointing),
                        lambda: fit_decode(adapter, (needed, latent[1], latent[2]), indices, cfg.decode_checkpointing))
    query_kinds = ["vanilla"] if cfg.reward == "vanilla" else list(cfg.dims)
    lengths, lengths_how = query_tokens(recipe, recipe.scorer, query_kinds)
    query_kinds = [k for k in query_kinds if k in lengths]  # dimensions the records ask
    # The largest query holds the most: with the reference video (Phy, VQ) and the longest texts.
    def size(kind: str) -> tuple[bool, int]:
        return kind in ("Phy", "VQ"), sum(lengths[kind])

    largest = max(query_kinds, key=size)
    text, answer = lengths[largest]
    answer = 2 if cfg.reward == "binary" else answer
    vlm = remembered(("vlm", cfg.vlm, recipe.frozen_dtype("vlm"), cfg.vlm_checkpointing, cfg.frames_vlm, cfg.height,
                      cfg.width, largest, text, answer),
                     lambda: fit_vlm(VLMProbe(recipe.scorer), cfg.frames_vlm, cfg.height, cfg.width,
                                     reference=largest in ("Phy", "VQ"), text=text, answer=answer))
    frames_bytes = cfg.frames_vlm * 3 * cfg.height * cfg.width * 4 * 2  # the frames and their gradient
    guided = "guided: two forwards" if cfg.guidance > 1 else "one forward"
    how_dit = f"measured (shapes only) on {tokens} tokens at 1 and 2 of {dit.blocks} blocks; × blocks"
    step_ckpt = "checkpointed, " if cfg.checkpoint_steps else ""
    terms += [
        Term("activations", f"rollout: {cfg.k_grad} steps with gradient, held", cfg.k_grad * dit.held,
             f"K × one step's held bytes ({step_ckpt}{guided}); " + how_dit),
        Term("activations", "decode: held until its backward", decode.held + frames_bytes / 2,
             ("checkpointed, " if cfg.decode_checkpointing else "") +
             f"measured (shapes only): the whole VAE decoding {needed} latent frames to N_f={cfg.frames_vlm}"),
        Term("activations", f"reward: largest VLM query ({largest})", vlm,
             f"measured (shapes only): N_f={cfg.frames_vlm} frames, {text}+{answer} text tokens, "
             "1 and 2 layers per stack; × layers"),
        Term("activations", "decode backward", decode.backward_peak + frames_bytes / 2,
             "measured as above" + (", frame by frame (checkpointed)" if cfg.decode_checkpointing else "")),
        Term("activations", "DiT backward: one step, beyond its held bytes", dit.peak - dit.held,
             ("recomputed, " if cfg.checkpoint_steps else "") + how_dit),
    ]
    rollout = f"rollout: {cfg.k_grad} steps with gradient, held"
    grads = sum(t.bytes for t in terms if t.group == "gradients")
    early = -grads if run.grad_accum == 1 else 0.0
    later = 0.0 if (run.grad_accum > 1 or cfg.k_grad > 1) else -grads
    phases = [Phase("reward (VLM queries)", [rollout, "decode: held until its backward",
                                              f"reward: largest VLM query ({largest})"], early),
              Phase("decode backward", [rollout, "decode backward"], early),
              Phase("DiT backward", [rollout, "DiT backward: one step, beyond its held bytes"], later)]
    dit_model, vlm_model = adapter.pipe.transformer, recipe.scorer.model
    setting = (f"{type(dit_model).__name__} ({count_text(sum(p.numel() for p in dit_model.parameters()))}) "
               f"{cfg.finetune} + {type(vlm_model).__name__} ({count_text(sum(p.numel() for p in vlm_model.parameters()))}), "
               f"{mixed_precision or 'float32'} mixed precision, {cfg.frames}×{cfg.height}×{cfg.width}, "
               f"{cfg.steps} steps, K={cfg.k_grad}, N_f={cfg.frames_vlm}, {cfg.reward} reward, "
               f"DiT checkpointing {'on' if cfg.gradient_checkpointing else 'off'}, decode checkpointing "
               f"{'on' if cfg.decode_checkpointing else 'off'}, accumulation {run.grad_accum}, {sharding.source}")
    notes = [f"VLM queries (question + answer tokens), {lengths_how}: "
             + ", ".join(f"{k} {lengths[k][0]}+{lengths[k][1]}" for k in query_kinds)]
    return Plan("drf-tune", setting, terms, phases, notes)


def plan_revise(recipe, *, mixed_precision: str | None, sharding: Sharding) -> Plan:
    cfg, run = recipe.config, recipe.config.run
    with weights.without_weights():
        recipe.build_models("cuda", mixed_precision)
    adapter = recipe.adapter
    terms = _frozen_terms(recipe, sharding, recipe.critic.scorer)
    terms += trained_terms(recipe.trainable, run.optim.optimizer, sharding)
    latent = _latent_geometry(adapter, cfg.frames, cfg.height, cfg.width)
    tokens = 2 * _tokens(adapter, latent)  # target and source
    dit = remembered(("editor", cfg.model, cfg.finetune, cfg.lora_rank, cfg.gradient_checkpointing, mixed_precision,
                      latent),
                     lambda: fit_dit(DiTProbe(adapter, mixed_precision, editor=True, checkpoint_step=False,
                                              guidance=1.0), latent))
    from vidcli.diffusion.rollout import uniform_frame_indices

    judged = cfg.objective != "sft"
    indices = uniform_frame_indices(cfg.frames, cfg.frames_critic)
    needed = adapter.latent_frames_for(indices)
    decode = remembered(("decode", cfg.model, cfg.vae_dtype, latent, tuple(indices), cfg.decode_checkpointing),
                        lambda: fit_decode(adapter, (needed, latent[1], latent[2]), indices, cfg.decode_checkpointing))
    lengths, lengths_how = query_tokens(recipe, recipe.critic.scorer, ["critic"])
    text, answer = lengths["critic"]
    critic = 0.0
    if judged:
        critic = remembered(("critic", cfg.vlm, recipe.frozen_dtype("vlm"), cfg.vlm_checkpointing, cfg.frames_critic,
                             cfg.height, cfg.width, text),
                            lambda: fit_vlm(VLMProbe(recipe.critic.scorer), cfg.frames_critic, cfg.height, cfg.width,
                                            reference=True, text=text, answer=answer, margin=True))
    frames_bytes = cfg.frames_critic * 3 * cfg.height * cfg.width * 4 * 2
    how_dit = f"measured (shapes only) on {tokens} tokens at 1 and 2 of {dit.blocks} blocks; × blocks"
    triplets = run.batch_size
    terms += [
        Term("activations", "editor forward: held", dit.held * triplets,
             how_dit + (f", × {triplets} triplets" if triplets > 1 else "")),
        Term("activations", "x0-hat decode: held", decode.held + frames_bytes / 2 if judged else 0.0,
             ("checkpointed, " if cfg.decode_checkpointing else "") + "measured (shapes only): the whole VAE"),
        Term("activations", "critic: forward and backward", critic,
             f"measured (shapes only): F={cfg.frames_critic} frames of two videos, {text} text tokens, "
             "1 and 2 layers per stack; × layers"),
        Term("activations", "x0-hat decode backward", decode.backward_peak + frames_bytes / 2 if judged else 0.0,
             "measured (shapes only)"),
        Term("activations", "editor backward, beyond its held bytes", dit.peak - dit.held, how_dit),
    ]
    grads = sum(t.bytes for t in terms if t.group == "gradients")
    early = -grads if run.grad_accum == 1 and triplets == 1 else 0.0
    phases = [Phase("critic", ["editor forward: held", "x0-hat decode: held", "critic: forward and backward"], early),
              Phase("decode backward", ["editor forward: held", "x0-hat decode backward"], early),
              Phase("editor backward", ["editor forward: held", "editor backward, beyond its held bytes"], early)]
    dit_model = adapter.pipe.transformer
    setting = (f"Wan editor ({count_text(sum(p.numel() for p in dit_model.parameters()))}) "
               f"{cfg.finetune} + critic {type(recipe.critic.scorer.model).__name__}, "
               f"{mixed_precision or 'float32'} mixed precision, {cfg.frames}×{cfg.height}×{cfg.width}, "
               f"F={cfg.frames_critic}, objective {cfg.objective}, DiT checkpointing "
               f"{'on' if cfg.gradient_checkpointing else 'off'}, decode checkpointing "
               f"{'on' if cfg.decode_checkpointing else 'off'}, batch {run.batch_size} × accumulation "
               f"{run.grad_accum}, {sharding.source}")
    notes = ["planned for a triplet the critic judges (t ≤ σ_max), the step's worst case",
             f"critic question {text} tokens, {lengths_how}"]
    return Plan("revise-tune", setting, terms, phases, notes)
