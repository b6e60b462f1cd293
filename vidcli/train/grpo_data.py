"""grpo's records and rollouts: the prompts it samples from (``decompose --schema reade`` records,
validated before the first step) and one micro-batch of sampled completions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vidcli.errors import InputError
from vidcli.jsonl import Source
from vidcli.rewards.reade import RewardResult
from vidcli.train.inputs import read_training_records
from vidcli.train.sft_data import DENSE_CONDITIONS, _check_conditions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.rewards.video_feedback import VideoScore
    from vidcli.train.grpo import GRPOConfig


@dataclass
class Prompt:
    """One RL record: where it came from, its key-info and its prompt budget."""

    source: Source
    key_info: dict
    prompt_limit: int


@dataclass
class Rollout:
    """One micro-batch of sampled completions, ``B = prompts × G`` rows, groups consecutive."""

    batch: dict  # prompt + completion inputs for the model (camera maps included)
    completion_mask: torch.Tensor  # (B, C)
    prompt_ids: list[str]
    texts: list[str]
    rewards: list[RewardResult]
    advantages: torch.Tensor  # (B,)
    scored: torch.Tensor  # (B,) bool: False for masked completions (reward not computed, or group too thin)
    ref_logp: torch.Tensor | None  # (B, C), None when beta == 0
    old_logp: torch.Tensor | None  # (B, C), None when num_iterations == 1
    video: list[VideoScore] | None = None  # per row, with --reward video-feedback
    instructions: list[str] | None = None  # per row, as the policy saw it ("" when dropped)


def load_prompts(config: "GRPOConfig") -> tuple[list[Prompt], dict[str, dict]]:
    """All RL records, validated up front (key-info, conditions, media files), and input fingerprints."""
    from vidcli.decompose.reade import parse_key_info

    def to_prompt(source) -> Prompt:
        if "key_info" not in source.record:
            raise InputError("missing field 'key_info' (records from vidcli decompose --schema reade)")
        try:
            key_info = parse_key_info(source.record["key_info"])
        except ValueError as exc:
            raise InputError(f"field 'key_info': {exc}") from None
        conditions = _check_conditions(source, config)
        dense = any(c["type"] in DENSE_CONDITIONS for c in conditions)
        return Prompt(source, key_info, config.max_prompt_tokens_dense if dense else config.max_prompt_tokens)

    return read_training_records(config.inputs, to_prompt)


def completion_mask(completion_ids: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1 on each row's tokens up to and including its first stop token, 0 after it."""
    stops = torch.isin(completion_ids, torch.tensor(stop_ids, device=completion_ids.device)).long()
    before = stops.cumsum(dim=1) - stops  # stop tokens strictly before each position
    return (before == 0).long()


def append_completions(prompt_batch: dict, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """Left-padded prompts followed by the completions; per-token tensors grow, per-media ones stay."""
    rows, width = prompt_batch["input_ids"].shape
    out = dict(prompt_batch)
    for key, value in prompt_batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[:2] == (rows, width):
            extra = ids if key == "input_ids" else mask if key == "attention_mask" else torch.zeros_like(ids)
            out[key] = torch.cat([value, extra.to(value.dtype)], dim=1)
    return out
