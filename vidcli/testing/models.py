"""Tiny models of the real architectures, for tests and the TINY=1 recipes.

Nothing here downloads anything: configs are written by hand at toy sizes, weights are
random but seeded (two builds give identical weights), and tokenizers are trained on the
spot on a small English corpus about videos, cameras, objects and colours. Every folder
is saved with ``save_pretrained`` and loads through the library's own ``from_pretrained``,
so code under test takes the same path it takes with real checkpoints.

Folders written by :func:`build_tiny_models` (``which`` picks a subset):

- ``llm``    Qwen2ForCausalLM + byte-level BPE tokenizer with a Qwen-style chat template
- ``vlm``    Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor (images and videos)
- ``wan``    diffusers WanPipeline: WanTransformer3DModel, AutoencoderKLWan,
             UMT5EncoderModel, a T5 tokenizer and the UniPC flow scheduler Wan2.1 ships
- ``siglip`` SiglipModel + SiglipProcessor

Built only when named (``which=["qwen2vl"]``), since few tests need them:

- ``qwen2vl`` Qwen2VLForConditionalGeneration + Qwen2VLProcessor
- ``omni``   Qwen2_5OmniThinkerForConditionalGeneration + Qwen2_5OmniProcessor (audio too)
- ``cogvideox`` diffusers CogVideoXPipeline: CogVideoXTransformer3DModel (rotary, as in 5b),
             AutoencoderKLCogVideoX, T5EncoderModel, a T5 tokenizer and CogVideoX's DDIM scheduler

Command line::

    python -m vidcli.testing tiny-models OUTDIR [--only llm,vlm]    (vidcli.testing.cli)

Serving the tiny LLM with the real OpenAI-compatible server of transformers (needs
fastapi, uvicorn, pydantic and openai, all in the ``[test]`` extras)::

    mkdir -p /tmp/hub
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/hub \
      transformers serve OUTDIR/llm --host 127.0.0.1 --port 8000 --device cpu
    curl http://127.0.0.1:8000/health       # {"status":"ok"} once it listens
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
      -d '{"model": "OUTDIR/llm", "max_tokens": 8, "temperature": 0,
           "messages": [{"role": "user", "content": "Is the dog red?"}]}'

``model`` in the request names the same path the server preloaded; the path must not
contain ``@`` (the server reads what follows it as a revision). ``/v1/models`` lists
the hub cache and answers 500 when that folder does not exist, hence ``HF_HUB_CACHE``
pointing at one; ``/health`` is the readiness check that needs nothing. The tiny
models' generation config samples, as instruct checkpoints do: a request with
temperature 0 gets greedy decoding.

Builds are cached by :func:`ensure_tiny_models` under :func:`default_tiny_dir`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from vidcli.testing import tokenizers as tiny_tokenizers
from vidcli.testing.tokenizers import (
    LLM_CHAT_TEMPLATE,
    OMNI_CHAT_TEMPLATE,
    OMNI_SPECIAL_TOKENS,
    QWEN_SPECIAL_TOKENS,
    VLM_CHAT_TEMPLATE,
    chat_generation_config,
    omni_tokenizer,
    padded_vocab,
    qwen_tokenizer,
    unigram_tokenizer,
)

ALL_MODELS = ("llm", "vlm", "wan", "siglip")
SEED = 1234
# At the usual 0.02 init a random tiny chat model echoes its last prompt token ("\n") for
# ever; wider weights make greedy replies visible text that changes with the prompt.
WIDE_INIT = 0.1

def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def build_llm(outdir: Path) -> None:
    """Tiny Qwen2ForCausalLM with a chat template, servable by ``transformers serve``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = qwen_tokenizer()
    tok.chat_template = LLM_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen2Config(
        vocab_size=padded_vocab(len(tok)), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True, initializer_range=WIDE_INIT,
        bos_token_id=ids[0], eos_token_id=ids[1], pad_token_id=ids[0],
    )
    _seed()
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = chat_generation_config(tok)
    model.save_pretrained(outdir)
    tok.save_pretrained(outdir)


def build_vlm(outdir: Path) -> None:
    """Tiny Qwen2.5-VL with its processor; images and videos are kept to a few patches."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = qwen_tokenizer()
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    text_hidden, heads = 64, 4
    head_dim = text_hidden // heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=padded_vocab(len(tok)), hidden_size=text_hidden, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=2,
            max_position_embeddings=2048, bos_token_id=eot, eos_token_id=ids["<|im_end|>"],
            pad_token_id=eot, initializer_range=WIDE_INIT,
            # mrope splits the rotary half-dimension (head_dim / 2) into time, height, width.
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]},
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text_hidden,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
            fullatt_block_indexes=[1], tokens_per_second=2, initializer_range=WIDE_INIT,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    _seed()
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = chat_generation_config(tok)
    # 28 px = one merged 2x2 block of 14 px patches; images land between 2x2 and 4x4 blocks.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    video_processor = Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56 * 2,
                                            min_frames=2, max_frames=16, cap_pixels_per_frame=True)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                    video_processor=video_processor, chat_template=VLM_CHAT_TEMPLATE)
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)


def build_wan(outdir: Path) -> None:
    """Tiny WanPipeline folder (text-to-video), laid out like Wan2.1-T2V-*-Diffusers."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tok = unigram_tokenizer(vocab_size=400)
    text_dim = 32
    _seed()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=padded_vocab(len(tok)), d_model=text_dim, d_kv=8, d_ff=64, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )).eval()
    _seed()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
        text_dim=text_dim, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=64,
    )
    _seed()
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    # The scheduler Wan2.1 checkpoints ship: UniPC on flow-matching sigmas, shift 3 (480p).
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
    pipe.save_pretrained(outdir)


def build_siglip(outdir: Path) -> None:
    """Tiny SiglipModel + SiglipProcessor (32 px images, 64-token texts)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tok = unigram_tokenizer(vocab_size=400)
    tok.model_max_length = 64
    config = SiglipConfig(
        text_config=dict(vocab_size=padded_vocab(len(tok)), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    _seed()
    model = SiglipModel(config).eval()
    processor = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}),
                                tokenizer=tok)
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)


def build_qwen2_vl(outdir: Path) -> None:
    """Tiny Qwen2-VL (the first generation: no window attention, plain 1D rope in the ViT)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = qwen_tokenizer()
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    text_hidden, heads = 64, 4
    head_dim = text_hidden // heads
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=padded_vocab(len(tok)), hidden_size=text_hidden, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=2,
            max_position_embeddings=2048, bos_token_id=eot, eos_token_id=ids["<|im_end|>"],
            pad_token_id=eot, initializer_range=WIDE_INIT,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]},
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=text_hidden, mlp_ratio=2, num_heads=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, initializer_range=WIDE_INIT),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    _seed()
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config = chat_generation_config(tok)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56 * 2, min_frames=2,
                                              max_frames=16, cap_pixels_per_frame=True),
        chat_template=VLM_CHAT_TEMPLATE,
    )
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)


def build_omni(outdir: Path) -> None:
    """Tiny Qwen2.5-Omni thinker (text, image, video and audio in; text out) with its processor."""
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    tok = omni_tokenizer()
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in OMNI_SPECIAL_TOKENS.items()}
    im_end, eot = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    text_hidden, heads = 64, 4
    head_dim = text_hidden // heads
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=text_hidden, n_window=50, initializer_range=WIDE_INIT),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text_hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], initializer_range=WIDE_INIT),
        text_config=dict(
            vocab_size=padded_vocab(len(tok)), hidden_size=text_hidden, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=2, max_position_embeddings=4096,
            bos_token_id=eot, eos_token_id=im_end, pad_token_id=eot, initializer_range=WIDE_INIT,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]},
        ),
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"], user_token_id=tok.convert_tokens_to_ids("user"),
        initializer_range=WIDE_INIT, tie_word_embeddings=True,
    )
    _seed()
    model = Qwen2_5OmniThinkerForConditionalGeneration(config).eval()
    model.generation_config = chat_generation_config(tok)
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        video_processor=Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56 * 2, min_frames=2,
                                              max_frames=16, cap_pixels_per_frame=True),
        # Whisper-style log-mel features with 128 bins at 16 kHz, as the real checkpoint uses.
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=16000),
        tokenizer=tok, chat_template=OMNI_CHAT_TEMPLATE,
    )
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)


def build_cogvideox(outdir: Path) -> None:
    """Tiny CogVideoXPipeline folder, laid out like CogVideoX-5b (3D rotary positions, v-prediction DDIM)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tok = unigram_tokenizer(vocab_size=400)
    text_dim = 32
    _seed()
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=padded_vocab(len(tok)), d_model=text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )).eval()
    _seed()
    # A head of 16 splits evenly into the rotary time / height / width parts (4 + 6 + 6).
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
        text_embed_dim=text_dim, num_layers=2, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
        use_rotary_positional_embeddings=True,
    )
    _seed()
    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=2, sample_height=32, sample_width=32)
    # CogVideoX-5b's scheduler: DDIM on v-prediction with zero-terminal-SNR betas, trailing spacing.
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=1.0,
        timestep_spacing="trailing", steps_offset=0,
    )
    pipe = CogVideoXPipeline(tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=scheduler)
    pipe.save_pretrained(outdir)


BUILDERS = {"llm": build_llm, "vlm": build_vlm, "wan": build_wan, "siglip": build_siglip,
            # Built only when asked for by name (not part of ALL_MODELS).
            "qwen2vl": build_qwen2_vl, "omni": build_omni, "cogvideox": build_cogvideox}


def build_tiny_models(outdir: Path, which: tuple[str, ...] | list[str] = ALL_MODELS) -> dict[str, Path]:
    """Write the chosen tiny models under ``outdir/<name>`` and return their folders."""
    unknown = sorted(set(which) - set(BUILDERS))
    if unknown:
        raise ValueError(f"unknown tiny model(s) {unknown}; choose from {list(ALL_MODELS)}")
    import torch

    outdir = Path(outdir)
    paths = {}
    with torch.random.fork_rng(devices=[]):  # builders seed torch; the caller's RNG stays as it was
        for name in which:
            paths[name] = outdir / name
            paths[name].mkdir(parents=True, exist_ok=True)
            BUILDERS[name](paths[name])
    return paths


def builder_key() -> str:
    """Short hash naming one cache generation: the builders' sources and the libraries that save.

    Any edit to a builder, a config, the corpus or a tokenizer (this file and
    :mod:`vidcli.testing.tokenizers`) changes the sources, so a stale cache is never
    reused; so does an upgrade of the libraries whose save format may change.
    """
    h = hashlib.sha256()
    for source in (Path(__file__), Path(tiny_tokenizers.__file__)):
        h.update(source.read_bytes())
    for dist in ("transformers", "diffusers", "tokenizers", "sentencepiece"):
        h.update(f"|{dist}={metadata.version(dist)}".encode())
    return h.hexdigest()[:16]


def default_tiny_dir() -> Path:
    """Where :func:`ensure_tiny_models` keeps its builds (``$XDG_CACHE_HOME/vidcli/tiny-models/<key>``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "vidcli" / "tiny-models" / builder_key()


def ensure_tiny_models(
    which: tuple[str, ...] | list[str] | str | os.PathLike = ALL_MODELS, *, root: Path | None = None
) -> dict[str, Path]:
    """Build the chosen tiny models once and reuse them afterwards.

    ``root`` defaults to :func:`default_tiny_dir`; a path given as the first argument is
    taken as ``root`` (all models). Each model is built into a temporary sibling folder
    and renamed into place, so a killed build never leaves a half-written model that a
    later call would trust, and two processes building at once both end up with one
    complete folder.
    """
    if isinstance(which, os.PathLike):
        which, root = ALL_MODELS, Path(which)
    elif isinstance(which, str):
        which = [which]
    root = Path(root) if root is not None else default_tiny_dir()
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in which:
        final = root / name
        if not final.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
            try:
                build_tiny_models(tmp, [name])
                os.rename(tmp / name, final)
            except OSError:
                if not final.is_dir():  # not a lost race with another builder: a real failure
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        paths[name] = final
    return paths
