"""Memory and time of one drf-tune step: truncated gradient vs full back-propagation; the decode.

Part 1 runs one optimiser step of the Diffusion-DRF recipe on the tiny Wan pipeline and
tiny Qwen2.5-VL, side by side:

- ``drf``: the recipe's defaults — gradient through the last K=4 of 25 denoising steps,
  each under activation checkpointing, and the checkpointed VAE decode;
- ``drf-plain-decode``: the same with ``--no-decode-checkpointing``;
- ``full``: gradient through all 25 steps, no checkpointing anywhere (what naive reward
  back-propagation does).

Peak memory: on a GPU ``torch.cuda.max_memory_allocated`` over the step; on CPU the
peak of the bytes of every tensor the step allocates (:class:`vidcli.plan.meter.LiveTensors`)
— activations, recomputation, gradients; weights and optimiser state, the same in all
runs, are left out.

Part 2 decodes N_f frames of videos of several lengths and prints the bytes the decode
holds from its forward until its backward, with and without checkpointing: without it
they grow with the video's length (every latent frame decodes with a graph, since the
last frame is always sampled and the VAE is causal); with it they grow with N_f only
(the latents and the frames returned).

The tiny test DiT (2 layers, width 16) is so narrow that the VAE decode and the VLM,
identical in all runs, dominate the peak; a real Wan DiT is the other way round. By
default the bench therefore swaps in a wider DiT (``--dit-width 64 --dit-layers 4``,
still a few MB) into a copy of the tiny pipeline; ``--dit-width 16 --dit-layers 2`` is
the tiny test DiT itself.

Usage: ``python tests/bench/bench_drf.py [--size 96] [--frames 9] [--steps 25] [--k-grad 4]``.
Prints two tables and the memory ratio drf/full (target ≤ 0.35).
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


def make_recipe(kit: dict, out: Path, *, steps: int, k_grad: int, checkpoint_steps: bool, decode_checkpointing: bool,
                args):
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.drf import DRFConfig, DRFRecipe

    run = RunConfig(output_dir=out, max_steps=1, batch_size=1, grad_accum=1, save_every=0, mixed_precision="no",
                    optim=OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant"))
    config = DRFConfig(model=str(kit["wan"]), vlm=str(kit["vlm"]), inputs=[str(kit["records"])], run=run,
                       steps=steps, k_grad=k_grad, checkpoint_steps=checkpoint_steps, frames_vlm=args.frames_vlm,
                       guidance=args.guidance, height=args.size, width=args.size, frames=args.frames,
                       decode_checkpointing=decode_checkpointing)
    recipe = DRFRecipe(config)
    recipe.setup()
    return recipe


def measure(recipe) -> dict:
    from vidcli.plan.meter import LiveTensors

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with LiveTensors() as meter:
        (result,) = recipe.optimise()  # one record per step and process
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        return {"peak_bytes": torch.cuda.max_memory_allocated(), "how": "cuda max_memory_allocated",
                "seconds": seconds, "loss": result["loss"]}
    return {"peak_bytes": meter.peak, "how": "bytes of the tensors the step allocates (LiveTensors)",
            "seconds": seconds, "loss": result["loss"]}


def decode_memory(wan: Path, size: int) -> list[tuple[int, int, int, int]]:
    """(video frames, N_f, bytes held plain, bytes held checkpointed) for a few lengths and N_f."""
    from vidcli.diffusion import load_adapter
    from vidcli.diffusion.rollout import uniform_frame_indices
    from vidcli.plan.meter import LiveTensors

    adapter = load_adapter(wan)
    rows = []
    for latent_frames in (3, 5, 9):
        frames = 1 + 4 * (latent_frames - 1)
        for count in (2, 4):
            held = []
            for checkpointed in (False, True):
                adapter.decode_checkpointing = checkpointed
                latents = torch.randn(1, 16, latent_frames, size // 8, size // 8, requires_grad=True)
                with LiveTensors() as meter:
                    out = adapter.decode(latents, uniform_frame_indices(frames, count))
                    held.append(meter.current)
                    out.sum().backward()
            rows.append((frames, count, *held))
    return rows


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
        runs = (("drf", args.k_grad, True, True), ("drf-plain-decode", args.k_grad, True, False),
                ("full", args.steps, False, False))
        rows = {}
        for name, k_grad, ckpt, decode_ckpt in runs:
            recipe = make_recipe(kit, tmp / name, steps=args.steps, k_grad=k_grad, checkpoint_steps=ckpt,
                                 decode_checkpointing=decode_ckpt, args=args)
            rows[name] = measure(recipe)
            recipe.cleanup()
            del recipe
            shutil.rmtree(tmp / name, ignore_errors=True)
        decode_rows = decode_memory(kit["wan"], args.size)
    print(f"device {device}; DiT width {args.dit_width} x {args.dit_layers} layers; "
          f"{args.size}x{args.size}, {args.frames} frames, N_f={args.frames_vlm}, "
          f"{args.steps} steps, guidance {args.guidance}; memory = {rows['drf']['how']}")
    print(f"{'run':<18}{'grad steps':>11}{'checkpointing':>22}{'peak MiB':>11}{'step s':>9}{'loss':>10}")
    for name, grad_steps, ckpt, decode_ckpt in runs:
        row = rows[name]
        what = ("steps" if ckpt else "") + (" + decode" if decode_ckpt else "") or "off"
        print(f"{name:<18}{grad_steps:>11}{what:>22}{row['peak_bytes'] / 2**20:>11.2f}{row['seconds']:>9.2f}"
              f"{row['loss']:>10.3f}")
    ratio = rows["drf"]["peak_bytes"] / rows["full"]["peak_bytes"]
    print(f"memory ratio drf/full = {ratio:.3f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}); "
          f"plain decode/full = {rows['drf-plain-decode']['peak_bytes'] / rows['full']['peak_bytes']:.3f}; "
          f"time ratio drf/full = {rows['drf']['seconds'] / rows['full']['seconds']:.3f}")
    print(f"\ndecode, {args.size}x{args.size}: bytes held from the decode's forward until its backward")
    print(f"{'video frames':>13}{'N_f':>5}{'plain MiB':>11}{'checkpointed MiB':>18}")
    for frames, count, plain, ckpt in decode_rows:
        print(f"{frames:>13}{count:>5}{plain / 2**20:>11.2f}{ckpt / 2**20:>18.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
