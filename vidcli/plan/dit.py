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
from vidcli.plan.probe import Line, cut_copy, materialise, stacks
from vidcli.plan.report import Phase, Plan, Term, count_text
from vidcli.plan.static import Sharding, trained_terms, weight_term

# Text lengths of one query (tokens), from the prompt templates with a caption of ~60 words
# and reference answers of ≤ 50 words; the reasoning a critic writes first is ≤ 64 tokens.
QUERY_TOKENS = {"TA": (70, 80), "Phy": (230, 120), "VQ": (170, 100), "vanilla": (90, 1), "critic": (260, 64)}


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


def _probe_latent(adapter, tokens: int) -> tuple[int, int, int]:
    """A one-frame latent with about ``tokens`` tokens (sides multiples of the patch)."""
    patch = adapter.pipe.transformer.config.patch_size
    p = patch[1] if isinstance(patch, (list, tuple)) else patch
    side = max(1, int(math.sqrt(tokens)))
    rows, cols = side, max(1, math.ceil(tokens / side))
    return 1, rows * p, cols * p


class DiTProbe:
    """Saved tensors and backward transients of one DiT evaluation, on cut copies of the meta build."""

    def __init__(self, adapter, mixed_precision: str | None) -> None:
        self.adapter = adapter
        self.mixed_precision = mixed_precision
        self.meta = adapter.pipe.transformer

    def _adapter(self, blocks: int, checkpointing: bool | None = None):
        dit = cut_copy(self.meta, {"blocks": blocks})
        if checkpointing is False:
            dit.gradient_checkpointing = False
        clone = copy.copy(self.adapter)
        clone.pipe = copy.copy(self.adapter.pipe)
        clone.pipe.__dict__["transformer"] = dit
        clone.device = torch.device("cpu")
        return clone, dit

    def _inputs(self, clone, latent: tuple[int, int, int], guidance: float):
        from vidcli.diffusion import TextEmbeds

        pipe = clone.pipe
        config = pipe.transformer.config
        dtype = next(pipe.transformer.parameters()).dtype
        width = getattr(config, "text_dim", None) or getattr(config, "text_embed_dim", 4096)
        length = getattr(clone, "max_sequence_length", 512)
        text = torch.zeros(1, length, width, dtype=dtype)
        embeds = TextEmbeds(text, text.clone() if guidance > 1 else None)
        t, h, w = latent
        channels = config.in_channels
        shape = (1, t, channels, h, w) if type(clone).__name__ == "CogVideoXAdapter" else (1, channels, t, h, w)
        return torch.zeros(shape), embeds

    def saved(self, blocks: int, tokens: int, guidance: float, *, checkpointing: bool | None = None,
              editor: bool = False) -> int:
        """Saved tensors of one evaluation: guided (two forwards) for drf, the editor's for revise."""
        clone, dit = self._adapter(blocks, checkpointing)
        dit.train()
        latent = _probe_latent(clone, tokens // 2 if editor else tokens)
        x, embeds = self._inputs(clone, latent, guidance)
        meter = SavedTensors(exclude=list(dit.parameters()))
        with meter.hooks(), _autocast(self.mixed_precision):
            out = self._call(clone, x, embeds, guidance, editor)
        held = meter.current
        del out
        return held

    def transient(self, tokens: int, guidance: float, editor: bool = False) -> int:
        """Backward's allocations beyond the saved tensors, one block, weights frozen."""
        clone, dit = self._adapter(1)
        dit.requires_grad_(False)
        latent = _probe_latent(clone, tokens // 2 if editor else tokens)
        x, embeds = self._inputs(clone, latent, guidance)
        x.requires_grad_(True)
        with LiveTensors() as meter:
            with _autocast(self.mixed_precision):
                out = self._call(clone, x, embeds, guidance, editor)
            held = meter.current
            meter.reset_peak()
            out.float().sum().backward()
        return meter.peak - held

    def _call(self, clone, x, embeds, guidance: float, editor: bool):
        t = torch.tensor(900.0)
        if editor:
            from vidcli.train.revise import InContextEditor

            return InContextEditor(clone).velocity(x, x.clone(), 0.5, embeds.positive)
        return clone.denoise(x, t, embeds, guidance)


@dataclass
class DiTActivations:
    step_saved: float  # one evaluation's saved tensors, as the run checkpoints the DiT
    block_recompute: float  # one block's saved tensors without DiT checkpointing
    transient: float
    blocks: int


def fit_dit(probe: DiTProbe, tokens: int, guidance: float, checkpointing: bool, editor: bool = False,
            ) -> DiTActivations:
    blocks = len(stacks(probe.meta)["blocks"])
    sizes = (max(8, tokens // 256), max(16, tokens // 128))

    def per_block(check: bool | None) -> tuple[Line, Line]:
        one = [probe.saved(1, n, guidance, checkpointing=check, editor=editor) for n in sizes]
        two = [probe.saved(2, n, guidance, checkpointing=check, editor=editor) for n in sizes]
        block = Line.through(sizes[0], two[0] - one[0], sizes[1], two[1] - one[1])
        rest = Line.through(sizes[0], one[0] - block.at(sizes[0]), sizes[1], one[1] - block.at(sizes[1]))
        return block, rest

    block, rest = per_block(None)
    step = max(0.0, rest.at(tokens)) + blocks * max(0.0, block.at(tokens))
    recompute = 0.0
    if checkpointing:
        full_block, _ = per_block(False)
        recompute = max(0.0, full_block.at(tokens))
    trans = [probe.transient(n, guidance, editor) for n in sizes]
    transient = max(0.0, Line.through(sizes[0], trans[0], sizes[1], trans[1]).at(tokens))
    return DiTActivations(step, recompute, transient, blocks)


# ----------------------------------------------------------------------------- the VAE decode


@dataclass
class DecodeActivations:
    held: float  # from the decode's forward until its backward
    backward_peak: float  # during its backward, over what it held


def fit_decode(adapter, latent: tuple[int, int, int], count: int, checkpointing: bool) -> DecodeActivations:
    """Held and backward-peak bytes of a differentiable decode of the latent prefix ``latent``
    (t, h, w) — the frames it returns counted apart by the caller.

    Measured on the whole (small) VAE decoding its last frame from a few latent frames at
    two small areas, fitted as c + area·(a + b·frames) (the decoder's tensors grow with the
    pixels of each latent frame and with the number of latent frames).
    """
    vae = copy.deepcopy(adapter.pipe.vae)
    materialise(vae)
    clone = copy.copy(adapter)
    clone.pipe = copy.copy(adapter.pipe)
    clone.pipe.__dict__["vae"] = vae
    clone.decode_checkpointing = checkpointing
    cog = type(clone).__name__ == "CogVideoXAdapter"
    chunk = 2 if cog else 1
    points = [(2 * chunk, 4, 4), (3 * chunk, 4, 4), (2 * chunk, 4, 8)]
    held, backward = [], []
    for frames, h, w in points:
        shape = (1, frames, vae.config.latent_channels, h, w) if cog else (1, vae.config.z_dim, frames, h, w)
        z = torch.zeros(shape, requires_grad=True)
        last = adapter.pipe.vae_scale_factor_temporal * (frames - 1)
        with LiveTensors() as meter:
            out = clone.decode(z, [last])
            held.append(meter.current)
            meter.reset_peak()
            out.sum().backward()
        backward.append(meter.peak - held[-1])
    t, h, w = latent
    (f0, h0, w0), (f1, _, _), (_, h1, w1) = points
    a0, a1 = h0 * w0, h1 * w1

    def fitted(y: list[float]) -> float:
        b = (y[1] - y[0]) / (a0 * (f1 - f0))
        a = (y[2] - y[0]) / (a1 - a0) - b * f0
        c = y[0] - a0 * (a + b * f0)
        return max(0.0, c + h * w * (a + b * t))

    return DecodeActivations(fitted(held), fitted(backward))


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
    """Peak bytes of one frozen-VLM query with gradients to the generated frames."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer
        self.meta = scorer.model
        self.vp = _video_processor(scorer)
        self.kinds = [k for k in ("text", "vision") if k in stacks(self.meta)]

    def peak(self, depths: dict[str, int], frames: int, height: int, width: int, *, reference: bool,
             text: int, answer: int, margin: bool = False) -> int:
        from vidcli.rewards.vlm import video_pixels

        model = cut_copy(self.meta, depths)
        generated = torch.zeros(frames, 3, height, width, requires_grad=True)
        dtype = next(model.parameters()).dtype
        with LiveTensors() as meter:
            videos = [video_pixels(self.vp, generated)]
            if reference:
                with torch.no_grad():
                    videos.append(video_pixels(self.vp, torch.zeros(frames, 3, height, width)))
            for video in videos:
                video.pixel_values = video.pixel_values.to(dtype)
            inputs, n = query_inputs(model, videos, text, answer)
            logits = model(**inputs, logits_to_keep=n + 1).logits[0, :-1]
            if margin:
                out = logits[-1, 0].float() - logits[-1, 1].float()
            else:
                logp = torch.log_softmax(logits.float(), dim=-1)
                out = logp.gather(1, inputs["input_ids"][0, -n:, None])[:, 0].sum()
            out.backward()
        return meter.peak


def fit_vlm(probe: VLMProbe, frames: int, height: int, width: int, *, reference: bool, text: int, answer: int,
            margin: bool = False) -> float:
    """Peak bytes of one query at the run's depth and frame count (temporal patches of 2 frames)."""
    depth = {k: len(s) for k, s in stacks(probe.meta).items() if k in probe.kinds}
    ones = {k: 1 for k in probe.kinds}
    counts = (2, 4)
    kwargs = dict(reference=reference, text=text, answer=answer, margin=margin)
    base = [probe.peak(ones, n, height, width, **kwargs) for n in counts]
    total = Line.through(counts[0], base[0], counts[1], base[1]).at(frames)
    for kind in probe.kinds:
        more = [probe.peak({**ones, kind: 2}, n, height, width, **kwargs) for n in counts]
        layer = Line.through(counts[0], more[0] - base[0], counts[1], more[1] - base[1]).at(frames)
        total += (depth[kind] - 1) * max(0.0, layer)
    return max(0.0, total)


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
    latent_bytes = 16 * latent[0] * latent[1] * latent[2] * 4
    dit = fit_dit(DiTProbe(adapter, mixed_precision), tokens, cfg.guidance, cfg.gradient_checkpointing)
    guided = "two forwards (guidance)" if cfg.guidance > 1 else "one forward"
    if cfg.checkpoint_steps:
        steps = cfg.k_grad * latent_bytes * 4
        steps_how = f"counted: K={cfg.k_grad} checkpointed steps keep their input latents (and the step's arithmetic)"
    else:
        steps = cfg.k_grad * dit.step_saved
        steps_how = f"K={cfg.k_grad} × one step's saved tensors (measured, {guided})"
    from vidcli.diffusion.rollout import uniform_frame_indices

    indices = uniform_frame_indices(cfg.frames, cfg.frames_vlm)
    needed = adapter.latent_frames_for(indices) if hasattr(adapter, "latent_frames_for") else latent[0]
    decode = fit_decode(adapter, (needed, latent[1], latent[2]), cfg.frames_vlm, cfg.decode_checkpointing)
    scorer_probe = VLMProbe(recipe.scorer)
    query_kinds = ["vanilla"] if cfg.reward == "vanilla" else list(cfg.dims)
    vlm = 0.0
    for kind in query_kinds:
        text, answer = QUERY_TOKENS[kind]
        if cfg.reward == "binary":
            answer = 2
        vlm = max(vlm, fit_vlm(scorer_probe, cfg.frames_vlm, cfg.height, cfg.width, reference=kind in ("Phy", "VQ"),
                               text=text, answer=answer))
    frames_bytes = cfg.frames_vlm * 3 * cfg.height * cfg.width * 4 * 2  # the frames and their gradient
    how_dit = (f"measured at 1 and 2 of {dit.blocks} blocks and ~1/256, 1/128 of {tokens} tokens; scaled")
    terms += [
        Term("activations", "rollout: K steps with gradient", steps, steps_how),
        Term("activations", "decode: held until its backward", decode.held + frames_bytes,
             "checkpointed: latents and frames (counted)" if cfg.decode_checkpointing else
             "measured: whole VAE at 2-3 latent frames and 2 small areas; scaled to the frames decoded"),
        Term("activations", "reward: largest VLM query", vlm,
             f"measured: the frozen VLM at 1 and 2 layers per stack, 2 and 4 frames; scaled to N_f={cfg.frames_vlm}"),
        Term("activations", "decode backward", decode.backward_peak,
             "measured as above" + (", frame by frame (checkpointed)" if cfg.decode_checkpointing else "")),
        Term("activations", f"DiT backward: one step ({guided})", dit.step_saved + dit.transient,
             how_dit + " (saved tensors + backward transient)"),
    ]
    dit_phase = ["rollout: K steps with gradient", f"DiT backward: one step ({guided})"]
    if cfg.gradient_checkpointing:
        terms.append(Term("activations", "DiT block recompute", dit.block_recompute,
                          "measured: one block's saved tensors without checkpointing"))
        dit_phase.append("DiT block recompute")
    grads = sum(t.bytes for t in terms if t.group == "gradients")
    early = -grads if run.grad_accum == 1 else 0.0
    later = 0.0 if (run.grad_accum > 1 or cfg.k_grad > 1) else -grads
    phases = [Phase("reward (VLM queries)", ["rollout: K steps with gradient", "decode: held until its backward",
                                              "reward: largest VLM query"], early),
              Phase("decode backward", ["rollout: K steps with gradient", "decode backward"], early),
              Phase("DiT backward", dit_phase, later)]
    setting = (f"{type(adapter.pipe.transformer).__name__} ({count_text(sum(p.numel() for p in adapter.pipe.transformer.parameters()))}) "
               f"{cfg.finetune} + {type(recipe.scorer.model).__name__} ({count_text(sum(p.numel() for p in recipe.scorer.model.parameters()))}), "
               f"{mixed_precision or 'float32'} mixed precision, {cfg.frames}×{cfg.height}×{cfg.width}, "
               f"{cfg.steps} steps, K={cfg.k_grad}, N_f={cfg.frames_vlm}, {cfg.reward} reward, "
               f"DiT checkpointing {'on' if cfg.gradient_checkpointing else 'off'}, decode checkpointing "
               f"{'on' if cfg.decode_checkpointing else 'off'}, accumulation {run.grad_accum}, {sharding.source}")
    notes = [f"VLM query lengths assumed (question + answer tokens): "
             + ", ".join(f"{k} {QUERY_TOKENS[k][0]}+{QUERY_TOKENS[k][1]}" for k in query_kinds)]
    return Plan("drf-tune", setting, terms, phases, notes)


def plan_revise(recipe, *, mixed_precision: str | None, sharding: Sharding) -> Plan:
    cfg, run = recipe.config, recipe.config.run
    with weights.without_weights():
        recipe.build_models("cuda", mixed_precision)
    adapter = recipe.adapter
    terms = _frozen_terms(recipe, sharding, recipe.critic.scorer)
    terms += trained_terms(recipe.trainable, run.optim.optimizer, sharding)
    latent = _latent_geometry(adapter, cfg.frames, cfg.height, cfg.width)
    tokens = 2 * _tokens(adapter, latent) * run.batch_size  # target and source, per triplet of the micro-batch
    dit = fit_dit(DiTProbe(adapter, mixed_precision), tokens, 1.0, cfg.gradient_checkpointing, editor=True)
    from vidcli.diffusion.rollout import uniform_frame_indices

    indices = uniform_frame_indices(cfg.frames, cfg.frames_critic)
    needed = adapter.latent_frames_for(indices)
    decode = fit_decode(adapter, (needed, latent[1], latent[2]), cfg.frames_critic, cfg.decode_checkpointing)
    text, answer = QUERY_TOKENS["critic"]
    critic = 0.0
    if cfg.objective != "sft":
        critic = fit_vlm(VLMProbe(recipe.critic.scorer), cfg.frames_critic, cfg.height, cfg.width, reference=True,
                         text=text, answer=answer, margin=True)
    frames_bytes = cfg.frames_critic * 3 * cfg.height * cfg.width * 4 * 2
    terms += [
        Term("activations", "editor forward: saved", dit.step_saved,
             f"measured at 1 and 2 of {dit.blocks} blocks, small token counts; scaled to {tokens} tokens"),
        Term("activations", "x0-hat decode: held", decode.held + frames_bytes if cfg.objective != "sft" else 0.0,
             "checkpointed: latents and frames" if cfg.decode_checkpointing else "measured; scaled"),
        Term("activations", "critic: forward and backward", critic,
             f"measured: frozen VLM at 1 and 2 layers per stack, 2 and 4 frames; scaled to F={cfg.frames_critic}"),
        Term("activations", "x0-hat decode backward", decode.backward_peak if cfg.objective != "sft" else 0.0,
             "measured"),
        Term("activations", "editor backward transient", dit.transient, "measured at 1 block, weights frozen"),
    ]
    dit_phase = ["editor forward: saved", "editor backward transient"]
    if cfg.gradient_checkpointing:
        terms.append(Term("activations", "DiT block recompute", dit.block_recompute,
                          "measured: one block's saved tensors without checkpointing"))
        dit_phase.append("DiT block recompute")
    grads = sum(t.bytes for t in terms if t.group == "gradients")
    early = -grads if run.grad_accum == 1 and run.batch_size == 1 else 0.0
    phases = [Phase("critic", ["editor forward: saved", "x0-hat decode: held", "critic: forward and backward"], early),
              Phase("decode backward", ["editor forward: saved", "x0-hat decode backward"], early),
              Phase("editor backward", dit_phase, early)]
    setting = (f"Wan editor ({count_text(sum(p.numel() for p in adapter.pipe.transformer.parameters()))}) "
               f"{cfg.finetune} + critic {type(recipe.critic.scorer.model).__name__}, "
               f"{mixed_precision or 'float32'} mixed precision, {cfg.frames}×{cfg.height}×{cfg.width}, "
               f"F={cfg.frames_critic}, objective {cfg.objective}, batch {run.batch_size} × accumulation "
               f"{run.grad_accum}, {sharding.source}")
    notes = ["planned for a triplet the critic judges (t ≤ σ_max), the step's worst case"]
    return Plan("revise-tune", setting, terms, phases, notes)
