"""The in-context video editor ``revise-tune`` trains and ``generate`` samples from, and the clips it reads.

A Wan DiT that sees the source clip in context (:class:`InContextEditor`; the layout is
described in :mod:`vidcli.train.revise`); a clip is a time range of a video file, named
in a record as ``{video, start, end}`` (:func:`read_clip`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vidcli.errors import InputError
from vidcli.media_access import MediaAccess
from vidcli.records import field_of

# How the editor's DiT input is laid out (vidcli.json "editor"; `vidcli generate` checks it).
EDITOR_LAYOUT = "target latent frames then clean source latent frames"


@dataclass
class Clip:
    """A time range of a video file, in seconds (None: from the start / to the end)."""

    path: Path
    start: float | None
    end: float | None

    def pixels(self, frames: int, width: int, height: int) -> torch.Tensor:
        """``frames`` frames spread over the range, resized: (T, 3, H, W) in [0, 1]."""
        from vidcli.media import load_video

        video = load_video(self.path, num_frames=frames, start=self.start, end=self.end, size=(width, height))
        return torch.from_numpy(video.frames).permute(0, 3, 1, 2).float() / 255

    def seconds(self) -> float:
        """How long the range lasts (to the video's end when ``end`` is None or past it)."""
        from vidcli.media import probe_video

        duration = probe_video(self.path).duration_s
        return min(duration, duration if self.end is None else self.end) - (self.start or 0.0)


def read_clip(record: dict, key: str, base_dir: Path, access: MediaAccess | None = None) -> Clip:
    """The clip ``record[key]`` (``{video, start, end}``), its video resolved and checked to exist."""
    value = field_of(record, key, dict, hint="{video, start, end} in seconds")
    path = (access or MediaAccess()).file(value.get("video"), base_dir, missing=f"{key} video not found: {{path}}")
    start, end = value.get("start"), value.get("end")
    for name, v in (("start", start), ("end", end)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise InputError(f"{key}.{name} must be a non-negative number of seconds, got {v!r}")
    if start is not None and end is not None and end <= start:
        raise InputError(f"{key}: end ({end}) is not after start ({start})")
    return Clip(path, start, end)


class InContextEditor:
    """A Wan DiT that edits: source latents beside the noisy target latents (module docstring)."""

    def __init__(self, adapter) -> None:
        self.adapter = adapter
        self.dit = adapter.trainable_module()

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(1, 3, T, H, W) frames in [0, 1] → normalised latents (posterior mean), no gradient."""
        vae = self.adapter.pipe.vae
        with torch.no_grad():
            latents = vae.encode((frames * 2 - 1).to(self.adapter.device, vae.dtype)).latent_dist.mode()
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)
        return ((latents - mean) * inv_std).float()  # the inverse of WanAdapter.decode's scaling

    def velocity(self, z_t: torch.Tensor, source: torch.Tensor, t: float, text: torch.Tensor) -> torch.Tensor:
        """v on the target frames: DiT(cat[z_t, source] over frames), timestep 1000·t on target tokens, 0 on source."""
        dit = self.dit
        _, p_h, p_w = dit.config.patch_size
        per_frame = (z_t.shape[3] // p_h) * (z_t.shape[4] // p_w)
        n_target = z_t.shape[2]
        timestep = torch.cat([torch.full((n_target * per_frame,), 1000.0 * t),
                              torch.zeros(source.shape[2] * per_frame)]).to(z_t.device)[None]
        x = torch.cat([z_t, source], dim=2).to(dit.dtype)
        out = dit(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]
        return out[:, :, :n_target].float()
