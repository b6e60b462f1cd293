"""HFChatModel on tiny Qwen2 and Qwen2.5-VL checkpoints, checked against plain model.generate."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vidcli.backends.base import ChatModel, Sampling
from vidcli.backends.hf import HFChatModel
from vidcli.errors import InputError
from vidcli.testing import build_tiny_models

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GREEDY = Sampling(max_tokens=6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny"), ["llm", "vlm"])


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def picture(seed: int, height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


TEXT_CHATS = [
    ask("Is the dog red?"),
    ask("Describe the camera motion of a long shot where a white horse runs along the river bank."),
    [{"role": "system", "content": "Answer yes or no."}, ask("Is the car blue?")[0]],
    ask("hi"),
    [{"role": "user", "content": [{"type": "text", "text": "The cat sits"}, {"type": "text", "text": "on the mat."}]}],
]


def vision_chats() -> list[list[dict]]:
    frames = [picture(10 + i, 60, 80) for i in range(6)]
    return [
        [{"role": "user", "content": [{"type": "image", "image": picture(0, 60, 80)},
                                      {"type": "text", "text": "What color is the car?"}]}],
        [{"role": "user", "content": [{"type": "image", "image": picture(1, 100, 70)},  # more image tokens
                                      {"type": "text", "text": "Is there a dog?"}]}],
        [{"role": "user", "content": [{"type": "video", "video": frames, "fps": 2.0},
                                      {"type": "text", "text": "Does the camera move?"}]}],
        ask("Describe a sunny park."),
        [{"role": "user", "content": [{"type": "video", "video": np.stack([np.asarray(f) for f in frames[:4]]),
                                       "fps": 8.0}, {"type": "text", "text": "What moves?"}]}],
    ]


def plain_llm_generate(path, conversation, **options) -> str:
    """The library's own path, one conversation at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    flat = [{**m, "content": m["content"] if isinstance(m["content"], str)
             else " ".join(p["text"] for p in m["content"])}
            for m in conversation]
    enc = tok.apply_chat_template(flat, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = model.generate(**enc, **options)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def plain_vlm_generate(path, conversation, **options) -> str:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    videos = [p for m in conversation if not isinstance(m["content"], str)
              for p in m["content"] if p["type"] == "video"]
    kwargs = {}
    if videos:
        kwargs["processor_kwargs"] = {"video_metadata": [
            {"total_num_frames": len(v["video"]), "fps": v["fps"], "frames_indices": list(range(len(v["video"])))}
            for v in videos]}
    enc = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt", **kwargs)
    out = model.generate(**enc, **options)
    return processor.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def texts(replies) -> list[str]:
    assert all(r.ok for r in replies), [r.error for r in replies]
    return [r.text for r in replies]


def test_llm_batched_greedy_equals_single_and_plain_generate(tiny):
    batched = HFChatModel(str(tiny["llm"]), device="cpu", batch_size=8)
    assert isinstance(batched, ChatModel) and batched.spec == f"hf:{tiny['llm']}"
    together = texts(batched.generate(TEXT_CHATS, GREEDY))
    alone = texts(HFChatModel(str(tiny["llm"]), device="cpu", batch_size=1).generate(TEXT_CHATS, GREEDY))
    in_pairs = texts(HFChatModel(str(tiny["llm"]), device="cpu", batch_size=2).generate(TEXT_CHATS, GREEDY))
    plain = [plain_llm_generate(tiny["llm"], c, do_sample=False, max_new_tokens=6) for c in TEXT_CHATS]
    assert together == alone == in_pairs == plain
    assert len(set(together)) > 2 and all(t.strip() for t in together)  # replies depend on the prompt


def test_vlm_batched_greedy_equals_single_and_plain_generate(tiny):
    chats = vision_chats()
    together = texts(HFChatModel(str(tiny["vlm"]), device="cpu", batch_size=8).generate(chats, GREEDY))
    alone = texts(HFChatModel(str(tiny["vlm"]), device="cpu", batch_size=1).generate(chats, GREEDY))
    plain = [plain_vlm_generate(tiny["vlm"], c, do_sample=False, max_new_tokens=6) for c in chats]
    assert together == alone == plain
    assert len(set(together)) > 2


def test_vlm_passes_the_frame_rate_on(tiny):
    model = HFChatModel(str(tiny["vlm"]), device="cpu")
    model.generate([ask("hi")], Sampling(max_tokens=1))  # loads the model
    encoded = model._encode([vision_chats()[2], vision_chats()[4]])
    # Qwen2.5-VL dates each pair of frames: temporal_patch_size / fps seconds.
    assert encoded["second_per_grid_ts"].tolist() == [2 / 2.0, 2 / 8.0]


def test_sampling_is_seeded_and_matches_plain_sampling(tiny):
    model = HFChatModel(str(tiny["llm"]), device="cpu")
    sampling = Sampling(temperature=0.9, top_p=0.95, max_tokens=8, seed=11)
    state = torch.random.get_rng_state()
    first = texts(model.generate(TEXT_CHATS[:1], sampling))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert texts(model.generate(TEXT_CHATS[:1], sampling)) == first
    others = {texts(model.generate(TEXT_CHATS[:1], Sampling(temperature=0.9, top_p=0.95, max_tokens=8, seed=s)))[0]
              for s in (12, 13, 14)}
    assert others - {first[0]}  # another seed, another draw
    torch.manual_seed(11)
    plain = plain_llm_generate(tiny["llm"], TEXT_CHATS[0], do_sample=True, temperature=0.9, top_p=0.95, top_k=0,
                               max_new_tokens=8)
    assert first == [plain]
    batch = texts(model.generate(TEXT_CHATS, sampling))
    assert texts(model.generate(TEXT_CHATS, sampling)) == batch


def test_media_sent_to_a_text_only_model_is_a_clear_error(tiny):
    model = HFChatModel(str(tiny["llm"]), device="cpu")
    with_image = [{"role": "user", "content": [{"type": "image", "image": picture(0, 32, 32)},
                                               {"type": "text", "text": "What is this?"}]}]
    replies = model.generate([TEXT_CHATS[0], with_image, TEXT_CHATS[1]], GREEDY)
    assert not replies[1].ok
    assert replies[1].error == (f"hf:{tiny['llm']}: qwen2 is a text-only model and cannot read the image in "
                                "this conversation; use a vision-language model")
    assert texts([replies[0], replies[2]]) == texts(model.generate([TEXT_CHATS[0], TEXT_CHATS[1]], GREEDY))


def test_vlm_refuses_media_that_is_not_decoded(tiny, tmp_path):
    model = HFChatModel(str(tiny["vlm"]), device="cpu")
    path = tmp_path / "cat.png"
    picture(0, 32, 32).save(path)
    chats = [[{"role": "user", "content": [{"type": "image", "image": str(path)}]}],
             [{"role": "user", "content": [{"type": "video", "video": []}]}],
             [{"role": "user", "content": [{"type": "audio", "audio": b""}]}]]
    errors = [r.error for r in model.generate(chats, GREEDY)]
    assert errors == [f"hf:{tiny['vlm']}: an image part must hold pixels (PIL images or numpy arrays), got str",
                      f"hf:{tiny['vlm']}: a video part must hold frames (PIL images or numpy arrays), got list",
                      f"hf:{tiny['vlm']}: unsupported content part type 'audio'"]


def test_a_conversation_the_template_refuses_fails_alone(tiny, tmp_path):
    strict = tmp_path / "strict-llm"
    shutil.copytree(tiny["llm"], strict)
    template = (strict / "chat_template.jinja").read_text()
    refusing = ("{%- if messages[-1]['role'] != 'user' -%}"
                "{{- raise_exception('last turn must be the user') -}}{%- endif -%}")
    (strict / "chat_template.jinja").write_text(refusing + template)
    model = HFChatModel(str(strict), device="cpu", batch_size=8)
    bad = TEXT_CHATS[0] + [{"role": "assistant", "content": "No."}]
    replies = model.generate([TEXT_CHATS[0], bad, TEXT_CHATS[1]], GREEDY)
    assert replies[1].error == f"hf:{strict}: last turn must be the user"
    assert texts([replies[0], replies[2]]) == texts(model.generate([TEXT_CHATS[0], TEXT_CHATS[1]], GREEDY))


def test_loads_lazily_once_and_close_frees(tiny, tmp_path):
    missing = HFChatModel(str(tmp_path / "nowhere"))  # nothing is read before the first call
    with pytest.raises(InputError, match=rf"^hf:{tmp_path / 'nowhere'}: cannot load the model config"):
        missing.generate([ask("hi")], GREEDY)
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(InputError, match="model type 'vit' is neither a causal LM nor an image-text-to-text model"):
        HFChatModel(str(tmp_path / "vit")).generate([ask("hi")], GREEDY)
    with pytest.raises(InputError, match="dtype must be one of"):
        HFChatModel(str(tiny["llm"]), dtype="float8")

    model = HFChatModel(str(tiny["llm"]), device="cpu", dtype="float32")
    assert model._model is None
    first = model.generate([ask("hi")], GREEDY)
    loaded = model._model
    assert model.generate([ask("hi")], GREEDY) == first and model._model is loaded
    model.close()
    assert model._model is None
    assert model.generate([ask("hi")], GREEDY) == first  # loads again after close
    assert model.generate([], GREEDY) == []
