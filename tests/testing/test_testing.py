"""The tiny-model kit: every folder loads through the library's own from_pretrained and works."""
from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidcli.testing import build_tiny_models, ensure_tiny_models
from vidcli.testing import models as testing
from vidcli.testing.cli import main as kit_cli
from vidcli.testing.tokenizers import QWEN_SPECIAL_TOKENS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


def picture(seed: int, height: int = 60, width: int = 80) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def folder_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_llm_tokenizer_and_chat_template(tiny):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["llm"])
    config = AutoConfig.from_pretrained(tiny["llm"])
    assert type(tok).__name__ == "Qwen2Tokenizer" and config.model_type == "qwen2"
    # Trained on the domain corpus, so its words are single tokens.
    assert tok.tokenize("The camera pans left") == ["The", "Ġcamera", "Ġpans", "Ġleft"]
    assert tok.decode(tok("Is the red car blue? Yes.")["input_ids"]) == "Is the red car blue? Yes."
    conversation = [{"role": "system", "content": "Answer yes or no."}, {"role": "user", "content": "Is it red?"}]
    rendered = tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert rendered == ("<|im_start|>system\nAnswer yes or no.<|im_end|>\n"
                        "<|im_start|>user\nIs it red?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS + ["<|endoftext|>"])
    assert len(set(ids)) == len(ids) and max(ids) < config.vocab_size
    assert min(ids[:-1]) > ids[-1]  # appended after the learned vocabulary, as in the real one
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    image_part = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    with pytest.raises(Exception, match="reads text only"):
        tok.apply_chat_template(image_part, tokenize=False)


def test_llm_greedy_generate_is_argmax_of_forward(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["llm"])
    model = AutoModelForCausalLM.from_pretrained(tiny["llm"]).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    enc = tok.apply_chat_template([{"role": "user", "content": "Is the dog red?"}], add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")
    out = model.generate(**enc, do_sample=False, max_new_tokens=6)
    ids = enc["input_ids"]
    with torch.no_grad():
        for _ in range(6):  # the same thing by hand, one forward pass per token
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)
    # Wide init: the reply is visible text, not the last prompt token repeated.
    assert tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_vlm_processor_expands_images_and_videos(tiny):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["vlm"])
    model = AutoModelForImageTextToText.from_pretrained(tiny["vlm"]).eval()
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    tok = processor.tokenizer
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        token = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                 "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}[name]
        assert getattr(model.config, name) == tok.convert_tokens_to_ids(token) < text.vocab_size

    image_chat = [{"role": "user", "content": [{"type": "image", "image": picture(0)},
                                               {"type": "text", "text": "What color is the car?"}]}]
    enc = processor.apply_chat_template(image_chat, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt")
    grid = enc["image_grid_thw"][0]
    # 60x80 rounds to 56x84 pixels: 4x6 patches of 14 px, merged 2x2 into 6 tokens.
    assert grid.tolist() == [1, 4, 6]
    assert enc["pixel_values"].shape == (24, 3 * 2 * 14 * 14)
    rendered = processor.decode(enc["input_ids"][0])
    assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                               "<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>What color")
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    out = model.generate(**enc, do_sample=False, max_new_tokens=4)
    assert out.shape == (1, enc["input_ids"].shape[1] + 4)

    frames = [picture(i) for i in range(6)]
    encoded = []
    for video in (frames, np.stack([np.asarray(f) for f in frames])):  # PIL list or THWC array
        chat = [{"role": "user", "content": [{"type": "video", "video": video},
                                             {"type": "text", "text": "Does the camera move?"}]}]
        encoded.append(processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                     return_dict=True, return_tensors="pt"))
    pil, array = encoded
    assert pil["video_grid_thw"][0].tolist() == [3, 4, 6]  # 6 frames in pairs, 4x6 patches
    assert (pil["input_ids"] == tok.convert_tokens_to_ids("<|video_pad|>")).sum() == 3 * 4 * 6 // 4
    assert torch.equal(pil["input_ids"], array["input_ids"])
    assert torch.allclose(pil["pixel_values_videos"], array["pixel_values_videos"])
    out = model.generate(**pil, do_sample=False, max_new_tokens=4)
    assert out.shape == (1, pil["input_ids"].shape[1] + 4)


def test_wan_pipeline_runs_two_steps(tiny):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    pipe = WanPipeline.from_pretrained(tiny["wan"])
    scheduler = pipe.scheduler.config
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert (scheduler.prediction_type, scheduler.use_flow_sigmas, scheduler.flow_shift) == \
        ("flow_prediction", True, 3.0)
    assert type(pipe.text_encoder).__name__ == "UMT5EncoderModel"
    assert pipe.tokenizer.tokenize("a red car") == ["▁a", "▁red", "▁car"]
    steps = []

    def count(pipeline, step, timestep, kwargs):
        steps.append(int(timestep))
        return kwargs

    def run():
        return pipe("a red car drives through the city", num_inference_steps=2, num_frames=5, height=16,
                    width=16, generator=torch.Generator().manual_seed(0), output_type="np",
                    max_sequence_length=32, callback_on_step_end=count).frames

    first, second = run(), run()
    assert first.shape == (1, 5, 16, 16, 3)
    assert len(steps) == 4 and steps[:2] == steps[2:] and steps[0] > steps[1]
    assert np.array_equal(first, second)  # seeded: the same video twice
    assert 0.0 <= first.min() and first.max() <= 1.0


def test_siglip_image_features(tiny):
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["siglip"])
    model = AutoModel.from_pretrained(tiny["siglip"]).eval()
    assert type(model).__name__ == "SiglipModel" and type(processor).__name__ == "SiglipProcessor"
    inputs = processor(text=["a red car", "a dog on the beach"], images=[picture(0), picture(1)],
                       padding="max_length", return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 3, 32, 32) and inputs["input_ids"].shape == (2, 64)
    with torch.no_grad():
        features = model.get_image_features(pixel_values=inputs["pixel_values"])
        features = getattr(features, "pooler_output", features)
        pooled = model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
        logits = model(**inputs).logits_per_image
    assert features.shape == (2, 32)
    assert torch.allclose(features, pooled)
    assert not torch.allclose(features[0], features[1])  # different pictures, different features
    assert logits.shape == (2, 2)


def test_build_is_deterministic(tiny, tmp_path):
    state = torch.random.get_rng_state()
    again = build_tiny_models(tmp_path / "again")
    assert torch.equal(torch.random.get_rng_state(), state)  # seeding stayed inside the build
    for name, path in tiny.items():
        assert folder_bytes(again[name]) == folder_bytes(path), name


def test_ensure_builds_once_then_reuses(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    first = ensure_tiny_models(["llm"], root=root)
    assert first == {"llm": root / "llm"}
    before = folder_bytes(first["llm"])

    def refuse(outdir):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setitem(testing.BUILDERS, "llm", refuse)
    assert ensure_tiny_models(["llm"], root=root) == first
    assert ensure_tiny_models("llm", root=root) == first
    monkeypatch.setattr(testing, "ALL_MODELS", ("llm",))
    assert ensure_tiny_models(root) == first  # a path alone names the cache root, all models
    assert folder_bytes(first["llm"]) == before
    assert sorted(p.name for p in root.iterdir()) == ["llm"]  # no temporary folders left behind


def test_ensure_leaves_nothing_after_a_failed_build(tmp_path, monkeypatch):
    def crash(outdir):
        (outdir / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    monkeypatch.setitem(testing.BUILDERS, "llm", crash)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        ensure_tiny_models(["llm"], root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_default_dir_is_keyed_by_builder_source_and_libraries(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    h = hashlib.sha256(Path(testing.__file__).read_bytes() + Path(testing.tiny_tokenizers.__file__).read_bytes())
    for dist in ("transformers", "diffusers", "tokenizers", "sentencepiece"):
        h.update(f"|{dist}={metadata.version(dist)}".encode())
    assert testing.default_tiny_dir() == tmp_path / "vidcli" / "tiny-models" / h.hexdigest()[:16]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert testing.default_tiny_dir().parent == tmp_path / "home" / ".cache" / "vidcli" / "tiny-models"


@pytest.mark.parametrize("module", ["models", "tokenizers"])
def test_builder_key_changes_with_each_builder_source(module, monkeypatch):
    """An edit to the builders or to the tokenizers they train names a new cache generation."""
    edited = Path(testing.__file__ if module == "models" else testing.tiny_tokenizers.__file__)
    before = testing.builder_key()
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read(self) + (b"\n# edited" if self == edited else b""))
    assert testing.builder_key() != before


def test_cli_builds_the_chosen_subset(tmp_path, capsys):
    assert kit_cli(["tiny-models", str(tmp_path), "--only", "llm"]) == 0
    assert capsys.readouterr().out == f"llm\t{tmp_path / 'llm'}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["llm"]
    with pytest.raises(SystemExit) as exit_info:
        kit_cli(["tiny-models", str(tmp_path), "--only", "llm,gpt"])
    assert exit_info.value.code == 2


@pytest.mark.server
def test_llm_is_served_by_transformers_serve(transformers_server):
    """The documented command line: greedy replies over HTTP equal the in-process ones."""
    import json
    import urllib.request

    from vidcli.backends.base import Sampling
    from vidcli.backends.hf import HFChatModel

    base_url, model_path = transformers_server
    questions = ["Is the dog red?", "Describe the camera motion."]
    served = []
    for question in questions:
        body = {"model": model_path, "max_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": question}]}
        request = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        served.append(answer["choices"][0]["message"]["content"])
    local = HFChatModel(model_path, device="cpu").generate(
        [[{"role": "user", "content": q}] for q in questions], Sampling(max_tokens=6))
    assert served == [r.text for r in local] and all(served)
