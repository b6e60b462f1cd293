"""The settings of GRPO's video-feedback reward (``grpo --reward video-feedback``), declared once.

A module of its own, without torch, so the ``grpo`` command generates its ``--render-*``
options from these fields without loading the reward (:mod:`vidcli.rewards.video_feedback`).
"""
from __future__ import annotations

from dataclasses import dataclass

import click

from vidcli.interpreter.format import PROMPT_STYLES
from vidcli.settings import setting


@dataclass(frozen=True)
class VideoFeedbackConfig:
    """The frozen generator and VLM, the term's weight and the render settings."""

    generator: str  # diffusers Wan / CogVideoX pipeline folder, or a drf-tune output
    vlm: str  # hf:PATH of a Qwen2-VL / Qwen2.5-VL
    weight: float = setting(1.0, type=float, flag="--video-weight", name="video_weight",
                            help="w: weight of R_video.")
    steps: int = setting(10, type=click.IntRange(1), flag="--render-steps", name="render_steps",
                         help="Denoising steps per render.")
    frames: int = setting(17, type=click.IntRange(1), flag="--render-frames", name="render_frames",
                          help="Frames per render (4k+1).")
    height: int = setting(256, type=click.IntRange(16), flag="--render-height", name="render_height",
                          help="Multiple of 16.")
    width: int = setting(448, type=click.IntRange(16), flag="--render-width", name="render_width",
                         help="Multiple of 16.")
    guidance: float = setting(5.0, type=click.FloatRange(0), flag="--render-guidance", name="render_guidance",
                              help="Classifier-free guidance of the renders (<= 1: off, half the DiT forwards).")
    vlm_frames: int = setting(8, type=click.IntRange(1),
                              help="Frames of each render shown to the VLM (uniform, first and last included).")
    fps: float = 2.0  # frame rate the VLM is told its frames have (as drf-tune)
    # renders per pipeline call and rows per VLM forward
    batch: int = setting(8, type=click.IntRange(1), flag="--render-batch", name="render_batch",
                         help="Renders per pipeline call and questions per VLM forward (lower it to save memory).")
    prompt_style: str = setting("dense", type=click.Choice(PROMPT_STYLES), flag="--render-prompt-style",
                                name="render_prompt_style",
                                help="Generator prompt from the answer, as in vidcli interpret.")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ValueError("steps and batch must be at least 1")
        if self.frames % 4 != 1:
            raise ValueError(f"frames must be 4k+1 (1, 5, 9, 17, ...; the VAEs compress time by 4), got {self.frames}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16, got {self.height}x{self.width}")
        if self.vlm_frames < 1:
            raise ValueError("vlm_frames must be at least 1")
        if self.vlm_frames > self.frames:
            raise ValueError(f"vlm_frames {self.vlm_frames} is more than frames {self.frames}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}")
