"""The toy generator's VAE: a Wan VAE (``AutoencoderKLWan``) whose weights are set by hand.

Training a Wan VAE from scratch costs over a second per step of 16 frames on two CPU
cores and did not reach usable reconstructions in the minutes a build can give it, so
this one is not trained: its weights are written down so that it is, exactly, a simple
known map, and the generator learns in that latent space.

Configuration: one down-sampling stage (2× in space and in time), no residual blocks in
the encoder, three latent channels: a 32×32×9 video ↔ 3×16×16×5 latents.

- **Encoder**: latent frame ``i`` is frame ``2i`` of the video, average-pooled over 2×2
  pixels, one latent channel per colour channel (in [−1, 1]). The time down-sampling
  keeps the newer of the two frames it merges.
- **Decoder**: each latent cell becomes a 2×2 block of that colour, and latent frame
  ``i ≥ 1`` becomes two equal frames (``2i − 1`` and ``2i``), latent frame 0 one frame.

So a decoded video is the clip at 16×16 colour resolution shown in steps of two frames;
the oracle reads 96% of the facts of rendered scenes back from such reconstructions,
which bounds what any generator in this latent space can score.

How the hand-set weights make the real layers compute this: every residual branch
ends in a zero convolution and the attention blocks' output projections are zero, so
those blocks pass their input through; convolutions use only their centre (spatial)
and newest (time) taps; the stride-2 convolution averages its 2×2 window. The two
output heads (RMS norm over channels, SiLU, convolution) are kept linear by carrying a
large constant channel ``K`` beside the colour values (offset by ``OFFSET`` to stay
positive): the norm then divides by ≈ K, a gain of ``12·K/√C`` puts the values at 12
or more where SiLU is the identity to 1e-5, and the head's convolution undoes the scale
and offset. The whole map is exact to about 1e-4 in [−1, 1] units; values far outside
[−1, 1] are clipped smoothly by the SiLU at −OFFSET.
"""
from __future__ import annotations

import torch

CHANNELS = 8  # base width: colour values, the constant, room for the decoder's halving
Z_DIM = 3
K = 1000.0
OFFSET = 3.0
GAIN = 12.0  # the heads' values after the norm: GAIN·(value + OFFSET) ≥ 12 for values ≥ −2
LOGVAR = -10.0  # the posterior's spread e⁻⁵: sampling and the mode agree


def _centre(conv, out: int, inp: int, value: float = 1.0) -> None:
    """Set the centre (spatial) / newest (time) tap of ``conv`` from input ``inp`` to output ``out``."""
    w = conv.weight
    index = (out, inp) + tuple(k - 1 if i == 0 and w.ndim == 5 else k // 2
                               for i, k in enumerate(w.shape[2:]))
    w[index] = value


def _values(conv, first_out: int = 0, scale: float = 1.0, offset: float = 0.0, count: int = 3) -> None:
    """Channels 0..count-1 of the input to channels first_out.. of the output: ``scale·x + offset``."""
    for c in range(count):
        _centre(conv, first_out + c, c, scale)
        conv.bias[first_out + c] = offset


def _linear_head(norm, conv_out, channels: int) -> None:
    """RMS norm → SiLU → conv_out as the identity on the (offset) colour values (module docstring)."""
    norm.gamma.zero_()
    norm.gamma[:3] = GAIN * K / channels ** 0.5
    conv_out.weight.zero_()
    conv_out.bias.zero_()
    _values(conv_out, scale=1.0 / GAIN, offset=-OFFSET)


def _pass_through(module) -> None:
    """Residual blocks and attention blocks inside ``module`` become identities."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanResidualBlock

    for block in module.modules():
        if isinstance(block, WanResidualBlock):
            block.conv2.weight.zero_()
            block.conv2.bias.zero_()
            if not isinstance(block.conv_shortcut, torch.nn.Identity):
                block.conv_shortcut.weight.zero_()
                block.conv_shortcut.bias.zero_()
                for c in range(min(block.in_dim, block.out_dim)):
                    _centre(block.conv_shortcut, c, c)
        elif isinstance(block, WanAttentionBlock):
            block.proj.weight.zero_()
            block.proj.bias.zero_()


def make_vae(latents_mean: list[float] | None = None, latents_std: list[float] | None = None):
    """The hand-set toy VAE (module docstring)."""
    from diffusers import AutoencoderKLWan
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResample

    vae = AutoencoderKLWan(base_dim=CHANNELS, z_dim=Z_DIM, dim_mult=[1, 1], num_res_blocks=0,
                           temperal_downsample=[True], scale_factor_spatial=2, scale_factor_temporal=2,
                           latents_mean=latents_mean or [0.0] * Z_DIM, latents_std=latents_std or [1.0] * Z_DIM)
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        enc, dec = vae.encoder, vae.decoder
        # encoder: pixels (+OFFSET) and the constant K, pooled, through identities, out of a linear head
        _values(enc.conv_in, offset=OFFSET)
        enc.conv_in.bias[3] = K
        for block in enc.down_blocks:
            if isinstance(block, WanResample):
                conv = block.resample[1]
                for c in range(4):
                    conv.weight[c, c, 0:2, 0:2] = 0.25
                for c in range(CHANNELS):
                    _centre(block.time_conv, c, c)  # the newer frame of each pair
        _pass_through(enc)
        _linear_head(enc.norm_out, enc.conv_out, CHANNELS)
        for c in range(Z_DIM):
            _centre(vae.quant_conv, c, c)
        vae.quant_conv.bias[Z_DIM:] = LOGVAR
        # decoder: latents (+OFFSET) and K, repeated in time and space, out of a linear head
        for c in range(Z_DIM):
            _centre(vae.post_quant_conv, c, c)
        _values(dec.conv_in, offset=OFFSET)
        dec.conv_in.bias[3] = K
        for block in dec.up_blocks:
            for sampler in block.upsamplers or []:
                for g in range(2):
                    for c in range(CHANNELS):
                        _centre(sampler.time_conv, g * CHANNELS + c, c)  # both new frames: this one
                for c in range(4):
                    _centre(sampler.resample[1], c, c)
        _pass_through(dec)
        _linear_head(dec.norm_out, dec.conv_out, CHANNELS)
    return vae.eval()


def pooled(frames: torch.Tensor) -> torch.Tensor:
    """What the VAE keeps of a (B, 3, T, H, W) video in [−1, 1]: even frames, 2×2 means (the latents)."""
    import torch.nn.functional as F

    even = frames[:, :, ::2]
    b, c, t, h, w = even.shape
    return F.avg_pool2d(even.transpose(1, 2).reshape(b * t, c, h, w), 2).reshape(b, t, c, h // 2, w // 2
                                                                                   ).transpose(1, 2)
