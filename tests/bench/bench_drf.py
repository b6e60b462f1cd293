"""Memory and time of one drf-tune step: truncated gradient vs full back-propagation.

Runs one optimiser step of the Diffusion-DRF recipe on the tiny Wan pipeline and tiny
Qwen2.5-VL twice, side by side:

- ``drf``: the recipe's default — gradient through the last K=4 of 25 denoising steps,
  each under activation checkpointing;
- ``full``: gradient through all 25 steps, no checkpointing (what naive reward
  back-propagation does).

Peak memory:
- on a GPU, ``torch.cuda.max_memory_allocated`` over the step (everything: weights,
  activations, recomputation, gradients, optimiser state);
- on CPU, the peak bytes of tensors saved for backward, counted through
  ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, parameters excluded,
  a storage counted while any graph node still holds it). Tensors that checkpointing
  recomputes during backward are saved inside the checkpoint and escape the hook, so for
  ``drf`` the bytes one denoising step saves (measured the same way) are added: at most
  one checkpointed step is recomputed at a time. Weights, gradients and optimiser state
  are the same in both runs and are not counted.

The tiny test DiT (2 layers, width 16) is so narrow that the VAE decode and the VLM,
identical in both runs, dominate the peak; a real Wan DiT is the other way round. By
default the bench therefore swaps in a wider DiT (``--dit-width 64 --dit-layers 4``,
still a few MB) into a copy of the tiny pipeline; ``--dit-width 16 --dit-layers 2`` is
the tiny test DiT itself.

Usage: ``python tests/bench/bench_drf.py [--size 96] [--frames 9] [--steps 25] [--k-grad 4]``.
Prints a table and the memory ratio drf/full (target ≤ 0.35).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGET = 0.35
RECORD = {"id": "bench", "caption": "a red ball rolls over green grass under a blue sky",
          "questions": [{"dim": "TA", "key": "objects", "question": "Is there a red ball?",
                         "reference": {"answer": "Yes", "explanation": "A red ball rolls over the grass."}}]}


class SavedTensorMeter:
    """Live and peak bytes of distinct non-parameter storages held for backward."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.holders: dict[int, list[int]] = {}  # storage pointer -> [bytes, holders]
        self.current = self.peak = 0

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr == 0 or ptr in self.exclude:
            return tensor
        entry = self.holders.setdefault(ptr, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        return _Held(tensor, self, ptr)

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Held) else packed

    def release(self, ptr: int) -> None:
        entry = self.holders[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.holders[ptr]

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    """What autograd keeps for one saved tensor; freeing the graph node frees this."""

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter, ptr: int) -> None:
        self.tensor, self.meter, self.ptr = tensor, meter, ptr

    def __del__(self) -> None:
        self.meter.release(self.ptr)


def widened_pipeline(tiny: Path, out: Path, *, width: int, layers: int) -> Path:
    """A copy of the tiny Wan pipeline whose DiT has ``layers`` blocks of ``width`` channels."""
    from diffusers import WanPipeline, WanTransformer3DModel

    pipe = WanPipeline.from_pretrained(tiny)
    old = pipe.transformer.config
    torch.manual_seed(0)
    pipe.transformer = WanTransformer3DModel(
        patch_size=tuple(old.patch_size), num_attention_heads=width // 16, attention_head_dim=16,
        in_channels=old.in_channels, out_channels=old.out_channels, text_dim=old.text_dim, freq_dim=old.freq_dim,
        ffn_dim=4 * width, num_layers=layers, rope_max_seq_len=old.rope_max_seq_len)
    pipe.save_pretrained(out)
    return out


def make_recipe(kit: dict, out: Path, *, steps: int, k_grad: int, checkpoint_steps: bool, args):
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.drf import DRFConfig, DRFRecipe

    run = RunConfig(output_dir=out, max_steps=1, batch_size=1, grad_accum=1, save_every=0, mixed_precision="no",
                    optim=OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant"))
    config = DRFConfig(model=str(kit["wan"]), vlm=str(kit["vlm"]), inputs=[str(kit["records"])], run=run,
                       steps=steps, k_grad=k_grad, checkpoint_steps=checkpoint_steps, frames_vlm=args.frames_vlm,
                       guidance=args.guidance, height=args.size, width=args.size, frames=args.frames)
    recipe = DRFRecipe(config)
    recipe.setup()
    return recipe


def parameter_storages(recipe) -> set[int]:
    pipe = recipe.adapter.pipe
    modules = [pipe.transformer, pipe.vae, pipe.text_encoder, recipe.scorer.model]
    return {p.untyped_storage().data_ptr() for m in modules for p in m.parameters()}


def one_denoise_step_bytes(recipe) -> int:
    """Bytes one grad-carrying denoiser evaluation saves (what a checkpointed step recomputes)."""
    cfg, adapter = recipe.config, recipe.adapter
    embeds = adapter.encode_prompt([recipe.tasks[0].prompt], None, cfg.guidance)
    latents = adapter.prepare_latents(1, cfg.frames, cfg.height, cfg.width, torch.Generator().manual_seed(0))
    t = adapter.make_sampler(cfg.steps).timesteps[-1]
    meter = SavedTensorMeter(parameter_storages(recipe))
    with meter.hooks():
        out = adapter.denoise(latents, t, embeds, cfg.guidance)
    peak = meter.peak
    del out
    return peak


def measure(recipe, *, recompute_step: bool) -> dict:
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    meter = SavedTensorMeter(parameter_storages(recipe))
    start = time.perf_counter()
    with meter.hooks():
        (result,) = recipe.optimise()  # one record per step and process
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        return {"peak_bytes": torch.cuda.max_memory_allocated(), "how": "cuda max_memory_allocated",
                "seconds": seconds, "loss": result["loss"]}
    extra = one_denoise_step_bytes(recipe) if recompute_step else 0
    return {"peak_bytes": meter.peak + extra, "saved_peak": meter.peak, "recompute": extra,
            "how": "saved tensors (hooks) + one recomputed step", "seconds": seconds, "loss": result["loss"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96, help="Video height and width (pixels).")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--frames-vlm", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--k-grad", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--dit-width", type=int, default=64, help="DiT channels (multiple of 16; 16 = tiny test DiT).")
    parser.add_argument("--dit-layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vidcli.testing import ensure_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = tmp / "records.jsonl"
        records.write_text(json.dumps(RECORD) + "\n", encoding="utf-8")
        kit = {**ensure_tiny_models(["wan", "vlm"]), "records": records}
        if (args.dit_width, args.dit_layers) != (16, 2):
            kit["wan"] = widened_pipeline(kit["wan"], tmp / "wan", width=args.dit_width, layers=args.dit_layers)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        rows = {}
        for name, k_grad, ckpt in (("drf", args.k_grad, True), ("full", args.steps, False)):
            recipe = make_recipe(kit, tmp / name, steps=args.steps, k_grad=k_grad, checkpoint_steps=ckpt, args=args)
            rows[name] = measure(recipe, recompute_step=ckpt)
            recipe.cleanup()
            del recipe
            shutil.rmtree(tmp / name, ignore_errors=True)
    print(f"device {device}; DiT width {args.dit_width} x {args.dit_layers} layers; "
          f"{args.size}x{args.size}, {args.frames} frames, N_f={args.frames_vlm}, "
          f"{args.steps} steps, guidance {args.guidance}; memory = {rows['drf']['how']}")
    print(f"{'run':<6}{'grad steps':>11}{'checkpointing':>15}{'peak MiB':>11}{'step s':>9}{'loss':>10}")
    for name, grad_steps, ckpt in (("drf", args.k_grad, "per step"), ("full", args.steps, "off")):
        row = rows[name]
        print(f"{name:<6}{grad_steps:>11}{ckpt:>15}{row['peak_bytes'] / 2**20:>11.2f}{row['seconds']:>9.2f}"
              f"{row['loss']:>10.3f}")
    if "recompute" in rows["drf"]:
        print(f"drf peak = {rows['drf']['saved_peak'] / 2**20:.2f} MiB saved + "
              f"{rows['drf']['recompute'] / 2**20:.2f} MiB for one recomputed denoising step")
    ratio = rows["drf"]["peak_bytes"] / rows["full"]["peak_bytes"]
    print(f"memory ratio drf/full = {ratio:.3f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}); "
          f"time ratio = {rows['drf']['seconds'] / rows['full']['seconds']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
