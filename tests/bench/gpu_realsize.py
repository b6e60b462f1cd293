"""One training step of every trainer at the published sizes, random weights, on one GPU.

Each run goes through the recipe users run (``setup()`` → optimiser steps): the models
are the published architectures (configs in ``tests/data/realsize/``) built by
:func:`vidcli.weights.random_weights` directly on the GPU, the batches come from real
records through the recipes' own data code. What is not real: the weights (random,
so texts and videos are noise, which costs the same), the tokenizers (the tiny kit's,
trained offline, holding the special tokens each model needs), and media decoding
(the GPU image has no video decoder: reference and source clips are random frames of
the size the recipe asks for).

Printed per run, and written to ``OUT/realsize.json`` after each run:

- ``static``: ``torch.cuda.memory_allocated`` after setup (weights, frozen models);
- ``peak``: ``torch.cuda.max_memory_allocated`` over the measured step, optimiser
  state included (a warm-up step, or a zero-gradient optimiser step, creates it first);
- ``s/step``: wall time of the measured step (``torch.cuda.synchronize`` around it);
- the plan's prediction for the same settings (:mod:`vidcli.plan`) and the ratio
  measured / planned, when the planner can size the run.

Runs (``--only`` picks some): ``drf`` (Wan2.1-T2V-1.3B + Qwen2.5-VL-7B, 49×288×512,
25 steps, K and N_f as the paper varies them, with and without each memory measure),
``revise`` (Wan2.1-1.3B editor + Qwen2.5-VL-7B critic; a step with the critic and one
without, whose mix at the 25 % trigger rate is the amortised cost per triplet), ``sft``
(Qwen2.5-VL-7B LoRA with and without gradient checkpointing, Qwen2.5-VL-3B full),
``grpo`` (Qwen2.5-VL-7B LoRA, G = 8, 768-token completions).

Usage::

    python tests/bench/gpu_realsize.py [--only drf,revise,sft,grpo] [--out DIR] [--budget-s 480]
    python tests/bench/gpu_realsize.py --small     # the same runs at toy sizes on CPU: checks the script

The GPU machine's own Python needs diffusers (a pure-Python wheel) beside torch,
transformers, accelerate and peft; nothing else of vidcli's dependencies is imported.
On a machine without a package index, bring the wheels along and run (about 7 minutes
on one H200; ``--budget-s`` stops starting new runs after that many seconds)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
        diffusers==0.42.1 importlib_metadata                 # where an index is reachable
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 tests/bench/gpu_realsize.py --budget-s 420 --out results/

Then, anywhere (CPU, shapes only; a minute per run)::

    python tests/bench/gpu_realsize.py --compare results/realsize.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

REALSIZE = ROOT / "tests" / "data" / "realsize"
GiB = 1024 ** 3


# ----------------------------------------------------------------------------- model folders


def _write_qwen_processor(folder: Path, preprocessor: dict, small: bool) -> dict[str, int]:
    """The tiny kit's Qwen tokenizer with the real image/video processor settings; returns special ids."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from vidcli.testing.tokenizers import QWEN_SPECIAL_TOKENS, VLM_CHAT_TEMPLATE, qwen_tokenizer

    tok = qwen_tokenizer()
    sizes = {k: preprocessor[k] for k in ("patch_size", "temporal_patch_size", "merge_size", "image_mean",
                                          "image_std") if k in preprocessor}
    pixels = dict(min_pixels=preprocessor.get("min_pixels", 3136), max_pixels=preprocessor.get("max_pixels", 12845056))
    if small:
        pixels = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    image = Qwen2VLImageProcessor(**pixels, **sizes)
    # Videos as the Qwen2.5-VL card advises for training-size clips: at most 360×420 pixels a frame.
    video = Qwen2VLVideoProcessor(min_pixels=pixels["min_pixels"], max_pixels=min(pixels["max_pixels"], 360 * 420),
                                  min_frames=2, max_frames=64, **sizes)
    Qwen2_5_VLProcessor(image_processor=image, tokenizer=tok, video_processor=video,
                        chat_template=VLM_CHAT_TEMPLATE).save_pretrained(folder)
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)))
    return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
            "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>")}


DEPTH: int | None = None  # --depth: published widths at this depth (a CPU check of the real-size path)


def _shallow(config: dict) -> dict:
    """``config`` with every stack cut to ``DEPTH`` layers (widths untouched)."""
    if DEPTH is None:
        return config
    for section in (config, config.get("text_config") or {}, config.get("vision_config") or {}):
        for key in ("num_hidden_layers", "num_layers", "depth"):
            if key in section:
                section[key] = DEPTH
        if "fullatt_block_indexes" in section:
            section["fullatt_block_indexes"] = [DEPTH - 1]
        if "layer_types" in section:
            section["layer_types"] = section["layer_types"][:DEPTH]
        if "max_window_layers" in section:
            section["max_window_layers"] = DEPTH
    return config


def vlm_folder(name: str, work: Path, small: bool) -> Path:
    """A Qwen2(.5)-VL folder: the published config (or the tiny kit's) + a processor, no weights."""
    src = tiny_dir() / "vlm" if small else REALSIZE / name
    dst = work / f"{name}{'-small' if small else ''}"
    if dst.exists():
        return dst
    dst.mkdir(parents=True)
    config = _shallow(json.loads((src / "config.json").read_text()))
    pre = json.loads((src / "preprocessor_config.json").read_text()) if (src / "preprocessor_config.json").exists() \
        else {}
    ids = _write_qwen_processor(dst, pre, small)
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        config[key] = ids[key]
    for section in (config, config.get("text_config") or {}):
        for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
            if key in section:
                section[key] = ids[key]
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    (dst / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [ids["eos_token_id"]], "pad_token_id": ids["pad_token_id"], "do_sample": True}))
    return dst


def wan_folder(name: str, work: Path, small: bool) -> Path:
    """A Wan pipeline folder: the published component configs (or the tiny kit's) + a T5 tokenizer."""
    src = tiny_dir() / "wan" if small else REALSIZE / name
    dst = work / f"{name}{'-small' if small else ''}"
    if dst.exists():
        return dst
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "tokenizer"))
    for part in ("transformer", "text_encoder"):
        file = dst / part / "config.json"
        file.write_text(json.dumps(_shallow(json.loads(file.read_text())), indent=2))
    if not small:
        from vidcli.testing.tokenizers import unigram_tokenizer

        unigram_tokenizer(vocab_size=400).save_pretrained(dst / "tokenizer")
        index = json.loads((dst / "model_index.json").read_text())
        index["tokenizer"] = ["transformers", "AutoTokenizer"]
        (dst / "model_index.json").write_text(json.dumps(index, indent=2))
    else:
        shutil.copytree(src / "tokenizer", dst / "tokenizer")
    return dst


def tiny_dir() -> Path:
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models(which=("vlm", "wan"))["vlm"].parent


# ----------------------------------------------------------------------------- records


WORDS = ("a red ball rolls across green grass while the camera slowly pans left under a bright blue sky "
         "then a small dog runs after it and jumps over a wooden fence near an old oak tree").split()


def words(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(i + offset) % len(WORDS)] for i in range(n))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def drf_records(work: Path, questions: int) -> Path:
    (work / "real.mp4").write_bytes(b"\0")  # exists for the record check; frames are drawn, not decoded
    qs = [{"dim": "TA", "key": f"k{i}", "question": f"Does the video show {words(12, i)}?",
           "reference": {"answer": "Yes", "explanation": words(40, i)}} for i in range(questions)]
    qs += [{"dim": "Phy", "key": "physics", "question": "Compare the two videos: " + words(60),
            "reference": {"aspects": {a: "No" for a in ("liquid", "deformation", "texture", "motion", "contact")},
                          "answer": "No", "explanation": words(40)}},
           {"dim": "VQ", "key": "quality", "question": "Compare the visual quality: " + words(40),
            "reference": {"answer": "No", "issue": "none", "explanation": words(40)}}]
    return write_jsonl(work / "drf.jsonl", [{"id": f"r{i}", "caption": words(60, i), "questions": qs,
                                             "video": "real.mp4"} for i in range(4)])


def triplet_records(work: Path) -> Path:
    for name in ("src.mp4", "tgt.mp4"):
        (work / name).write_bytes(b"\0")
    return write_jsonl(work / "triplets.jsonl", [
        {"id": f"t{i}", "instruction": words(30, i), "source": {"video": "src.mp4", "start": 0, "end": 3},
         "target": {"video": "tgt.mp4", "start": 0, "end": 3}} for i in range(8)])


def sft_records(work: Path, images: int, side: int, instruction_words: int, target_words: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(work / f"id{i}.png")
    conditions = [{"type": "identity", "path": f"id{i}.png"} for i in range(images)]
    return write_jsonl(work / "sft.jsonl", [
        {"id": f"s{i}", "instruction": words(instruction_words, i), "conditions": conditions,
         "cot": {"target": "<think>" + words(target_words, i) + "</think><answer>" + words(40, i) + "</answer>"}}
        for i in range(12)])


def grpo_records(work: Path, instruction_words: int) -> Path:
    key_info = {k: {"objects": [{"name": "ball", "attributes": ["red"]}], "actions": ["rolls"], "camera": ["pan"],
                    "style": []} for k in ("user", "supplementary", "imaginative")}
    return write_jsonl(work / "grpo.jsonl", [{"id": f"g{i}", "instruction": words(instruction_words, i),
                                              "key_info": key_info} for i in range(4)])


class LengthReward:
    """A stand-in for the ReaDe judge (no judge server here): varies within a group, costs nothing."""

    def score_many(self, completions, key_infos):
        from vidcli.rewards.reade import PARTS, RewardResult

        out = []
        for text in completions:
            value = (len(text) % 17) / 17
            out.append(RewardResult(value, {p: value if p == "format" else None for p in PARTS}, True, True, {}))
        return out


# ----------------------------------------------------------------------------- measuring


class Meter:
    """Memory and time of a recipe's optimiser steps, read at each ``accelerator.log`` call,
    with the peak of each phase of a step (rollout, decode, reward, backward, ...)."""

    def __init__(self, recipe, device) -> None:
        import torch

        self.torch, self.device, self.recipe = torch, device, recipe
        self.steps: list[dict] = []
        self.phases: list[tuple[str, int, int]] = []  # (phase, peak, allocated at its end)
        self.cuda = device.type == "cuda"
        self.static = self.allocated()
        self.reset()
        log = recipe.accelerator.log

        def logged(values, step=None, **kwargs):
            self.mark("optimizer")
            now = time.perf_counter()
            phases: dict[str, float] = {}
            for name, peak, _ in self.phases:
                phases[name] = max(phases.get(name, 0), peak / GiB)
            self.steps.append({"step": step, "s": now - self.t0, "peak": max(p for _, p, _ in self.phases),
                               "allocated": self.allocated(), "phases_gib": phases})
            log(values, step=step, **kwargs)
            self.reset()

        recipe.accelerator.log = logged

    def wrap(self, owner, name: str, before: str | None, after: str | None) -> None:
        """Mark a phase boundary when ``owner.name`` is called (``before``) and when it returns (``after``)."""
        function = getattr(owner, name)

        def marked(*args, **kwargs):
            if before:
                self.mark(before)
            out = function(*args, **kwargs)
            if after:
                self.mark(after)
            return out

        setattr(owner, name, marked)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return self.torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def mark(self, phase: str) -> None:
        """The phase that just ended: its peak (since the last mark) and what it left allocated."""
        self.sync()
        peak = self.torch.cuda.max_memory_allocated(self.device) if self.cuda else 0
        self.phases.append((phase, peak, self.allocated()))
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def reset(self) -> None:
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.phases = []
        self.t0 = time.perf_counter()


def instrument(kind: str, recipe, meter: Meter) -> None:
    """Phase marks for each trainer's step (see the module docstring)."""
    acc = recipe.accelerator
    if kind == "drf":
        meter.wrap(recipe.adapter, "decode", "rollout", "decode")
        meter.wrap(acc, "backward", "reward", "backward")
    elif kind == "revise":
        meter.wrap(recipe.adapter, "decode", "dit forward", "decode")
        meter.wrap(acc, "backward", "critic", "backward")
    elif kind == "grpo":
        meter.wrap(recipe, "rollout", None, "rollout")
        meter.wrap(acc, "backward", "forward", "backward")
    else:
        meter.wrap(acc, "backward", "forward", "backward")


def create_optimizer_state(recipe) -> None:
    """One optimiser step on zero gradients: the state (Adam moments) exists before the measured step."""
    optimizer = recipe.optimizer
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = param.detach().new_zeros(param.shape)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def release(recipe) -> None:
    import torch

    try:
        recipe.accelerator.free_memory()
        recipe.cleanup()
    except Exception:  # noqa: BLE001 - best effort between runs
        pass
    for name in list(vars(recipe)):
        setattr(recipe, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- runs


def run_dit(kind: str, label: str, config, *, steps: int, device: str, frames_fn) -> dict:
    """Set up a drf-tune / revise-tune recipe with random weights and run ``steps`` optimiser steps."""

    from vidcli import weights
    from vidcli.train.drf import DRFRecipe
    from vidcli.train.revise import Clip, ReviseRecipe

    recipe = (DRFRecipe if kind == "drf" else ReviseRecipe)(config)
    t0 = time.perf_counter()
    with weights.random_weights(device):
        recipe.setup()
    setup_s = time.perf_counter() - t0
    if kind == "drf":
        recipe.reference_frames = lambda task: (frames_fn(config.frames_vlm, config.height, config.width), 3.3)
    else:
        Clip.pixels = lambda self, frames, width, height: frames_fn(frames, height, width)
        Clip.seconds = lambda self: 3.0  # the records' clips are 3 s long
    meter = Meter(recipe, recipe.accelerator.device)
    instrument(kind, recipe, meter)
    if steps == 1:
        create_optimizer_state(recipe)
        meter.reset()
    for _ in range(steps):
        recipe.optimise()
    result = summarise(label, recipe, meter, setup_s)
    release(recipe)
    return result


def run_interpreter(kind: str, label: str, config, *, steps: int, device: str, reward=None) -> dict:
    from vidcli import weights
    from vidcli.train.grpo import GRPORecipe
    from vidcli.train.sft import SFTRecipe

    recipe = SFTRecipe(config) if kind == "sft" else GRPORecipe(config, reward)
    t0 = time.perf_counter()
    with weights.random_weights(device):
        recipe.setup()
    setup_s = time.perf_counter() - t0
    recipe.save_checkpoint = lambda final=False, summary=None: config.run.output_dir  # nothing written: a bench
    recipe.total_steps = steps
    workload = interpreter_workload(kind, recipe)
    meter = Meter(recipe, recipe.accelerator.device)
    instrument(kind, recipe, meter)
    if steps == 1:
        create_optimizer_state(recipe)
        meter.reset()
    recipe.train()
    result = summarise(label, recipe, meter, setup_s)
    result["workload"] = workload
    release(recipe)
    return result


def interpreter_workload(kind: str, recipe) -> list[int]:
    """(prompt tokens, visual tokens, target or completion tokens) of the run's first example."""
    if kind == "sft":
        batch = recipe.batch(0, [0])
        labels = batch["labels"][0]
        image = recipe.interpreter.model.config.image_token_id
        return [int((labels == -100).sum()), int((batch["input_ids"][0] == image).sum()), int((labels != -100).sum())]
    prompt = int(recipe.interpreter.encode(recipe.requests([0]))["attention_mask"][0].sum())
    return [prompt, 0, recipe.config.max_completion_tokens]


def _workload(result: dict):
    if not result.get("workload"):
        return None
    from vidcli.plan.interpreter import Workload

    return Workload(*result["workload"])


def summarise(label: str, recipe, meter: Meter, setup_s: float) -> dict:
    last = meter.steps[-1]
    return {"run": label, "static_gib": meter.static / GiB, "peak_gib": last["peak"] / GiB,
            "s_per_step": last["s"], "phases_gib": last["phases_gib"], "steps": meter.steps, "setup_s": setup_s,
            "trainable": sum(p.numel() for p in recipe.trainable), "metrics": dict(recipe.metrics or {})}


COMMAND = {"drf": "drf-tune", "revise": "revise-tune", "sft": "sft", "grpo": "grpo"}


def plan_for(kind: str, config, work=None) -> dict:
    """The planner's prediction for the same settings (on this machine's CPU, shapes only)."""
    from vidcli.plan import plan_run

    try:
        return plan_run(COMMAND[kind], config, workload=work).summary()
    except Exception as exc:  # noqa: BLE001 - a bench: report and go on
        return {"error": f"{type(exc).__name__}: {exc}"}


def compare(path: Path, small: bool) -> int:
    """Measured (a JSON written by a GPU run) against the plan of each run's settings, side by side."""
    report = json.loads(path.read_text())
    work = Path(tempfile.mkdtemp(prefix="realsize-plan-"))
    configs = {}
    for kind in ("drf", "revise", "sft", "grpo"):
        made = dit_runs(kind, work, small, "cuda") if kind in ("drf", "revise") else interpreter_runs(kind, work, small)
        configs.update({label: (kind, config) for label, config in made})
    print(f"{'run':<78}{'measured':>10}{'planned':>10}{'ratio':>7}{'s/step':>8}")
    for run in report["runs"]:
        if "error" in run or run["run"] not in configs:
            print(f"{run['run']:<78}{run.get('error', 'not in this bench')[:40]}")
            continue
        kind, config = configs[run["run"]]
        work_ = None
        if run.get("workload"):
            from vidcli.plan.interpreter import Workload

            work_ = Workload(*run["workload"])
        plan = plan_for(kind, config, work_)
        planned = plan.get("peak_gib")
        ratio = f"{run['peak_gib'] / planned:.2f}" if planned else "n/a"
        print(f"{run['run']:<78}{run['peak_gib']:>10.1f}{planned or float('nan'):>10.1f}{ratio:>7}"
              f"{run['s_per_step']:>8.2f}")
    return 0


# ----------------------------------------------------------------------------- the runs


def dit_runs(kind: str, work: Path, small: bool, device: str) -> list[tuple[str, object]]:
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.drf import DRFConfig
    from vidcli.train.revise import ReviseConfig

    wan = wan_folder("wan2.1-t2v-1.3b", work, small)
    vlm = vlm_folder("qwen2.5-vl-7b", work, small)
    size = (dict(height=64, width=96, frames=9 if small else 17) if small or DEPTH
            else dict(height=288, width=512, frames=49))

    def run(name: str, **optim) -> RunConfig:
        return RunConfig(work / "runs" / name, batch_size=1, grad_accum=optim.pop("grad_accum", 1), save_every=0,
                         max_steps=100, mixed_precision="auto",
                         optim=OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant", **optim))

    if kind == "drf":
        records = drf_records(work, questions=2 if small else 5)
        base = DRFConfig(model=str(wan), vlm=str(vlm), inputs=[str(records)], run=run("drf"),
                         steps=4 if small or DEPTH else 25,
                         k_grad=4, frames_vlm=4 if small else 10, gradient_checkpointing=True,
                         decode_checkpointing=False, **size)
        return [
            ("drf full K4 Nf10, DiT ckpt", base),
            ("drf full K4 Nf10, DiT ckpt + decode ckpt", replace(base, decode_checkpointing=True)),
            ("drf full K1 Nf10, DiT ckpt + decode ckpt", replace(base, decode_checkpointing=True, k_grad=1)),
            ("drf full K4 Nf2, DiT ckpt + decode ckpt", replace(base, decode_checkpointing=True, frames_vlm=2)),
            ("drf full K4 Nf10, decode ckpt (vidcli defaults)", replace(base, decode_checkpointing=True,
                                                                        gradient_checkpointing=False)),
            ("drf lora K4 Nf10, DiT ckpt + decode ckpt", replace(base, decode_checkpointing=True, finetune="lora")),
            ("drf full K4 Nf10, DiT ckpt + decode ckpt + text encoder offload",
             replace(base, decode_checkpointing=True, offload_text_encoder=True)),
        ]
    records = triplet_records(work)
    base = ReviseConfig(model=str(wan), vlm=str(vlm), inputs=[str(records)], run=run("revise", grad_accum=2),
                        frames_critic=4 if small else 8, sigma_max=1.0, **size)
    return [
        ("revise full, critic on every triplet (vidcli defaults)", base),
        ("revise full, no critic (t above sigma_max)", replace(base, sigma_max=0.0)),
        ("revise full, critic on every triplet, DiT ckpt", replace(base, gradient_checkpointing=True)),
    ]


def interpreter_runs(kind: str, work: Path, small: bool) -> list[tuple[str, object]]:
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.grpo import GRPOConfig
    from vidcli.train.sft import SFTConfig

    def run(name: str, batch: int, lr: float) -> RunConfig:
        return RunConfig(work / "runs" / name, batch_size=batch, grad_accum=1, save_every=0, max_steps=2,
                         mixed_precision="auto", optim=OptimConfig(lr=lr, warmup_steps=0, schedule="constant"))

    if kind == "sft":
        # About 1000 prompt tokens (two 336-pixel identity images: 288 visual tokens) + 500 target tokens.
        records = sft_records(work, images=2, side=56 if small else 336, instruction_words=14,
                              target_words=30 if small else 260)
        vlm7, vlm3 = vlm_folder("qwen2.5-vl-7b", work, small), vlm_folder("qwen2.5-vl-3b", work, small)
        base = SFTConfig(model=str(vlm7), inputs=[str(records)], run=run("sft", 2 if small else 6, 1e-5),
                         finetune="lora", gradient_checkpointing=True, instruction_dropout=0.0)
        return [
            ("sft qwen2.5-vl-7b lora, batch 6, ckpt", base),
            ("sft qwen2.5-vl-7b lora, batch 6, no ckpt", replace(base, gradient_checkpointing=False)),
            ("sft qwen2.5-vl-3b full, batch 6, ckpt", replace(base, model=str(vlm3), finetune="full")),
        ]
    records = grpo_records(work, instruction_words=20 if small else 185)  # about 1000 prompt tokens
    vlm7 = vlm_folder("qwen2.5-vl-7b", work, small)
    tokens = 16 if small else 768
    base = GRPOConfig(model=str(vlm7), inputs=[str(records)], run=run("grpo", 1, 1e-5), finetune="lora",
                      num_generations=8, max_completion_tokens=tokens, min_completion_tokens=tokens,
                      judge="embed")
    return [("grpo qwen2.5-vl-7b lora, G=8, 768-token completions", base)]


# Order of the runs: each trainer's main runs first, the variants after, so a short budget
# still measures every trainer. Keys are positions in each trainer's list; missing: last.
PRIORITY = {0: 0, 1: 1, 5: 1, 6: 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="drf,revise,sft,grpo")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--small", action="store_true", help="toy sizes on CPU: checks the script")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip runs that would start after this")
    parser.add_argument("--first", type=int, default=99, help="at most this many variants per trainer")
    parser.add_argument("--with-plan", action="store_true",
                        help="also plan each run here (shapes only, on the CPU: about a minute a run)")
    parser.add_argument("--compare", type=Path, default=None, metavar="JSON",
                        help="plan the runs a GPU run measured (its realsize.json) and print both side by side")
    parser.add_argument("--depth", type=int, default=None,
                        help="published widths cut to this many layers, small clips (a CPU check of the real path)")
    args = parser.parse_args(argv)
    global DEPTH
    DEPTH = args.depth
    if args.compare is not None:
        return compare(args.compare, args.small)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "torch": torch.__version__, "small": args.small, "runs": []}
    try:
        import accelerate
        import diffusers
        import peft
        import transformers

        report.update(transformers=transformers.__version__, diffusers=diffusers.__version__,
                      accelerate=accelerate.__version__, peft=peft.__version__)
    except ImportError as exc:
        print(f"missing package: {exc}", flush=True)
        return 1
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}), flush=True)
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 leftovers (scheduler, losses) on tensor cores
    work = Path(tempfile.mkdtemp(prefix="realsize-"))

    def frames_fn(count: int, height: int, width: int):
        return torch.rand(count, 3, height, width)

    planned = []
    for kind in [k for k in args.only.split(",") if k]:
        runs = dit_runs(kind, work, args.small, device) if kind in ("drf", "revise") \
            else interpreter_runs(kind, work, args.small)
        planned += [(PRIORITY.get(number, 2), kind, number, label, config)
                    for number, (label, config) in enumerate(runs[:args.first])]
    warm: set[str] = set()
    for _, kind, number, label, config in sorted(planned, key=lambda item: item[0]):
        if time.perf_counter() - start > args.budget_s:
            print(f"{label}: skipped (budget)", flush=True)
            continue
        # The first run of each trainer takes a warm-up step; later ones create the optimiser
        # state with a zero-gradient step and measure one.
        steps = 1 if kind in warm else 2
        warm.add(kind)
        try:
            if kind in ("drf", "revise"):
                result = run_dit(kind, label, config, steps=steps, device=device, frames_fn=frames_fn)
            else:
                result = run_interpreter(kind, label, config, steps=steps, device=device,
                                         reward=LengthReward() if kind == "grpo" else None)
        except torch.OutOfMemoryError as exc:
            result = {"run": label, "error": f"out of memory: {str(exc).splitlines()[0]}"}
        except Exception as exc:  # noqa: BLE001 - a bench: report and go on
            result = {"run": label, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()[-3000:]}
            print(result["traceback"], flush=True)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        result["kind"] = kind
        result["config"] = describe(config)
        if args.with_plan:
            result["plan"] = plan_for(kind, config, _workload(result))
        report["runs"].append(result)
        print(line(result), flush=True)
        (out / "realsize.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def describe(config) -> dict:
    from dataclasses import asdict

    values = asdict(config)
    values.pop("arguments", None)
    values["run"] = {k: v for k, v in values["run"].items() if k not in ("output_dir",)}
    return values


def line(result: dict) -> str:
    if "error" in result:
        return f"{result['run']}: {result['error']}"
    text = f"{result['run']}: static {result['static_gib']:.1f} GiB, peak {result['peak_gib']:.1f} GiB, " \
           f"{result['s_per_step']:.2f} s/step (setup {result['setup_s']:.0f} s)"
    plan = result.get("plan") or {}
    if "peak_gib" in plan:
        text += f"; plan {plan['peak_gib']:.1f} GiB ({result['peak_gib'] / plan['peak_gib']:.2f}x)"
    return text


if __name__ == "__main__":
    sys.exit(main())
