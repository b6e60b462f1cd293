"""--fold-text-padding: the Wan DiT attends to a prompt's padding once, weighted by its count, and predicts
what it predicts over the padded prompt (values, gradients under block checkpointing, rollouts, the CLI)."""
from __future__ import annotations

import math

import pytest
import torch

from tests.cli.helpers import invoke, read_jsonl
from vidcli.diffusion.folded_text import fold, fold_text_padding, score_offsets
from vidcli.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PROMPTS = ["a red car drives through the street at night while the rain falls", "a dog", ""]


@pytest.fixture(scope="module")
def wan_path():
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models(["wan"])["wan"]


def fresh_adapter(path):
    from vidcli.diffusion.wan import WanAdapter

    return WanAdapter.from_pretrained(path)


def test_fold_keeps_each_prompt_and_marks_the_rows_that_stand_for_its_padding():
    embeds = torch.zeros(3, 8, 2)
    embeds[0, :2] = 1.0
    embeds[1, :5] = 2.0
    embeds[1, 3] = 0.0  # a zero row inside a prompt is the prompt's own: padding starts after the last non-zero
    folded = fold(embeds)
    assert folded.shape == (3, 6, 3)  # the longest prompt (5) plus one row
    assert torch.equal(folded[..., :2], embeds[:, :6])
    assert folded[..., 2].tolist() == [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]]
    offsets = score_offsets(folded[..., 2], 8)
    assert offsets.shape == (3, 1, 1, 6)
    # Padding rows had / rows kept: 6 / 4, 3 / 1 and 8 / 6.
    expected = [[0, 0] + [math.log(6 / 4)] * 4, [0] * 5 + [math.log(3)], [math.log(8 / 6)] * 6]
    torch.testing.assert_close(offsets[:, 0, 0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # The kept rows' weights add up to the padding's count: exp(offset) per row.
    weights = (offsets[:, 0, 0].exp() * folded[..., 2]).sum(-1)
    assert torch.allclose(weights, torch.tensor([6.0, 3.0, 8.0], dtype=torch.float64))


def test_a_prompt_that_fills_every_row_has_no_padding_to_fold():
    embeds = torch.ones(2, 4, 3)
    embeds[1, 2:] = 0.0
    folded = fold(embeds)
    assert folded.shape == (2, 4, 4)  # nothing to cut
    assert folded[..., 3].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]
    offsets = score_offsets(folded[..., 3], 4)[:, 0, 0]
    assert offsets[0].tolist() == [0, 0, 0, 0]
    assert torch.allclose(offsets[1], torch.zeros(4, dtype=torch.float64))  # 2 padding rows kept for 2


def dit_inputs(adapter, batch: int = 3):
    embeds = adapter.encode_prompt(PROMPTS[:batch], None, 5.0)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, 16, 2, 4, 4, generator=generator)
    return latents, torch.tensor([900.0, 500.0, 20.0][:batch]), embeds


def test_the_folded_dit_predicts_what_the_padded_one_does(wan_path):
    adapter = fresh_adapter(wan_path)
    dit = adapter.trainable_module()
    latents, t, embeds = dit_inputs(adapter)
    assert embeds.positive.shape[1] == 512
    with torch.no_grad():
        padded = [dit(hidden_states=latents, timestep=t, encoder_hidden_states=e, return_dict=False)[0]
                  for e in (embeds.positive, embeds.negative)]
        keys = list(dit.state_dict())
        adapter.fold_text_padding()
        adapter.fold_text_padding()  # a second call changes nothing
        assert list(dit.state_dict()) == keys  # no module replaced: checkpoints and LoRA names stay
        folded = [dit(hidden_states=latents, timestep=t, encoder_hidden_states=e, return_dict=False)[0]
                  for e in (embeds.positive, embeds.negative)]
        positional = dit(latents, t, embeds.positive, return_dict=False)[0]
    for ours, theirs in zip(folded, padded):
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert torch.equal(positional, folded[0])
    # The folded DiT never saw more than the longest prompt plus one text row.
    seen = []
    handle = dit.blocks[0].attn2.register_forward_pre_hook(lambda m, args: seen.append(args[1].shape[1]))
    with torch.no_grad():
        dit(hidden_states=latents, timestep=t, encoder_hidden_states=embeds.positive, return_dict=False)
    handle.remove()
    longest = int(embeds.positive.ne(0).any(-1).sum(-1).max())
    assert seen == [longest + 1] and longest < 40
    with pytest.raises(ValueError, match="padded to 512"):
        dit(hidden_states=latents, timestep=t, encoder_hidden_states=embeds.positive[:, :100], return_dict=False)


def test_gradients_are_the_padded_ones_when_blocks_are_recomputed_in_backward(wan_path):
    """The padding mark travels in the tensor the blocks get: a block recomputed in backward after other
    prompts went through the DiT (here the unconditional ones, folded to another length) still sees its own."""
    grads = []
    for folded in (False, True):
        adapter = fresh_adapter(wan_path)
        dit = adapter.trainable_module().double()  # in float64 the two agree to rounding: the same function
        dit.requires_grad_(True)
        if folded:
            adapter.fold_text_padding()
            dit.enable_gradient_checkpointing()
        dit.train()
        latents, t, embeds = dit_inputs(adapter, batch=2)
        latents, t = latents.double(), t.double()
        weights = torch.linspace(-1, 1, latents.numel(), dtype=torch.float64).view_as(latents)
        cond, uncond = (dit(hidden_states=latents, timestep=t, encoder_hidden_states=e.double(), return_dict=False)[0]
                        for e in (embeds.positive, embeds.negative))
        ((uncond + 5.0 * (cond - uncond)) * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in dit.named_parameters()})
    padded, folded = grads
    assert padded.keys() == folded.keys()
    text_keys = [n for n in padded if "attn2.to_k" in n or "text_embedder" in n]
    assert text_keys and all(padded[n].abs().sum() > 0 for n in text_keys)
    for name, grad in padded.items():
        assert (folded[name] - grad).norm() <= 1e-9 * grad.norm(), name


def test_a_folded_rollout_draws_the_pipelines_video(wan_path):
    from diffusers import WanPipeline

    from vidcli.diffusion.rollout import truncated_rollout

    pipe = WanPipeline.from_pretrained(wan_path)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(PROMPTS[:2], num_inference_steps=4, guidance_scale=5.0, num_frames=9, height=32, width=32,
                    generator=torch.Generator().manual_seed(7), output_type="latent").frames
    adapter = fresh_adapter(wan_path)
    adapter.fold_text_padding()
    with torch.no_grad():
        ours = truncated_rollout(adapter, PROMPTS[:2], steps=4, guidance=5.0, k_grad=0, seed=7, frames=9,
                                 height=32, width=32)
    assert (ours - expected).abs().max() <= 1e-5


def test_an_image_conditioned_dit_is_refused():
    from diffusers import WanTransformer3DModel

    dit = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=1, image_dim=8,
                                added_kv_proj_dim=16)
    with pytest.raises(InputError, match="text-to-video Wan"):
        fold_text_padding(dit, 512)


def test_generate_with_the_flag_writes_the_same_videos(wan_path, tmp_path):
    from vidcli.media import load_video

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i}", "prompt": "{p}"}}\n' for i, p in enumerate(PROMPTS[:2])))
    common = ["generate", "--model", str(wan_path), str(prompts), "--steps", "3", "--num-frames", "5", "--height",
              "32", "--width", "32", "--batch-size", "2", "-q"]
    videos = []
    for name, extra in (("plain", []), ("folded", ["--fold-text-padding"])):
        out = tmp_path / f"{name}.jsonl"
        result = invoke([*common, "-o", str(out), *extra])
        assert result.exit_code == 0, result.stderr
        videos.append([load_video(out.parent / r["output"]["video"]).frames.astype(int) for r in read_jsonl(out)])
    assert [len(v) for v in videos] == [2, 2]
    for plain, folded in zip(*videos):
        assert abs(plain - folded).max() <= 1  # the same frames, up to a rounding step of the 8-bit pixels


def test_generate_refuses_the_flag_for_cogvideox(tmp_path):
    from vidcli.testing import ensure_tiny_models

    path = ensure_tiny_models(["cogvideox"])["cogvideox"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "a cat"}\n')
    result = invoke(["generate", "--model", str(path), str(prompts), "-o", str(tmp_path / "out.jsonl"), "--steps",
                     "1", "--fold-text-padding", "-q"])
    assert result.exit_code == 1
    assert "--fold-text-padding: CogVideoX" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()
