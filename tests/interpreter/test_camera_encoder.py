"""The camera encoder: shapes, maths against a naive reference, gradients, save/load."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidcli.camera import Trajectory, plucker_stack
from vidcli.errors import InputError
from vidcli.interpreter.camera_encoder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Attention,
    CameraEncoder,
    CameraEncoderConfig,
    encode_trajectory,
    sincos_2d,
)

TINY = dict(hidden_size=32, depth=2, num_heads=4, out_hidden_size=24, image_size=(32, 48))


def tiny(**overrides) -> CameraEncoder:
    torch.manual_seed(0)
    return CameraEncoder(CameraEncoderConfig(**{**TINY, **overrides})).eval()


def orbit(n: int = 20) -> Trajectory:
    """A camera circling the origin while looking at it."""
    c2w = []
    for a in np.linspace(0.0, math.radians(60), n):
        centre = np.array([3 * math.sin(a), 0.0, -3 * math.cos(a)])
        forward = -centre / np.linalg.norm(centre)
        right = np.cross((0.0, 1.0, 0.0), forward)
        right /= np.linalg.norm(right)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(forward, right), forward, centre
        c2w.append(m)
    return Trajectory(np.arange(n) / 10.0, np.tile([0.8, 1.4, 0.5, 0.5], (n, 1)), np.stack(c2w))


def naive_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(d, dim=-1)
    q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return out @ attn.proj.weight.T + attn.proj.bias


def naive_forward(model: CameraEncoder, x: torch.Tensor) -> torch.Tensor:
    """The encoder written out with unfold, matmuls and the naive attention."""
    c = model.config
    p = c.patch_size
    patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p), row-major
    h = patches @ model.patch_embed.weight.reshape(c.hidden_size, -1).T + model.patch_embed.bias
    h = h + sincos_2d(x.shape[2] // p, x.shape[3] // p, c.hidden_size)
    eps = c.layer_norm_eps
    for blk in model.blocks:
        h = h + naive_attention(blk.attn, F.layer_norm(h, (c.hidden_size,), blk.norm1.weight, blk.norm1.bias, eps))
        z = F.layer_norm(h, (c.hidden_size,), blk.norm2.weight, blk.norm2.bias, eps)
        up, down = blk.mlp[0], blk.mlp[2]
        h = h + F.gelu(z @ up.weight.T + up.bias) @ down.weight.T + down.bias
    h = F.layer_norm(h, (c.hidden_size,), model.norm.weight, model.norm.bias, eps)
    first, second = model.projector[0], model.projector[2]
    return F.gelu(h @ first.weight.T + first.bias) @ second.weight.T + second.bias


# ----------------------------------------------------------------------------- maths


def test_output_shape_and_token_count():
    model = tiny()
    out = model(torch.randn(2, 96, 32, 64))
    assert out.shape == (2, (32 // 16) * (64 // 16), 24)
    assert model.num_tokens(32, 64) == 8
    assert CameraEncoderConfig().num_tokens(*CameraEncoderConfig().image_size) == 9 * 16


def test_attention_matches_naive_softmax():
    torch.manual_seed(1)
    attn = Attention(16, num_heads=2)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(attn(x), naive_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_forward_matches_naive_reference():
    model = tiny()
    x = torch.randn(2, 96, 32, 48)
    torch.testing.assert_close(model(x), naive_forward(model, x), rtol=1e-4, atol=1e-5)


def test_sincos_table_values():
    table = sincos_2d(3, 4, 8)  # quarter = 2, so ω = (1, 1/100)
    assert table.shape == (12, 8)
    row, col = 2, 3
    expected = [math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100),
                math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100)]
    torch.testing.assert_close(table[row * 4 + col], torch.tensor(expected))


def test_gradient_reaches_every_parameter():
    model = tiny().train()
    model(torch.randn(2, 96, 32, 48)).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randn(1, 96, 32, 48)
    grads = []
    for enabled in (False, True):
        model = tiny().train()
        model.gradient_checkpointing_enable(enabled)
        model(x).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_default_parameter_count_matches_formula():
    config = CameraEncoderConfig()
    with torch.device("meta"):
        model = CameraEncoder(config)
    d, m, o, c, p, depth = 512, 2048, 3584, 96, 16, 8
    patch = c * p * p * d + d
    block = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    projector = (d * o + o) + (o * o + o)
    formula = patch + depth * block + 2 * d + projector
    total = sum(t.numel() for t in model.parameters())
    print(f"camera encoder (default config): {total:,} parameters")
    assert total == formula == 52_490_752


def test_size_and_shape_errors_are_clear():
    model = tiny()
    with pytest.raises(ValueError, match="30x48 must be positive multiples of the patch size 16"):
        model(torch.randn(1, 96, 30, 48))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model.num_tokens(32, 40)
    with pytest.raises(ValueError, match=r"expects \(batch, 96, height, width\), got \(1, 90, 32, 48\)"):
        model(torch.randn(1, 90, 32, 48))
    with pytest.raises(ValueError, match="multiple of 6"):
        CameraEncoderConfig(in_channels=100)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CameraEncoderConfig(hidden_size=36, num_heads=8)
    with pytest.raises(ValueError, match="image_size: camera map size 100x256"):
        CameraEncoderConfig(image_size=(100, 256))
    with pytest.raises(ValueError, match="depth must be positive"):
        CameraEncoderConfig(depth=0)


# ------------------------------------------------------------------------- trajectories


def test_encode_trajectory_uses_sixteen_relative_frames():
    model = tiny()
    traj = orbit()
    with torch.no_grad():
        tokens = encode_trajectory(model, traj)  # the config's image_size, 32x48
        expected = model(plucker_stack(traj, 32, 48, num_frames=16)[None])[0]
        other = encode_trajectory(model, traj, 48, 64)
    assert tokens.shape == (6, 24)
    torch.testing.assert_close(tokens, expected)
    assert other.shape == (12, 24)
    with pytest.raises(ValueError, match="patch size"):
        encode_trajectory(model, traj, 40, 48)


def test_bf16_weights_accept_float_maps():
    model = tiny()
    model.to(torch.bfloat16)
    out = model(torch.randn(1, 96, 32, 48))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---------------------------------------------------------------------------- save/load


def test_save_load_round_trip(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "enc")
    assert {p.name for p in (tmp_path / "enc").iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}
    saved = json.loads((tmp_path / "enc" / CONFIG_NAME).read_text())
    assert saved["model_type"] == "vidcli_camera_encoder" and saved["image_size"] == [32, 48]
    # safetensors layout: 8-byte little-endian header length, then a JSON header.
    raw = (tmp_path / "enc" / WEIGHTS_NAME).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"] == {"format": "pt"}
    loaded = CameraEncoder.from_pretrained(tmp_path / "enc")
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 96, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    half = CameraEncoder.from_pretrained(tmp_path / "enc", dtype=torch.bfloat16)
    assert half.projector[2].weight.dtype == torch.bfloat16


def test_load_errors_name_the_problem(tmp_path):
    folder = tmp_path / "enc"
    with pytest.raises(InputError, match="camera_encoder_config.json is missing"):
        CameraEncoder.from_pretrained(folder)
    tiny().save_pretrained(folder)
    config_path = folder / CONFIG_NAME
    good = json.loads(config_path.read_text())

    def load_with(config: dict | str) -> str:
        config_path.write_text(config if isinstance(config, str) else json.dumps(config))
        with pytest.raises(InputError) as info:
            CameraEncoder.from_pretrained(folder)
        return str(info.value)

    assert "wrong shapes: blocks.0.attn.proj.bias (32,) != (40,)" in load_with({**good, "hidden_size": 40})
    assert "missing tensors: blocks.2.attn.proj.bias" in load_with({**good, "depth": 3})
    assert "unexpected tensors: blocks.1.attn.proj.bias" in load_with({**good, "depth": 1})
    assert "unknown camera encoder config keys: colour" in load_with({**good, "colour": 1})
    assert "model_type must be" in load_with({**good, "model_type": "bert"})
    assert load_with("{not json").startswith(f"{config_path}: invalid camera encoder config")
    config_path.write_text(json.dumps(good))
    (folder / WEIGHTS_NAME).write_bytes(b"\x00" * 4)
    with pytest.raises(InputError, match="cannot read camera encoder weights"):
        CameraEncoder.from_pretrained(folder)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(InputError, match="camera_encoder.safetensors is missing"):
        CameraEncoder.from_pretrained(folder)


@pytest.mark.parametrize("hidden, width, depth", [(64, 16, 2), (1536, 128, 2), (3584, 512, 8)])
def test_a_fresh_encoder_is_sized_with_its_language_model(hidden, width, depth):
    config = CameraEncoderConfig.for_language_model(hidden)
    assert (config.hidden_size, config.depth, config.out_hidden_size) == (width, depth, hidden)
    params = sum(p.numel() for p in CameraEncoder(config).parameters())
    if hidden == 64:  # the tiny kit's LLM: the encoder stays about a megabyte or two in float32
        assert params < 500_000
