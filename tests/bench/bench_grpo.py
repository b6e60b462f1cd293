"""GRPO step time: ``vidcli grpo``'s recipe next to TRL's ``GRPOTrainer``, same work on both sides.

    python tests/bench/bench_grpo.py [--steps 4] [--generations 4] [--prompts 2] [--length 32]

The model is the tiny Qwen2.5-VL from :func:`vidcli.testing.ensure_tiny_models` with
text-only prompts: the interpreter loads image-text-to-text models only, and TRL takes a
VLM with its processor, so both sides run the very same weights and code path. Equal
work per step:

- the same prompts, token for token: TRL gets the interpreter's own conversation
  (system prompt + request) and both render it with the processor's chat template;
- ``--prompts`` prompts × G completions per step, one micro-batch, one update per rollout;
- fixed completion length on both sides (``min_new_tokens = max_new_tokens``);
- full fine-tuning with β = 0.001 (both keep a frozen reference copy), ε = 0.2,
  ``loss_type="grpo"``, AdamW at the same learning rate, no mixed precision;
- the same reward function of the completion text.

Prints each side's median seconds per optimiser step (the first step of every run is
left out; ``--rounds`` runs per side, alternating, so a busy spell on a shared machine
hits both) and the ratio ours / TRL (target <= 1.0). Runs in a couple of minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

INSTRUCTIONS = ["a dog runs on the beach at sunset", "a red car drives through a rainy city at night",
                "a child flies a kite in a windy field", "an old man plays chess in the park"]
KEY_INFO = {"user": {"objects": [{"name": "dog", "attributes": []}]}, "supplementary": {}, "imaginative": {}}


def text_reward(text: str) -> float:
    """The shared reward: the share of distinct characters, a cheap function of the text alone."""
    return len(set(text)) / max(1, len(text))


class TextReward:
    """:func:`text_reward` in the recipe's reward interface."""

    def score_many(self, completions, key_infos):
        from vidcli.rewards.reade import RewardResult

        return [RewardResult(text_reward(t), {"format": 0.0, "user": text_reward(t), "detail": None, "supp": None,
                                              "contra": None}, False, False) for t in completions]


def ours(model: Path, data: Path, out: Path, args) -> list[float]:
    """Seconds of each step of :class:`~vidcli.train.grpo.GRPORecipe` after the first."""
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.grpo import GRPOConfig, GRPORecipe

    times: list[float] = []
    run = RunConfig(output_dir=out, max_steps=args.steps + 1, batch_size=args.prompts, grad_accum=1, save_every=0,
                    mixed_precision="no", optim=OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant"))
    config = GRPOConfig(model=str(model), inputs=[str(data)], run=run, finetune="full",
                        num_generations=args.generations, max_completion_tokens=args.length,
                        min_completion_tokens=args.length, beta=0.001, epsilon=0.2)
    recipe = GRPORecipe(config, TextReward())
    recipe.setup()
    log = recipe.accelerator.log

    def timed_log(values, step=None, **kwargs):  # called once at the end of every optimiser step
        times.append(time.perf_counter())
        return log(values, step=step, **kwargs)

    recipe.accelerator.log = timed_log
    start = time.perf_counter()
    recipe.train()
    recipe.cleanup()
    marks = [start, *times]
    return [b - a for a, b in zip(marks, marks[1:])][1:]


def trl(model: Path, prompts: list, out: Path, args) -> list[float]:
    """Seconds of each step of TRL's ``GRPOTrainer`` on the same model and prompts, after the first."""
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    def reward(completions, **kwargs):
        return [text_reward(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    config = GRPOConfig(
        output_dir=str(out), max_steps=args.steps + 1, per_device_train_batch_size=args.prompts * args.generations,
        gradient_accumulation_steps=1, num_generations=args.generations, max_completion_length=args.length,
        generation_kwargs={"min_new_tokens": args.length}, temperature=1.0, top_p=1.0, beta=0.001, epsilon=0.2,
        loss_type="grpo", learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, bf16=False,
        use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, seed=0, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=AutoModelForImageTextToText.from_pretrained(model, dtype="float32"),
                          reward_funcs=reward, args=config, processing_class=AutoProcessor.from_pretrained(model),
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), callbacks=[Clock()])
    trainer.train()
    return [end - begin for begin, end in zip(times[::2], times[1::2])][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--length", type=int, default=32, help="completion tokens (fixed)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    args = parser.parse_args()

    import torch

    from vidcli.interpreter.messages import request_from_record
    from vidcli.testing import ensure_tiny_models

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = ensure_tiny_models(["vlm"])["vlm"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = [{"id": f"p{i}", "instruction": text, "key_info": KEY_INFO} for i, text in enumerate(INSTRUCTIONS)]
        data = root / "rl.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        # Plain-string contents (Arrow wants one type); the chat template renders them as the text parts.
        prompts = [[{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                     else "".join(p["text"] for p in m["content"])}
                    for m in request_from_record(r, root).conversation] for r in records]
        ours_steps: list[float] = []
        trl_steps: list[float] = []
        for i in range(args.rounds):  # alternating, so a busy spell of the machine hits both sides
            ours_steps += ours(model, data, root / f"ours{i}", args)
            trl_steps += trl(model, prompts, root / f"trl{i}", args)
    ours_s, trl_s = statistics.median(ours_steps), statistics.median(trl_steps)
    print(f"GRPO step, tiny Qwen2.5-VL, {args.prompts} prompts x G={args.generations}, "
          f"{args.length} completion tokens, full fine-tuning, beta 0.001")
    print(f"  vidcli grpo : {ours_s:.3f} s/step (median of {len(ours_steps)})")
    print(f"  TRL GRPO    : {trl_s:.3f} s/step (median of {len(trl_steps)})")
    print(f"  ratio ours/TRL = {ours_s / trl_s:.2f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
