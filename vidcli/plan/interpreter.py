"""Memory plans of the interpreter trainers, ``sft`` and ``grpo``.

**What a step holds.** Weights of every model the recipe builds (counted from the
meta-device build, by dtype), gradients and AdamW state of the trained parameters
(counted), and the activations of one micro-batch (measured, :mod:`vidcli.plan.probe`):
the bytes held when the forward ends — per language-model layer, per vision block, and
the rest (embeddings, the loss head's logits) — and what backward adds on top at its
busiest (gradients of the logits and of each layer's inputs; with gradient
checkpointing, the layer being recomputed), measured at 1 and 2 layers of each stack on
the run's batch and scaled to its depth.

GRPO adds two phases without gradients: sampling (the KV cache of G completions of the
full length, counted from the config, and the last position's logits) and the
reference's log-probabilities (measured).

**The workload** is the worst case the flags allow unless given: every example's prompt
at ``--max-prompt-tokens`` (a dense-condition run uses ``--max-prompt-tokens-dense``),
of which ``visual_tokens`` (default half) are image tokens — four vision patches each —
and ``target_tokens`` (default 512) of target (``sft``), or G completions of
``--max-completion-tokens`` (``grpo``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidcli import weights
from vidcli.plan.meter import LiveTensors
from vidcli.plan.probe import Reading, cut_copy, depths_of, fake_mode, fit_depths, measure, remembered, stacks
from vidcli.plan.report import Phase, Plan, Term, count_text
from vidcli.plan.static import Sharding, module_bytes, trained_terms, weight_term



@dataclass(frozen=True)
class Workload:
    """Tokens of one example: prompt (of which visual) and target (sft) or completion (grpo)."""

    prompt_tokens: int
    visual_tokens: int
    target_tokens: int

    def text(self) -> str:
        visual = f", {self.visual_tokens} of them visual" if self.visual_tokens else ""
        return f"{self.prompt_tokens} prompt tokens{visual}"


# ----------------------------------------------------------------------------- synthetic batches


def _token(config, *names: str) -> int | None:
    for source in (config, getattr(config, "thinker_config", None)):
        for name in names:
            value = getattr(source, name, None) if source is not None else None
            if isinstance(value, int):
                return value
    return None


def ordinary_ids(model) -> int:
    """How many leading ids are ordinary text tokens (below every special id the config names)."""
    config = model.config
    special = [v for source in (config, getattr(config, "text_config", None)) if source is not None
               for k, v in vars(source).items() if k.endswith(("_token_id", "_token_index")) and isinstance(v, int)]
    vocab = model.get_input_embeddings().num_embeddings
    return max(2, min([vocab, 1000, *[s for s in special if s > 2]]))


def synthetic_batch(model, work: Workload, rows: int, fake) -> dict:
    """Model inputs shaped like ``rows`` encoded requests: text ids, one image of ``visual_tokens``
    tokens each, target labels. Ids and grids are real tensors; pixels are ``fake``'s."""
    import inspect

    config = model.config
    vision = getattr(config, "vision_config", None)
    image_id = _token(config, "image_token_id", "image_token_index")
    start_id, end_id = _token(config, "vision_start_token_id"), _token(config, "vision_end_token_id")
    visual = work.visual_tokens if (vision is not None and image_id is not None) else 0
    length = work.prompt_tokens + work.target_tokens
    ids = torch.arange(length) % ordinary_ids(model)
    inputs: dict = {}
    if visual:
        merge = getattr(vision, "spatial_merge_size", 2)
        a = max(1, int(math.sqrt(visual)))
        b = math.ceil(visual / a)
        visual = a * b
        first = 1
        if start_id is not None:
            ids[first] = start_id
        ids[first + 1:first + 1 + visual] = image_id
        if end_id is not None:
            ids[first + 1 + visual] = end_id
        patch = getattr(vision, "patch_size", 14)
        temporal = getattr(vision, "temporal_patch_size", 2)
        channels = getattr(vision, "in_channels", None) or getattr(vision, "in_chans", 3)
        grid = torch.tensor([[1, a * merge, b * merge]] * rows)
        with fake:
            inputs["pixel_values"] = torch.zeros(rows * visual * merge * merge, channels * temporal * patch * patch)
        inputs["image_grid_thw"] = grid
    ids = ids[None].repeat(rows, 1)
    labels = torch.full_like(ids, -100)
    labels[:, work.prompt_tokens:] = ids[:, work.prompt_tokens:]
    inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    accepted = inspect.signature(model.forward).parameters
    if "mm_token_type_ids" in accepted:
        inputs["mm_token_type_ids"] = (ids == image_id).long() if visual else torch.zeros_like(ids)
    return inputs


# ----------------------------------------------------------------------------- probes


def _autocast(mixed_precision: str | None):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(mixed_precision))
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _embeddings_require_grad(model) -> torch.utils.hooks.RemovableHandle:
    """Let gradients start at the input embeddings when no weight before them trains (a frozen
    LLM under a trained camera encoder, or a probe with every weight frozen)."""
    return model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: output.detach().requires_grad_())


class InterpreterProbe:
    """Probes of one interpreter (the meta build) under one run's settings, on its batch."""

    def __init__(self, interpreter, mixed_precision: str | None, loss: str, work: Workload, rows: int) -> None:
        self.meta = interpreter.model
        self.mixed_precision = mixed_precision
        self.loss = loss  # "sft" | "grpo"
        self.work = work
        self.rows = rows
        self.fake = fake_mode()
        self.kinds = [k for k in ("text", "vision") if k in stacks(self.meta) and (k == "text" or work.visual_tokens)]
        self.upstream_trains = interpreter.camera_encoder is not None and any(
            p.requires_grad for p in interpreter.camera_encoder.parameters())

    def _model(self, depths: dict[str, int]):
        from vidcli.interpreter.model import Interpreter

        model = cut_copy(self.meta, depths, self.fake)
        model.train()  # as the run trains it: dropout masks, and checkpointing only acts in training mode
        return Interpreter(model, None)

    def _forward(self, interp, batch: dict, grad: bool = True) -> torch.Tensor:
        from vidcli.train.grpo_loss import grpo_loss, token_logprobs

        with _autocast(self.mixed_precision), torch.set_grad_enabled(grad):
            if self.loss == "sft":
                return interp.loss(batch)
            width = int((batch["labels"][0] != -100).sum())
            mask = torch.ones(batch["input_ids"].shape[0], width, dtype=torch.long)
            logits = interp.forward(batch, logits_to_keep=width + 1).logits
            logp = token_logprobs(logits, batch["input_ids"], mask)
            if not grad:
                return logp
            loss, _ = grpo_loss(logp, None, logp.detach(), torch.ones(logp.shape[0]), mask)
            return loss

    def step(self, depths: dict[str, int]) -> Reading:
        """One forward and backward: bytes held when the forward ends, and the peak (gradients excluded)."""
        interp = self._model(depths)
        batch = synthetic_batch(interp.model, self.work, self.rows, self.fake)
        hook = _embeddings_require_grad(interp.model) if self.upstream_trains else None

        def run(meter: LiveTensors) -> int:
            loss = self._forward(interp, batch)
            held = meter.current
            loss.backward()
            return held

        try:
            return measure(run, interp.model.parameters(), self.fake)
        finally:
            if hook is not None:
                hook.remove()

    def no_grad_peak(self, depths: dict[str, int]) -> float:
        """Peak of a forward without gradients (the reference's log-probabilities)."""
        interp = self._model(depths)
        batch = synthetic_batch(interp.model, self.work, self.rows, self.fake)
        return float(measure(lambda meter: self._forward(interp, batch, grad=False) is None, (), self.fake).peak)


@dataclass
class Activations:
    """Fitted activation terms of one micro-batch at the run's sizes."""

    held: dict[str, float]  # at the end of the forward: "rest" and per stack, at the run's depths
    backward: float  # the backward's peak beyond what the forward held
    depths: dict[str, int]
    no_grad: float = 0.0


def fit_activations(probe: InterpreterProbe, reference: bool = False) -> Activations:
    """Measure at one layer per stack and one more in each; evaluate at the run's depths."""
    depth = {k: v for k, v in depths_of(probe.meta).items() if k in probe.kinds}
    readings: dict[tuple, Reading] = {}

    def reading(depths: dict[str, int]) -> Reading:
        key = tuple(sorted(depths.items()))
        if key not in readings:
            readings[key] = probe.step(depths)
        return readings[key]

    held_fit = fit_depths(lambda d: reading(d).held, probe.kinds)
    peak_fit = fit_depths(lambda d: reading(d).peak, probe.kinds)
    rest, per_stack = held_fit.parts(depth)
    held = {"rest": max(0.0, rest), **{k: max(0.0, v) for k, v in per_stack.items()}}
    backward = max(0.0, peak_fit.total(depth) - sum(held.values()))
    no_grad = fit_depths(probe.no_grad_peak, probe.kinds).total(depth) if reference else 0.0
    return Activations(held, backward, depth, no_grad)


# ----------------------------------------------------------------------------- plans


def build_interpreter_models(recipe, mixed_precision: str | None) -> None:
    with weights.without_weights():
        recipe.build_models("cuda", mixed_precision)


def plan_interpreter(command: str, recipe, *, mixed_precision: str | None, sharding: Sharding,
                     work: Workload) -> Plan:
    """The plan of an ``sft`` or ``grpo`` recipe (config set, models not built yet)."""
    cfg, run = recipe.config, recipe.config.run
    build_interpreter_models(recipe, mixed_precision)
    interpreter = recipe.interpreter
    model = interpreter.model
    terms: list[Term] = []
    if cfg.finetune == "qlora":
        terms.append(_qlora_weights(model))
    else:
        trained_here = cfg.finetune == "full" and (command == "grpo" or cfg.stage == "cot")
        terms.append(weight_term(f"interpreter ({'trained' if trained_here else 'frozen base'})", model, sharding,
                                 trained=trained_here))
    encoder = interpreter.camera_encoder
    if encoder is not None:
        terms.append(weight_term("camera encoder", encoder, sharding,
                                 trained=any(p.requires_grad for p in encoder.parameters())))
    reference = getattr(recipe, "reference", None)
    if reference is not None:
        terms.append(weight_term("GRPO reference (frozen copy)", reference.model, sharding, trained=False))
    terms += trained_terms(recipe.trainable, run.optim.optimizer, sharding)

    batch = run.batch_size
    rows = batch * (cfg.num_generations if command == "grpo" else 1)
    probe = InterpreterProbe(interpreter, mixed_precision, "grpo" if command == "grpo" else "sft", work, rows)
    key = ("interpreter", command, cfg.model, cfg.finetune, cfg.lora.rank, getattr(cfg, "stage", "cot"),
           cfg.gradient_checkpointing, mixed_precision, work, rows)
    acts = remembered(key, lambda: fit_activations(probe, reference=command == "grpo"))
    how = (f"measured (shapes only) on {rows} × ({work.prompt_tokens} + {work.target_tokens}) tokens "
           "at 1 and 2 layers per stack; × layers")
    names = {"text": "language model", "vision": "vision tower"}
    step_terms = []
    for kind in ("text", "vision"):
        if kind in acts.held:
            name = f"held after forward: {names[kind]}, {acts.depths[kind]} layers"
            terms.append(Term("activations", name, acts.held[kind], how))
            step_terms.append(name)
    terms.append(Term("activations", "held after forward: embeddings, head, loss", acts.held["rest"], how))
    step_terms.append("held after forward: embeddings, head, loss")
    if encoder is not None and any(p.requires_grad for p in encoder.parameters()):
        cam = _camera_saved(encoder, batch, mixed_precision)
        terms.append(Term("activations", "held after forward: camera encoder", cam,
                          "measured (shapes only): one map per example"))
        step_terms.append("held after forward: camera encoder")
    recompute = " (layers recomputed one at a time)" if cfg.gradient_checkpointing else ""
    terms.append(Term("activations", "backward, beyond that" + recompute, acts.backward, how))
    phases = [Phase("backward", step_terms + ["backward, beyond that" + recompute])]
    grads = sum(t.bytes for t in terms if t.group == "gradients")
    if run.grad_accum == 1:
        # Gradients appear as activations are freed: the activation peak comes before them.
        phases[0].extra = -grads
        phases.append(Phase("optimizer step", []))
    if command == "grpo":
        sampling = _sampling_bytes(model, rows, work, mixed_precision)
        terms.append(Term("activations", "sampling: KV cache and logits", sampling,
                          f"counted: {rows} rows × {work.prompt_tokens + work.target_tokens} positions"))
        terms.append(Term("activations", "reference log-probs (no gradient)", acts.no_grad, how))
        extra = -grads if run.grad_accum == 1 else 0.0
        phases += [Phase("sampling", ["sampling: KV cache and logits"], extra),
                   Phase("reference forward", ["reference log-probs (no gradient)"], extra)]
    setting = _setting(command, recipe, mixed_precision, sharding, work, rows)
    notes = [f"workload per example: {work.text()}, {work.target_tokens} "
             f"{'completion' if command == 'grpo' else 'target'} tokens"]
    if cfg.finetune == "qlora":
        notes.append("QLoRA: 4-bit weights counted as 0.5 B per linear weight plus its block scales")
    return Plan(command, setting, terms, phases, notes)


def _setting(command: str, recipe, mixed_precision, sharding: Sharding, work: Workload, rows: int) -> str:
    cfg, run = recipe.config, recipe.config.run
    model = recipe.interpreter.model
    kind = type(getattr(getattr(model, "base_model", None), "model", model)).__name__
    tune = cfg.finetune if cfg.finetune == "full" else f"{cfg.finetune} r{cfg.lora.rank}"
    if command == "sft" and cfg.stage == "camera":
        tune = "camera encoder only"
    extra = f", G={cfg.num_generations}" if command == "grpo" else ""
    return (f"{kind} ({count_text(sum(p.numel() for p in model.parameters()))}), {tune}, "
            f"{mixed_precision or 'float32'} mixed precision, batch {run.batch_size}{extra} ({rows} rows) × "
            f"accumulation {run.grad_accum}, checkpointing {'on' if cfg.gradient_checkpointing else 'off'}, "
            f"{sharding.source}")


def _camera_saved(encoder, batch: int, mixed_precision) -> float:
    """Bytes the camera encoder's forward holds for backward, on ``batch`` trajectories."""
    import copy

    from vidcli.plan.probe import materialise

    fake = fake_mode()
    clone = copy.deepcopy(encoder)
    with fake:
        materialise(clone)
        maps = torch.zeros(batch, clone.config.in_channels, *clone.config.image_size)
    clone.train()

    def run(meter: LiveTensors) -> int:
        with _autocast(mixed_precision):
            clone(maps)
        return meter.current

    return float(measure(run, clone.parameters(), fake).held)


def _sampling_bytes(model, rows: int, work: Workload, mixed_precision) -> float:
    """KV cache of every row at full length, and one position's logits in float32."""
    config = model.config
    text = getattr(config, "text_config", None) or getattr(getattr(config, "thinker_config", None), "text_config",
                                                             None) or config
    layers = text.num_hidden_layers
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    dtype_bytes = 4 if mixed_precision in (None, "no") else 2
    positions = work.prompt_tokens + work.target_tokens
    kv = 2 * layers * heads * head_dim * dtype_bytes * rows * positions
    vocab = model.get_output_embeddings().out_features if model.get_output_embeddings() is not None else 0
    return float(kv + 3 * rows * vocab * 4)


def _qlora_weights(model) -> Term:
    """4-bit NF4 linear weights (0.5 B + fp32 absmax per 64 weights, double-quantised); the rest as built."""
    head = model.get_output_embeddings()
    quantised_ids = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not hasattr(module, "lora_A"):
            quantised_ids.add(id(module.weight))
    linear = sum(p.numel() for p in model.parameters() if id(p) in quantised_ids)
    others = [p for p in model.parameters() if id(p) not in quantised_ids]
    rest = sum(p.numel() * p.element_size() for p in others)
    quantised = linear * (0.5 + 0.25 / 64 + 4 / (64 * 256))
    return Term("weights", "interpreter (4-bit base + adapters)", quantised + rest,
                f"counted: {count_text(linear)} linear weights at ~0.5 B, {count_text(sum(p.numel() for p in others))} "
                "others as prepared for k-bit training")
