"""Generator adapters and the truncated-gradient rollout against the diffusers pipelines."""
from __future__ import annotations

import pytest
import torch

from vidcli.diffusion import load_adapter
from vidcli.diffusion.rollout import truncated_rollout
from vidcli.errors import InputError

PROMPT = "a red car drives through the street"
SIZE = dict(height=32, width=32)


@pytest.fixture(scope="module")
def paths():
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models(["wan", "cogvideox"])


@pytest.fixture(scope="module")
def wan(paths):
    from vidcli.diffusion.wan import WanAdapter

    return WanAdapter.from_pretrained(paths["wan"])


@pytest.fixture(scope="module")
def cog(paths):
    from vidcli.diffusion.cogvideox import CogVideoXAdapter

    return CogVideoXAdapter.from_pretrained(paths["cogvideox"])


def pipeline_output(pipe_class, path, output_type, frames=9, steps=4, guidance=5.0, scheduler=None):
    pipe = pipe_class.from_pretrained(path)
    if scheduler is not None:
        pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, num_frames=frames,
                generator=torch.Generator().manual_seed(7), output_type=output_type, **SIZE).frames


def rollout(adapter, k_grad=0, steps=4, guidance=5.0, frames=9, **kw):
    return truncated_rollout(adapter, [PROMPT], steps=steps, guidance=guidance, k_grad=k_grad, seed=7,
                             frames=frames, **SIZE, **kw)


def dit_grads(adapter):
    return [p.grad.clone() for p in adapter.trainable_module().parameters()]


def zero_grads(adapter):
    for p in adapter.trainable_module().parameters():
        p.grad = None


# --- Wan ---------------------------------------------------------------------------


def test_wan_rollout_without_gradient_reproduces_the_pipeline(wan, paths):
    from diffusers import WanPipeline

    expected = pipeline_output(WanPipeline, paths["wan"], "latent")
    with torch.no_grad():
        assert (rollout(wan, k_grad=3) - expected).abs().max() <= 1e-5  # no_grad overrides k_grad
    latents = rollout(wan, k_grad=0)
    assert not latents.requires_grad
    assert (latents - expected).abs().max() <= 1e-5
    video = pipeline_output(WanPipeline, paths["wan"], "pt")
    with torch.no_grad():
        assert (wan.decode(latents) - video).abs().max() <= 1e-5


def test_wan_decodes_only_the_latent_prefix_it_needs(wan, monkeypatch):
    with torch.no_grad():
        latents = rollout(wan)
        full = wan.decode(latents)
        seen = []
        original = wan.pipe.vae.decode
        monkeypatch.setattr(wan.pipe.vae, "decode", lambda z, **kw: seen.append(z.shape[2]) or original(z, **kw))
        part = wan.decode(latents, frame_indices=[0, 3, 4])
    assert full.shape == (1, 9, 3, 32, 32)
    assert seen == [2]  # frames 0..4 come from latent frames 0 and 1 (1 + 4 frames)
    assert torch.equal(part, full[:, [0, 3, 4]])  # causal VAE: the prefix decode is exact
    with pytest.raises(InputError, match="past"):
        wan.decode(latents.detach(), frame_indices=[9])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("indices", [[3, 3, 0, 6], None])
def test_checkpointed_decode_equals_the_plain_decode_values_and_gradients(wan, indices):
    torch.manual_seed(0)
    latents = torch.randn(1, 16, 3, 4, 4, requires_grad=True)
    weights = None
    results = []
    for checkpointed in (False, True):
        wan.decode_checkpointing = checkpointed
        try:
            frames = wan.decode(latents, indices)
        finally:
            wan.decode_checkpointing = False
        if weights is None:  # an uneven upstream gradient, so every frame and channel counts
            weights = torch.linspace(-1, 1, frames.numel()).view_as(frames)
        (grad,) = torch.autograd.grad((frames * weights).sum(), latents)
        results.append((frames.detach(), grad))
    (plain, plain_grad), (ckpt, ckpt_grad) = results
    assert ckpt.shape == plain.shape == (1, len(indices) if indices else 9, 3, 32, 32)
    assert torch.allclose(ckpt, plain, atol=1e-5) and torch.allclose(ckpt_grad, plain_grad, atol=1e-5)
    assert plain_grad.abs().sum() > 0


@pytest.mark.usefixtures("one_thread")
def test_checkpointed_decode_holds_memory_for_the_frames_asked_not_the_video_length(wan):
    from vidcli.plan.meter import LiveTensors

    def held_after_decode(latent_frames: int, count: int, checkpointed: bool) -> tuple[int, int]:
        from vidcli.diffusion.rollout import uniform_frame_indices

        latents = torch.randn(1, 16, latent_frames, 4, 4, requires_grad=True)
        wan.decode_checkpointing = checkpointed
        try:
            with LiveTensors() as meter:
                frames = wan.decode(latents, uniform_frame_indices(1 + 4 * (latent_frames - 1), count))
                held = meter.current
                frames.sum().backward()
        finally:
            wan.decode_checkpointing = False
        return held, meter.peak

    plain = {(t, n): held_after_decode(t, n, False) for t in (2, 4) for n in (2, 4)}
    ckpt = {(t, n): held_after_decode(t, n, True) for t in (2, 4) for n in (2, 4)}
    frame_bytes = 3 * 32 * 32 * 4
    # Without checkpointing the decode's graph grows with the video (every latent frame decoded).
    assert plain[4, 2][0] > 1.8 * plain[2, 2][0]
    # With it, what the decode holds until backward is its output frames and little else...
    for (t, n), (held, _) in ckpt.items():
        assert n * frame_bytes <= held < n * frame_bytes + 0.1 * plain[2, 2][0]
    # ...growing with the frames asked for, not with the video length.
    assert ckpt[4, 2][0] - ckpt[2, 2][0] < 0.25 * (ckpt[2, 4][0] - ckpt[2, 2][0]) + 16 * 4 * 4 * 4 * 3
    assert ckpt[2, 4][0] - ckpt[2, 2][0] >= 2 * frame_bytes
    # Backward recomputes one latent frame at a time: its peak stays under the plain graph's.
    assert all(ckpt[key][1] < plain[key][1] for key in plain)


def test_only_the_last_k_steps_run_with_gradient(wan):
    calls = []
    # A pre-hook: checkpoint recomputation stops as soon as it has what backward needs, so
    # the recomputed unconditional call never returns and a post-forward hook would miss it.
    hook = wan.trainable_module().register_forward_pre_hook(lambda m, i: calls.append(torch.is_grad_enabled()))
    try:
        latents = rollout(wan, k_grad=2, steps=4)
        forward_calls = list(calls)
        wan.decode(latents).mean().backward()
    finally:
        hook.remove()
    # Two DiT calls per step (conditional, unconditional): steps 0-1 without, 2-3 with autograd.
    assert forward_calls == [False] * 4 + [True] * 4
    assert calls[8:] == [True] * 4  # checkpointing recomputes the two grad steps during backward
    grads = dit_grads(wan)
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    zero_grads(wan)


def saved_tensor_bytes(fn) -> int:
    """Bytes autograd keeps for backward while ``fn`` runs."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_early_steps_keep_no_graph_and_checkpointing_keeps_less(wan):
    k2_of_4 = saved_tensor_bytes(lambda: rollout(wan, k_grad=2, steps=4))
    k2_of_6 = saved_tensor_bytes(lambda: rollout(wan, k_grad=2, steps=6))
    k3_of_6 = saved_tensor_bytes(lambda: rollout(wan, k_grad=3, steps=6))
    plain = saved_tensor_bytes(lambda: rollout(wan, k_grad=2, steps=4, checkpoint_steps=False))
    assert 0 < k2_of_4 == k2_of_6 < k3_of_6  # the memory grows with K, never with T - K
    assert plain > 3 * k2_of_4  # without checkpointing every DiT activation stays alive


def test_checkpointed_and_plain_gradients_are_equal(wan):
    rollout(wan, k_grad=2).square().mean().backward()
    checkpointed = dit_grads(wan)
    zero_grads(wan)
    rollout(wan, k_grad=2, checkpoint_steps=False).square().mean().backward()
    plain = dit_grads(wan)
    zero_grads(wan)
    for a, b in zip(checkpointed, plain):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)


def test_bad_k_and_bad_folders_are_refused(wan, tmp_path, paths):
    with pytest.raises(ValueError, match="k_grad"):
        rollout(wan, k_grad=5, steps=4)
    with pytest.raises(InputError, match="not a diffusers pipeline"):
        load_adapter(tmp_path)
    assert type(load_adapter(paths["wan"])).__name__ == "WanAdapter"
    assert type(load_adapter(paths["cogvideox"])).__name__ == "CogVideoXAdapter"


# --- CogVideoX -------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"])
def test_cogvideox_rollout_without_gradient_reproduces_the_pipeline(cog, paths, scheduler):
    import diffusers
    from diffusers import CogVideoXPipeline

    scheduler_class = getattr(diffusers, scheduler)
    original = cog.pipe.scheduler
    cog.pipe.scheduler = scheduler_class.from_config(original.config)
    try:
        expected = pipeline_output(CogVideoXPipeline, paths["cogvideox"], "latent", guidance=6.0,
                                   scheduler=scheduler_class)
        with torch.no_grad():
            latents = rollout(cog, k_grad=2, guidance=6.0)
    finally:
        cog.pipe.scheduler = original
    assert (latents - expected).abs().max() <= 1e-5
    if scheduler == "CogVideoXDDIMScheduler":
        video = pipeline_output(CogVideoXPipeline, paths["cogvideox"], "pt", guidance=6.0)
        with torch.no_grad():
            assert (cog.decode(latents) - video).abs().max() <= 1e-5


def test_cogvideox_prefix_decode_keeps_to_chunk_boundaries(cog):
    with torch.no_grad():
        latents = rollout(cog, guidance=6.0, frames=13)  # 4 latent frames: chunks [0, 2) and [2, 4)
        full = cog.decode(latents)
        assert cog.decode_prefix(4, needed=1) == 2 and cog.decode_prefix(4, needed=3) == 4
        assert cog.decode_prefix(3, needed=1) == 3  # odd counts: the first chunk holds three
        assert torch.equal(cog.decode(latents, frame_indices=[0, 5, 7]), full[:, [0, 5, 7]])
        # A prefix that cuts a chunk in two decodes differently: why decode_prefix exists.
        cut = cog.decode(latents[:, :1])
        assert not torch.allclose(cut, full[:, :cut.shape[1]], atol=1e-3)


def test_cogvideox_gradients_reach_the_dit(cog):
    latents = rollout(cog, k_grad=1, guidance=6.0)
    cog.decode(latents, frame_indices=[0, 4, 8]).mean().backward()
    grads = dit_grads(cog)
    zero_grads(cog)
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in cog.pipe.vae.parameters())


def test_uniform_frame_indices():
    from vidcli.diffusion.rollout import uniform_frame_indices

    # 49 frames, N_f = 10: steps of 48/9 = 5.33 frames, rounded half up.
    assert uniform_frame_indices(49, 10) == [0, 5, 11, 16, 21, 27, 32, 37, 43, 48]
    assert uniform_frame_indices(9, 3) == [0, 4, 8]
    assert uniform_frame_indices(4, 7) == [0, 1, 1, 2, 2, 3, 3]  # fewer frames than asked: repeats
    assert uniform_frame_indices(10, 1) == [4]
    with pytest.raises(ValueError):
        uniform_frame_indices(0, 3)
