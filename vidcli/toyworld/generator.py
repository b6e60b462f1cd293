"""The toy generator: a WanPipeline folder (UMT5 + the hand-set Wan VAE + a Wan DiT) pre-trained
with flow matching on toy-world videos and their captions.

- **Tokenizer and text encoder**: a T5-style Unigram tokenizer learned on toy captions and
  instructions, and a small UMT5 encoder. The encoder keeps its seeded random weights (a
  frozen map from tokens to features, as a frozen pretrained encoder is to drf-tune);
  the DiT learns to read it.
- **VAE**: :func:`vidcli.toyworld.vae.make_vae`, with ``latents_mean`` / ``latents_std``
  set to the training latents' per-channel statistics, so normalised latents have unit
  spread as the flow-matching noise does.
- **DiT**: ``WanTransformer3DModel`` on 3-channel latents, patch (1, 4, 4): a 32×32×9
  clip is 5 × 4 × 4 = 80 tokens; 4 layers of width 128 (4 heads of 32), feed-forward 384
  (1.1 M parameters). Each token decodes 4 × 4 latents × 3 channels, so width matters: at
  width 64 (ffn 192) the same 1500 steps drew colour speckle where the objects should be
  (object presence 0.242, colour 0.195 on 64 held-out captions; width 128: 0.422, 0.406).
  Patch 2 at width 64 got as far (0.422, 0.352) at 1.4 times the cost per step; 3000 steps
  at width 128 hardly more (0.438, 0.398) at twice the cost. The ``--quick`` build keeps
  width 64: in its 100 steps width 128 draws no object at all (300 steps: 0.344, 0.344,
  twice the quick build's time).
- **Scheduler**: Wan's UniPC on flow sigmas (shift 3), as the real checkpoints ship.

Pre-training (:func:`pretrain`): z_t = (1−t)·x0 + t·ε, target ε − x0, mean squared error,
the DiT called as the pipeline calls it (timestep 1000·t, the text embeddings the
pipeline makes: :meth:`WanPipeline.encode_prompt` at the adapter's 512 tokens); t is
Wan's shifted draw (shift 3, as sampling spends its steps) for half the examples and
uniform for the rest; captions are replaced by empty text 10% of the time so
classifier-free guidance has an unconditional model. The optimiser, schedule, seeding
and data order are the training core's (:mod:`vidcli.train.core`). The model is kept
small and trained briefly on purpose: its videos show some of a caption's facts, so a
reward has room to improve them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vidcli.toyworld.language import caption
from vidcli.toyworld.scene import FPS, random_scene, render

log = logging.getLogger("vidcli.toyworld")

MAX_TEXT = 512  # WanAdapter's prompt length: the embeddings are zero-padded to it
SHIFT = 3.0
CFG_DROP = 0.1
PATCH = 4  # DiT patch side on the 16×16 latents: 4 × 4 × 5 = 80 tokens per clip
HEADS, LAYERS = 4, 4
WIDTH = {"full": (32, 384), "quick": (16, 192)}  # head dim and feed-forward: width 128, and 64 (module docstring)


def text_corpus(rng: np.random.Generator, scenes: int = 120) -> list[str]:
    """Captions and edit instructions of random scenes."""
    from vidcli.toyworld.editor import random_edit

    lines = []
    for _ in range(scenes):
        lines.append(caption(random_scene(rng)))
        edit = random_edit(rng)
        lines += [edit.literal, edit.implicit]
    return lines


def unigram_tokenizer(texts: list[str], vocab_size: int = 160):
    """A T5-style Unigram tokenizer (``<pad>``=0, ``</s>``=1, ``<unk>``=2) learned by SentencePiece,
    single-threaded so that it is the same on every run (as the tiny kit's)."""
    import io

    import sentencepiece as spm
    from transformers import T5Tokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto, vocab_size=vocab_size, hard_vocab_limit=False,
        model_type="unigram", normalization_rule_name="identity", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    return T5Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())],
                       extra_ids=0)


def scene_latents(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 → the hand-set VAE's raw latents (3, T', H/2, W/2) (its encoder, computed directly)."""
    from vidcli.toyworld.vae import pooled

    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1
    return pooled(x)[0]


def build_untrained(folder: Path, *, seed: int, latents_mean: list[float], latents_std: list[float],
                    width: str = "full") -> None:
    """A WanPipeline folder with a fresh DiT of ``width`` (a key of :data:`WIDTH`), the seeded text
    encoder and the hand-set VAE."""
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from vidcli.testing.tokenizers import padded_vocab
    from vidcli.toyworld.vae import Z_DIM, make_vae

    tok = unigram_tokenizer(text_corpus(np.random.default_rng([seed, 11])))
    text_dim = 64
    head_dim, ffn = WIDTH[width]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=padded_vocab(len(tok)), d_model=text_dim, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)).eval()
        transformer = WanTransformer3DModel(
            patch_size=(1, PATCH, PATCH), num_attention_heads=HEADS, attention_head_dim=head_dim, in_channels=Z_DIM,
            out_channels=Z_DIM, text_dim=text_dim, freq_dim=64, ffn_dim=ffn, num_layers=LAYERS, rope_max_seq_len=32)
    vae = make_vae(latents_mean, latents_std)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=SHIFT)
    pipe = WanPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
    pipe.save_pretrained(folder)


def encode_texts(pipe, texts: list[str], batch: int = 64) -> list[torch.Tensor]:
    """Each text's embeddings as the pipeline makes them, cut to its own length (the pipeline pads
    the rest with zeros). Padded to the batch's longest text instead of 512 tokens: the encoder
    masks padding, so the texts' own positions come out the same, for a fraction of the work."""
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            ids = pipe.tokenizer(chunk, padding="longest", max_length=MAX_TEXT, truncation=True,
                                 add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
            hidden = pipe.text_encoder(ids.input_ids, ids.attention_mask).last_hidden_state
            out += [hidden[i, :int(n)].clone() for i, n in enumerate(ids.attention_mask.sum(1))]
    return out


def padded(embeds: list[torch.Tensor]) -> torch.Tensor:
    """(B, 512, D) with zeros after each text, as the pipeline pads."""
    out = torch.zeros(len(embeds), MAX_TEXT, embeds[0].shape[-1])
    for i, e in enumerate(embeds):
        out[i, :len(e)] = e
    return out


def draw_t(rng: np.random.Generator, count: int) -> torch.Tensor:
    """Flow times: Wan's shifted draw for half, uniform for the other half."""
    u = rng.random(count)
    shifted = SHIFT * u / (1 + (SHIFT - 1) * u)
    return torch.tensor(np.where(rng.random(count) < 0.5, shifted, u), dtype=torch.float32)


def pretrain(folder: Path, scenes: list, *, seed: int, steps: int, batch_size: int = 16,
             lr: float = 2e-3) -> list[float]:
    """Flow-matching pre-training of the DiT in ``folder`` on ``scenes``; saves it; the losses."""
    from diffusers import WanPipeline

    from vidcli.train.core import DataOrder, OptimConfig, build_optimizer, build_scheduler, clip_and_step, set_seed

    set_seed(seed)
    pipe = WanPipeline.from_pretrained(folder)
    vae = pipe.vae.config
    mean = torch.tensor(vae.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.latents_std).view(1, -1, 1, 1, 1)
    x0_all = (torch.stack([scene_latents(render(s)) for s in scenes]) - mean) / std
    texts = encode_texts(pipe, [caption(s) for s in scenes])
    empty = encode_texts(pipe, [""])[0]
    dit = pipe.transformer
    dit.train()
    optim = OptimConfig(lr=lr, weight_decay=0.01, warmup_steps=max(1, steps // 20), max_grad_norm=1.0)
    optimizer = build_optimizer(dit.named_parameters(), optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    order = DataOrder(len(scenes), batch_size, seed)
    losses = []
    for step in range(steps):
        _, indices = order.micro_batch(step)
        rng = np.random.default_rng([seed, 5, step])
        x0 = x0_all[indices]
        t = draw_t(rng, len(indices))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        z_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
        text = padded([empty if rng.random() < CFG_DROP else texts[i] for i in indices])
        v = dit(hidden_states=z_t, timestep=1000 * t, encoder_hidden_states=text, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(v.float(), noise - x0)
        loss.backward()
        clip_and_step(None, list(dit.parameters()), optimizer, scheduler, optim.max_grad_norm)
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == steps - 1:
            log.info("generator step %d/%d loss %.4f", step + 1, steps, losses[-1])
    dit.eval()
    dit.save_pretrained(folder / "transformer")
    return losses


def latent_statistics(scenes: list) -> tuple[list[float], list[float]]:
    """Per-channel mean and spread of the VAE latents of ``scenes``."""
    lat = torch.stack([scene_latents(render(s)) for s in scenes])
    return ([round(float(v), 4) for v in lat.mean(dim=(0, 2, 3, 4))],
            [round(float(v), 4) for v in lat.std(dim=(0, 2, 3, 4))])


def adherence_report(folder: Path, scenes: list, *, steps: int = 20, guidance: float = 5.0,
                     seed: int = 0) -> dict:
    """``vidcli generate``'s sampling (same loader, same seeded noise per id) on the captions of
    ``scenes``; the oracle's caption adherence of the videos, per fact kind, beside two
    references: chance (each caption against another scene's render) and the ceiling (the
    VAE's reconstruction of the caption's own scene)."""
    from vidcli.diffusion.generate import default_settings, generate_videos, load_video_model, to_uint8
    from vidcli.toyworld.language import KINDS
    from vidcli.toyworld.oracle import caption_adherence
    from vidcli.toyworld.vae import make_vae

    model = load_video_model(folder, device="cpu", dtype="float32")
    settings = default_settings(model, steps=steps, guidance=guidance, num_frames=9, height=32, width=32,
                                fps=FPS, seed=seed)
    captions = [caption(s) for s in scenes]
    videos = []
    for start in range(0, len(scenes), 16):
        ids = [f"heldout{i:03d}" for i in range(start, min(start + 16, len(scenes)))]
        frames = generate_videos(model, captions[start:start + 16], ids, settings)
        videos += [to_uint8(f) for f in frames]
    vae = make_vae()
    with torch.no_grad():
        recon = [to_uint8(vae(torch.from_numpy(render(s)).permute(3, 0, 1, 2).float()[None] / 127.5 - 1
                              ).sample[0].permute(1, 0, 2, 3) * 0.5 + 0.5) for s in scenes]
    rows = {"generated": [caption_adherence(v, c) for v, c in zip(videos, captions)],
            "chance": [caption_adherence(render(scenes[(i + 1) % len(scenes)]), c) for i, c in enumerate(captions)],
            "ceiling": [caption_adherence(v, c) for v, c in zip(recon, captions)]}
    report = {}
    for name, results in rows.items():
        by_kind = {}
        for kind in KINDS:
            values = [r["by_kind"][kind] for r in results if kind in r["by_kind"]]
            if values:
                by_kind[kind] = round(float(np.mean(values)), 3)
        report[name] = {"score": round(float(np.mean([r["score"] for r in results])), 3), "by_kind": by_kind}
    report["count"] = len(scenes)
    report["sampling"] = {"steps": steps, "guidance": guidance, "seed": seed}
    return report


def build_generator(folder: Path, *, seed: int, quick: bool) -> dict:
    """Build, pre-train and measure the generator pipeline in ``folder``; the report."""
    sizes = dict(scenes=300, steps=100, test=16) if quick else dict(scenes=4000, steps=1500, test=64)
    rng = np.random.default_rng([seed, 12])
    scenes = [random_scene(rng) for _ in range(sizes["scenes"])]
    mean, std = latent_statistics(scenes[:200])
    folder.mkdir(parents=True, exist_ok=True)
    build_untrained(folder, seed=seed, latents_mean=mean, latents_std=std, width="quick" if quick else "full")
    losses = pretrain(folder, scenes, seed=seed, steps=sizes["steps"])
    held_out = [random_scene(np.random.default_rng([seed, 13, i])) for i in range(sizes["test"])]
    report = adherence_report(folder, held_out, seed=seed)
    report["final_loss"] = round(float(np.mean(losses[-20:])), 4)
    report["steps"] = sizes["steps"]
    report["train_scenes"] = len(scenes)
    return report
