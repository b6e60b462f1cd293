"""The ReaDe format reward (SPEC §1), used by ``grpo`` and ``score``.

R_format = 1.0 when both the think format and the answer format hold, 0.2 when exactly
one holds, 0.0 when neither does. The checks themselves live in
:func:`vidcli.interpreter.format.parse_output`.
"""
from __future__ import annotations

from vidcli.interpreter.format import parse_output

REWARD_BOTH = 1.0
REWARD_ONE = 0.2
REWARD_NONE = 0.0


def format_checks(text: str) -> tuple[bool, bool]:
    """``(think_ok, answer_ok)`` for one model output."""
    parsed = parse_output(text)
    return parsed.think_ok, parsed.answer_ok


def format_reward(text: str) -> float:
    """R_format of one model output: 1.0, 0.2 or 0.0."""
    held = sum(format_checks(text))
    return REWARD_BOTH if held == 2 else REWARD_ONE if held == 1 else REWARD_NONE
