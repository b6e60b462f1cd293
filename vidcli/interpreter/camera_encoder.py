"""The camera encoder (SPEC §4): a ViT over Plücker ray maps plus a projector into the LLM.

Input: ``(B, 96, H, W)`` — 16 frames × 6 Plücker channels (:func:`vidcli.camera.plucker_stack`).
The map is cut into 16×16 patches, each patch becomes one token; eight pre-norm
transformer blocks mix them; a two-layer GELU MLP projects every token to the LLM's
hidden size. The ``(H/16)·(W/16)`` output tokens replace the camera placeholder in the
prompt (done by the interpreter's message builder, not here).

Choices the source leaves open, and ours:

- ``hidden_size = 512``: Plücker maps are smooth and low in information; a ViT-S-sized
  width is plenty and keeps the encoder small next to the LLM.
- ``image_size = (144, 256)``: 16:9 like most video, 9×16 = 144 tokens per trajectory,
  which leaves room in the 1024-token prompt budget; ray maps lose little at this size.
- Fixed 2D sine-cosine position embeddings: parameter-free and defined for any grid, so
  other resolutions work without interpolating a learned table.
- ``out_hidden_size = 3584``: the Qwen2.5-Omni-7B thinker; set it from the LLM's config.
- A fresh encoder for a small LLM (hidden size under 2048) is scaled down with it
  (:meth:`CameraEncoderConfig.for_language_model`): width a power of two, at most an
  eighth of the LLM's, two blocks. Otherwise a test-sized LLM of 200 K parameters would
  carry a 38 M-parameter encoder (and its optimizer state) through every checkpoint.

Weights are saved as safetensors next to a JSON config; nothing is pickled.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidcli.camera import Trajectory, plucker_stack
from vidcli.errors import InputError

CONFIG_NAME = "camera_encoder_config.json"
WEIGHTS_NAME = "camera_encoder.safetensors"
MODEL_TYPE = "vidcli_camera_encoder"
PLUCKER_CHANNELS = 6


@dataclass
class CameraEncoderConfig:
    """Sizes of the camera encoder (see the module docstring for the defaults)."""

    in_channels: int = 96
    patch_size: int = 16
    hidden_size: int = 512
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    image_size: tuple[int, int] = (144, 256)
    out_hidden_size: int = 3584
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        kinds = {"int": (int,), "float": (int, float)}
        bad = [f.name for f in fields(self) if f.type in kinds
               and (type(getattr(self, f.name)) not in kinds[f.type] or getattr(self, f.name) <= 0)]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive numbers (integers for sizes)")
        size = self.image_size
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(type(v) is int for v in size)):
            raise ValueError("image_size must be (height, width) in integers")
        self.image_size = tuple(size)
        if self.in_channels % PLUCKER_CHANNELS:
            raise ValueError(f"in_channels must be a multiple of {PLUCKER_CHANNELS} (frames × Plücker)")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.hidden_size % 4:
            raise ValueError("hidden_size must be divisible by 4 (2D sine-cosine positions)")
        try:
            self.grid(*self.image_size)
        except ValueError as exc:
            raise ValueError(f"image_size: {exc}") from None

    @property
    def num_frames(self) -> int:
        return self.in_channels // PLUCKER_CHANNELS

    @property
    def mlp_hidden_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(rows, cols)``; ValueError unless both sides divide by the patch size."""
        p = self.patch_size
        if height <= 0 or width <= 0 or height % p or width % p:
            raise ValueError(f"camera map size {height}x{width} must be positive multiples of the patch size {p}")
        return height // p, width // p

    def num_tokens(self, height: int, width: int) -> int:
        """How many tokens a ``height × width`` map becomes."""
        rows, cols = self.grid(height, width)
        return rows * cols

    @classmethod
    def for_language_model(cls, hidden: int) -> "CameraEncoderConfig":
        """Sizes of a fresh encoder for an LLM of hidden size ``hidden`` (see the module docstring)."""
        if hidden >= 2048:
            return cls(out_hidden_size=hidden)
        width = 16
        while width * 16 <= hidden and width < 256:
            width *= 2
        return cls(hidden_size=width, depth=2, num_heads=max(1, width // 32), out_hidden_size=hidden)

    def to_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, **asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, data: dict) -> "CameraEncoderConfig":
        data = dict(data)
        if data.pop("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise ValueError(f"not a camera encoder config (model_type must be {MODEL_TYPE!r})")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown camera encoder config keys: {', '.join(unknown)}")
        return cls(**data)


def sincos_2d(rows: int, cols: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2D position table ``(rows*cols, dim)``, row-major over the patch grid.

    The first half of the channels encodes the row, the second half the column; each
    half is ``[sin(pos·ω_k), cos(pos·ω_k)]`` with ω_k = 10000^(−k/(dim/4)).
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64, device=device),
                          torch.arange(cols, dtype=torch.float64, device=device), indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(r), encode(c)], dim=1).to(dtype)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: CameraEncoderConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = Attention(dim, config.num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(dim, config.mlp_hidden_size), nn.GELU(), nn.Linear(config.mlp_hidden_size, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CameraEncoder(nn.Module):
    """Plücker maps ``(B, C, H, W)`` → LLM-space tokens ``(B, (H/p)·(W/p), out_hidden_size)``."""

    def __init__(self, config: CameraEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or CameraEncoderConfig()
        c = self.config
        # A stride-p convolution is a linear map of each flattened patch.
        self.patch_embed = nn.Conv2d(c.in_channels, c.hidden_size, kernel_size=c.patch_size, stride=c.patch_size)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.projector = nn.Sequential(
            nn.Linear(c.hidden_size, c.out_hidden_size), nn.GELU(), nn.Linear(c.out_hidden_size, c.out_hidden_size)
        )
        self.gradient_checkpointing = False

    def num_tokens(self, height: int, width: int) -> int:
        """How many prompt tokens a ``height × width`` camera map becomes."""
        return self.config.num_tokens(height, width)

    def gradient_checkpointing_enable(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.gradient_checkpointing = enable

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c = self.config
        if pixel_values.ndim != 4 or pixel_values.shape[1] != c.in_channels:
            raise ValueError(f"camera encoder expects (batch, {c.in_channels}, height, width), "
                             f"got {tuple(pixel_values.shape)}")
        rows, cols = c.grid(*pixel_values.shape[-2:])
        weight = self.patch_embed.weight
        x = self.patch_embed(pixel_values.to(device=weight.device, dtype=weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # (B, rows*cols, hidden), row-major like sincos_2d
        x = x + sincos_2d(rows, cols, c.hidden_size, device=x.device, dtype=x.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.projector(self.norm(x))

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``camera_encoder_config.json`` and ``camera_encoder.safetensors`` into ``directory``."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        # Write under temporary names and rename, so a crash never leaves a torn file.
        tmp_weights, tmp_config = out / (WEIGHTS_NAME + ".tmp"), out / (CONFIG_NAME + ".tmp")
        save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
        tmp_config.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_weights, out / WEIGHTS_NAME)
        os.replace(tmp_config, out / CONFIG_NAME)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> "CameraEncoder":
        """Load a directory written by :meth:`save_pretrained`, in eval mode.

        Raises :class:`InputError` naming the file when a file is missing or unreadable,
        the config is invalid, or the weights do not fit the config (missing, unexpected
        or wrongly shaped tensors).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(directory)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise InputError(f"camera encoder file not found ({path.name} is missing)", file=str(path))
        try:
            config = CameraEncoderConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise InputError(f"invalid camera encoder config: {exc}", file=str(config_path)) from None
        try:
            state = load_file(str(weights_path), device=str(device))
        except (OSError, SafetensorError) as exc:
            raise InputError(f"cannot read camera encoder weights: {exc}", file=str(weights_path)) from None
        with torch.device("meta"):
            model = cls(config)
        _check_state(model, state, str(weights_path))
        model.load_state_dict(state, assign=True)
        model.eval()  # like transformers: call .train() to fine-tune
        return model.to(dtype=dtype) if dtype is not None else model


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], file: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {expected[k]}"
             for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:5])}" + (" …" if len(unexpected) > 5 else ""))
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:5])}" + (" …" if len(wrong) > 5 else ""))
    if problems:
        raise InputError("camera encoder weights do not match the config: " + "; ".join(problems), file=file)


def encode_trajectory(
    encoder: CameraEncoder, traj: Trajectory, height: int | None = None, width: int | None = None
) -> torch.Tensor:
    """Tokens ``(N, out_hidden_size)`` for one trajectory.

    Builds the Plücker stack with the encoder's frame count (resampled uniformly in
    time, poses relative to the first frame) at ``height × width`` — by default the
    encoder's ``image_size`` — and runs the encoder. Gradients are kept, so the same
    call serves training and inference (wrap it in ``torch.no_grad()`` for the latter).
    """
    config = encoder.config
    default_h, default_w = config.image_size
    height, width = height or default_h, width or default_w
    config.grid(height, width)  # fail before building the maps
    maps = plucker_stack(traj, height, width, num_frames=config.num_frames)
    return encoder(maps[None])[0]
