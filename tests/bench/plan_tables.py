"""The memory tables of docs/memory.md: planned peaks for the papers' settings, from config files only.

Every figure is ``vidcli.plan.plan_run`` on the published configurations in
``tests/data/realsize/`` (no weights), as ``vidcli <command> --plan`` prints it: GiB per
device, bytes the framework allocates (the CUDA context and allocator fragmentation,
1-2 GiB, come on top). Run on CPU::

    python tests/bench/plan_tables.py > /tmp/tables.md      # ~15 minutes on 2 cores

and paste the tables into docs/memory.md.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
REALSIZE = ROOT / "tests" / "data" / "realsize"
GiB = 1024 ** 3


def run(batch: int, accum: int, lr: float = 1e-5):
    from vidcli.train.core import OptimConfig, RunConfig

    return RunConfig("/tmp/plan-tables", batch_size=batch, grad_accum=accum, mixed_precision="auto",
                     optim=OptimConfig(lr=lr, warmup_steps=0, schedule="constant"))


def peak(command: str, config, **kwargs) -> tuple[float, str]:
    from vidcli.plan import plan_run

    plan = plan_run(command, config, **kwargs)
    return plan.peak / GiB, plan.peak_phase.name


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def drf_tables() -> str:
    from vidcli.train.drf import DRFConfig

    base = DRFConfig(model=str(REALSIZE / "wan2.1-t2v-1.3b"), vlm=str(REALSIZE / "qwen2.5-vl-7b"), inputs=[],
                     run=run(1, 1), gradient_checkpointing=True, decode_checkpointing=False)
    settings = [("DiT checkpointing, plain decode", base),
                ("+ checkpointed decode (vidcli default)", replace(base, decode_checkpointing=True)),
                ("+ VLM checkpointing, bf16 VAE", replace(base, decode_checkpointing=True, vlm_checkpointing=True,
                                                         vae_dtype="bfloat16"))]
    out = []
    paper_k = {1: "56", 4: "75"}
    rows = []
    for k in (1, 2, 3, 4):
        row = [str(k), paper_k.get(k, "")]
        for _, config in settings:
            gib, phase = peak("drf-tune", replace(config, k_grad=k))
            row.append(f"{gib:.1f} ({phase})")
        rows.append(row)
    out.append("**K (gradient steps), N_f = 10:**\n\n" + table(["K", "paper (A100)"] + [s for s, _ in settings], rows))
    paper_n = {2: "62", 10: "75"}
    rows = []
    for n in (2, 4, 6, 8, 10):
        row = [str(n), paper_n.get(n, "")]
        for _, config in settings:
            gib, phase = peak("drf-tune", replace(config, frames_vlm=n))
            row.append(f"{gib:.1f} ({phase})")
        rows.append(row)
    out.append("**N_f (frames shown to the VLM), K = 4:**\n\n"
               + table(["N_f", "paper (A100)"] + [s for s, _ in settings], rows))
    from vidcli.plan import plan_run

    plan = plan_run("drf-tune", replace(base, decode_checkpointing=True), gpu_memory=40)
    steps = [[flags, f"{p / GiB:.1f}"] for flags, p in plan.measures]
    out.append("**Under 40 GB at the paper's setting** (K = 4, N_f = 10, full fine-tuning, starting from "
               f"DiT checkpointing and the checkpointed decode: {plan.peak / GiB:.1f} GiB), measures added in "
               "order:\n\n" + table(["measure", "peak GiB"], steps))
    lora = replace(base, decode_checkpointing=True, finetune="lora", offload_text_encoder=True, vae_dtype="bfloat16",
                   vlm_checkpointing=True)
    gib, phase = peak("drf-tune", lora)
    out.append(f"LoRA (rank 64) with the text encoder offloaded, bf16 VAE and VLM checkpointing: {gib:.1f} GiB "
               f"(peak in {phase}).")
    return "\n\n".join(out)


def revise_table() -> str:
    from vidcli.train.revise import ReviseConfig

    base = ReviseConfig(model=str(REALSIZE / "wan2.1-t2v-1.3b"), vlm=str(REALSIZE / "qwen2.5-vl-7b"), inputs=[],
                        run=run(1, 8, 3e-6))
    rows = []
    for label, config in [("vidcli defaults (full, reasoning first, F = 8)", base),
                          ("+ DiT checkpointing", replace(base, gradient_checkpointing=True)),
                          ("+ VLM checkpointing, bf16 VAE", replace(base, gradient_checkpointing=True,
                                                                   vlm_checkpointing=True, vae_dtype="bfloat16")),
                          ("LoRA r64 + the above", replace(base, finetune="lora", gradient_checkpointing=True,
                                                          vlm_checkpointing=True, vae_dtype="bfloat16")),
                          ("verdict first (--critic-reasoning none), DiT checkpointing",
                           replace(base, gradient_checkpointing=True, critic_reasoning="none"))]:
        gib, phase = peak("revise-tune", config)
        rows.append([label, f"{gib:.1f}", phase])
    return table(["setting (Wan2.1-1.3B editor + Qwen2.5-VL-7B critic, 49×288×512)", "peak GiB", "peak phase"], rows)


def interpreter_tables() -> str:
    from vidcli.plan.static import Sharding
    from vidcli.train.grpo import GRPOConfig
    from vidcli.train.sft import SFTConfig

    out = []
    for name in ("qwen2.5-omni-7b", "qwen2.5-vl-7b"):
        model = str(REALSIZE / name)
        rows = []
        sft = SFTConfig(model=model, inputs=[], run=run(6, 2))
        for label, config, sharding in [
                ("full", sft, None),
                ("full, checkpointing", replace(sft, gradient_checkpointing=True), None),
                ("full, checkpointing, 8 GPUs ZeRO-3", replace(sft, gradient_checkpointing=True),
                 Sharding(8, 3, source="8 processes, ZeRO-3")),
                ("LoRA r16", replace(sft, finetune="lora"), None),
                ("LoRA r16, checkpointing", replace(sft, finetune="lora", gradient_checkpointing=True), None)]:
            try:
                gib, phase = peak("sft", config, sharding=sharding)
                rows.append([label, f"{gib:.1f}", phase])
            except Exception as exc:  # noqa: BLE001 - a table: say what could not be planned
                rows.append([label, "n/a", f"{type(exc).__name__}: {exc}"[:80]])
        out.append(f"**sft, {name}** (batch 6 × accumulation 2; prompt 1024 tokens, 512 of them visual, "
                   "+ 512 target):\n\n" + table(["setting", "peak GiB", "peak phase"], rows))
        rows = []
        grpo = GRPOConfig(model=model, inputs=[], run=run(1, 2, 2.5e-6))
        for label, config, sharding in [
                ("full (reference in bf16)", grpo, None),
                ("full, checkpointing", replace(grpo, gradient_checkpointing=True), None),
                ("full, checkpointing, 8 GPUs ZeRO-3", replace(grpo, gradient_checkpointing=True),
                 Sharding(8, 3, source="8 processes, ZeRO-3")),
                ("LoRA r16 (reference = adapters off)", replace(grpo, finetune="lora"), None),
                ("LoRA r16, checkpointing", replace(grpo, finetune="lora", gradient_checkpointing=True), None)]:
            try:
                gib, phase = peak("grpo", config, sharding=sharding)
                rows.append([label, f"{gib:.1f}", phase])
            except Exception as exc:  # noqa: BLE001
                rows.append([label, "n/a", f"{type(exc).__name__}: {exc}"[:80]])
        out.append(f"**grpo, {name}** (1 prompt × G = 8 completions of 768 tokens, prompt 1024 tokens, 512 "
                   "visual; accumulation 2):\n\n" + table(["setting", "peak GiB", "peak phase"], rows))
    return "\n\n".join(out)


def main() -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.time()
    for title, make in (("Diffusion-DRF", drf_tables), ("ReViSE", revise_table), ("ReaDe", interpreter_tables)):
        print(f"### {title}\n\n{make()}\n", flush=True)
    print(f"<!-- {time.time() - start:.0f} s -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
