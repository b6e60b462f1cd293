"""Memory plans of the interpreter trainers, ``sft`` and ``grpo``.

**What a step holds.** Weights of every model the recipe builds (counted from the
meta-device build, by dtype), gradients and AdamW state of the trained parameters
(counted), and the activations of one micro-batch (measured, :mod:`vidcli.plan.probe`):

- *saved for backward*: the tensors autograd keeps between forward and backward —
  per language-model layer, per vision block, and the rest (embeddings, the loss head,
  the logits) — measured by :class:`~vidcli.plan.meter.SavedTensors` at 1 and 2 layers
  of each stack and two input sizes, linear in the number of tokens;
- *backward transient*: what backward allocates on top of them at its busiest moment
  (the loss head's logit gradients, each layer's input gradients), measured with every
  weight frozen at one layer (so no weight gradient is counted twice);
- with gradient checkpointing, the layer being recomputed (one layer's saved tensors
  without checkpointing).

GRPO adds two phases without gradients: sampling (the KV cache of G completions of the
full length, counted from the config, and the last position's logits) and the
reference's log-probabilities (measured).

**The workload** is the worst case the flags allow unless given: every example's prompt
at ``--max-prompt-tokens`` (a dense-condition run uses ``--max-prompt-tokens-dense``),
of which ``visual_tokens`` (default half) are image or video tokens — four vision
patches each — and ``target_tokens`` (default 512) of target (``sft``), or G
completions of ``--max-completion-tokens`` (``grpo``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidcli import weights
from vidcli.plan.meter import LiveTensors, SavedTensors
from vidcli.plan.probe import Line, Reading, cut_copy, stacks
from vidcli.plan.report import Phase, Plan, Term, count_text
from vidcli.plan.static import Sharding, module_bytes, trained_terms, weight_term

PROBE_SIZES = (1 / 16, 1 / 8)  # fractions of one real example the probes run at


@dataclass(frozen=True)
class Workload:
    """Tokens of one example: prompt (of which visual) and target (sft) or completion (grpo)."""

    prompt_tokens: int
    visual_tokens: int
    target_tokens: int

    def scaled(self, fraction: float) -> "Workload":
        visual = max(4, round(self.visual_tokens * fraction)) if self.visual_tokens else 0
        return Workload(max(visual + 8, round(self.prompt_tokens * fraction)), visual,
                        max(4, round(self.target_tokens * fraction)))

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


def synthetic_batch(model, work: Workload, rows: int = 1) -> dict:
    """Model inputs shaped like an encoded request: text ids, one image of ``visual_tokens`` tokens, target labels."""
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
    """Probes of one interpreter (the meta build) under one run's settings."""

    def __init__(self, interpreter, mixed_precision: str | None, loss: str, completion: int = 0) -> None:
        self.meta = interpreter.model
        self.mixed_precision = mixed_precision
        self.loss = loss  # "sft" | "grpo"
        self.completion = completion
        self.kinds = [k for k in ("text", "vision") if k in stacks(self.meta)]
        self.upstream_trains = interpreter.camera_encoder is not None and any(
            p.requires_grad for p in interpreter.camera_encoder.parameters())

    def _model(self, depths: dict[str, int], checkpointing: bool | None = None):
        from vidcli.interpreter.model import Interpreter

        model = cut_copy(self.meta, depths)
        if checkpointing is False:
            for module in model.modules():
                if hasattr(module, "gradient_checkpointing"):
                    module.gradient_checkpointing = False
        return Interpreter(model, None)

    def _forward(self, interp, batch: dict, grad: bool = True) -> torch.Tensor:
        from vidcli.train.grpo_loss import grpo_loss, token_logprobs

        with _autocast(self.mixed_precision), torch.set_grad_enabled(grad):
            if self.loss == "sft":
                return interp.loss(batch)
            width = self.completion_width(batch)
            mask = torch.ones(batch["input_ids"].shape[0], width, dtype=torch.long)
            logits = interp.forward(batch, logits_to_keep=width + 1).logits
            logp = token_logprobs(logits, batch["input_ids"], mask)
            if not grad:
                return logp
            loss, _ = grpo_loss(logp, None, logp.detach(), torch.ones(logp.shape[0]), mask)
            return loss

    def completion_width(self, batch: dict) -> int:
        return int((batch["labels"][0] != -100).sum())

    def saved(self, depths: dict[str, int], work: Workload, checkpointing: bool | None = None) -> int:
        """Bytes saved for backward at the end of the forward."""
        interp = self._model(depths, checkpointing)
        batch = synthetic_batch(interp.model, work)
        meter = SavedTensors(exclude=list(interp.model.parameters()))
        hook = _embeddings_require_grad(interp.model) if self.upstream_trains else None
        with meter.hooks():
            loss = self._forward(interp, batch)
        if hook is not None:
            hook.remove()
        held = meter.current
        del loss
        return held

    def transient(self, work: Workload) -> Reading:
        """One layer per stack, every weight frozen: backward's allocations beyond the saved tensors."""
        interp = self._model({k: 1 for k in self.kinds})
        interp.model.requires_grad_(False)
        batch = synthetic_batch(interp.model, work)
        hook = _embeddings_require_grad(interp.model)

        def run(meter: LiveTensors) -> int:
            loss = self._forward(interp, batch)
            held = meter.current
            meter.reset_peak()
            loss.backward()
            return held

        with LiveTensors() as meter:
            held = run(meter)
        hook.remove()
        return Reading(meter.peak, held)

    def no_grad_peak(self, work: Workload) -> int:
        """Peak of a forward without gradients (the reference's log-probabilities)."""
        interp = self._model({k: 1 for k in self.kinds})
        batch = synthetic_batch(interp.model, work)
        with LiveTensors() as meter:
            self._forward(interp, batch, grad=False)
        return meter.peak


@dataclass
class Activations:
    """Fitted activation terms of one micro-batch at the run's sizes."""

    saved: dict[str, float]  # "rest", "text", "vision": bytes at the run's depth
    recompute: float
    transient: float
    depths: dict[str, int]
    no_grad: float = 0.0


def fit_activations(probe: InterpreterProbe, work: Workload, rows: int, checkpointing: bool,
                    reference: bool = False) -> Activations:
    """Measure at two sizes with one layer per stack and with one more layer in each stack;
    evaluate at the run's depths and at ``rows`` examples of ``work``.

    With S(D, f) the saved bytes at depths D and a fraction f of one example: a layer of
    stack k holds S(D₀ + 1ₖ, f) − S(D₀, f), the model without layers holds S(D₀, f) minus
    one layer of each stack; both are lines in f, evaluated at f = rows.
    """
    depth = {k: len(s) for k, s in stacks(probe.meta).items() if k in probe.kinds}
    kinds = [k for k in probe.kinds if k == "text" or work.visual_tokens]
    ones = {k: 1 for k in probe.kinds}

    def layer_and_rest(checkpoint: bool | None) -> tuple[dict[str, Line], Line]:
        base, more = [], {k: [] for k in kinds}
        for fraction in PROBE_SIZES:
            scaled = work.scaled(fraction)
            base.append(probe.saved(ones, scaled, checkpoint))
            for kind in kinds:
                more[kind].append(probe.saved({**ones, kind: 2}, scaled, checkpoint))
        (f0, f1) = PROBE_SIZES
        layers = {k: Line.through(f0, more[k][0] - base[0], f1, more[k][1] - base[1]) for k in kinds}
        rest = Line.through(f0, base[0] - sum(layers[k].at(f0) for k in kinds),
                            f1, base[1] - sum(layers[k].at(f1) for k in kinds))
        return layers, rest

    layers, rest = layer_and_rest(None)
    saved = {kind: depth[kind] * _at(layers[kind], rows) for kind in kinds}
    saved["rest"] = _at(rest, rows)
    recompute = 0.0
    if checkpointing:
        unchecked, _ = layer_and_rest(False)
        recompute = max(_at(unchecked[k], rows) for k in kinds)
    trans = [probe.transient(work.scaled(f)) for f in PROBE_SIZES]
    transient_line = Line.through(PROBE_SIZES[0], trans[0].peak - trans[0].held,
                                  PROBE_SIZES[1], trans[1].peak - trans[1].held)
    no_grad = 0.0
    if reference:
        peaks = [probe.no_grad_peak(work.scaled(f)) for f in PROBE_SIZES]
        no_grad = _at(Line.through(PROBE_SIZES[0], peaks[0], PROBE_SIZES[1], peaks[1]), rows)
    return Activations(saved, recompute, _at(transient_line, rows), depth, no_grad)


def _at(line: Line, rows: int) -> float:
    """A line in the fraction of one example, evaluated for ``rows`` whole examples (constant part once)."""
    return max(0.0, line.intercept + line.slope * rows)


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
    completion = work.target_tokens
    probe = InterpreterProbe(interpreter, mixed_precision, "grpo" if command == "grpo" else "sft", completion)
    acts = fit_activations(probe, work, rows, cfg.gradient_checkpointing, reference=command == "grpo")
    what = f"{rows} × ({work.prompt_tokens} + {work.target_tokens}) tokens"
    how_saved = (f"measured at 1 and 2 layers, {PROBE_SIZES[0]:.3g} and {PROBE_SIZES[1]:.3g} of an example; "
                 f"scaled to {what}")
    names = {"text": "language model", "vision": "vision tower"}
    phase_terms = []
    for kind in ("text", "vision"):
        if kind in acts.saved:
            name = f"saved: {names[kind]}, {acts.depths[kind]} layers"
            terms.append(Term("activations", name, acts.saved[kind], how_saved))
            phase_terms.append(name)
    terms.append(Term("activations", "saved: embeddings, head, loss", acts.saved["rest"], how_saved))
    phase_terms.append("saved: embeddings, head, loss")
    if encoder is not None and any(p.requires_grad for p in encoder.parameters()):
        cam = _camera_saved(encoder, batch, mixed_precision)
        terms.append(Term("activations", "saved: camera encoder", cam, "measured at full size, one map, × batch"))
        phase_terms.append("saved: camera encoder")
    terms.append(Term("activations", "backward transient (loss head, layer inputs)", acts.transient,
                      "measured at 1 layer, weights frozen, two sizes; scaled"))
    phases = [Phase("backward start", phase_terms + ["backward transient (loss head, layer inputs)"])]
    if cfg.gradient_checkpointing:
        terms.append(Term("activations", "recomputed layer (checkpointing)", acts.recompute,
                          "measured: one layer's saved tensors without checkpointing"))
        phases.append(Phase("layer recompute", phase_terms + ["recomputed layer (checkpointing)"]))
    grads = sum(t.bytes for t in terms if t.group == "gradients")
    if run.grad_accum == 1:
        # Gradients appear as activations are freed: the activation peak comes before them.
        for phase in phases:
            phase.extra = -grads
        phases.append(Phase("optimizer step", []))
    if command == "grpo":
        sampling = _sampling_bytes(model, rows, work, mixed_precision)
        terms.append(Term("activations", "sampling: KV cache and logits", sampling,
                          f"counted: {rows} rows × {work.prompt_tokens + completion} positions"))
        terms.append(Term("activations", "reference log-probs (no gradient)", acts.no_grad,
                          "measured at 1 layer, two sizes; scaled"))
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
    from vidcli.plan.probe import materialise

    import copy

    clone = copy.deepcopy(encoder)
    materialise(clone)
    clone.train()
    height, width = clone.config.image_size
    maps = torch.zeros(1, clone.config.in_channels, height, width)
    meter = SavedTensors(exclude=list(clone.parameters()))
    with meter.hooks(), _autocast(mixed_precision):
        out = clone(maps)
    held = meter.current
    del out
    return float(held * batch)


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
