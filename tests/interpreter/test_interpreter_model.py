"""The interpreter runtime on tiny Qwen2.5-VL, Qwen2-VL and Qwen2.5-Omni thinker checkpoints."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vidcli.errors import InputError
from vidcli.interpreter.camera_encoder import CameraEncoder, CameraEncoderConfig
from vidcli.interpreter.messages import CAMERA_PLACEHOLDER, request_from_record
from vidcli.interpreter.model import Interpreter
from vidcli.testing import ensure_tiny_models

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MEDIA = Path(__file__).resolve().parents[2] / "examples" / "media"
SMALL_CAMERA = CameraEncoderConfig(hidden_size=32, depth=1, num_heads=2, image_size=(32, 48), out_hidden_size=64)
RECORDS = [
    {"id": "ids", "instruction": "make them wave", "conditions": [{"type": "identity", "path": "identity_a.png"},
                                                                  {"type": "identity", "path": "identity_b.png"}]},
    {"id": "vid", "instruction": "add a red kite", "conditions": [{"type": "video", "path": "ball.mp4"}]},
    {"id": "text", "instruction": "a dog runs along the river bank"},
    {"id": "dp", "instruction": "a dancer", "conditions": [{"type": "depth", "path": "depth.mp4"},
                                                           {"type": "pose", "path": "pose.mp4"},
                                                           {"type": "image", "path": "identity_b.png"}]},
]
CAMERA_RECORDS = [
    {"id": "cam2", "instruction": "a street", "conditions": [{"type": "camera", "path": "camera_dolly_pan.txt"},
                                                             {"type": "camera", "path": "camera_orbit.json"}]},
    {"id": "camvid", "instruction": "a ball", "conditions": [{"type": "video", "path": "ball.mp4"},
                                                             {"type": "camera", "path": "camera_orbit.json"}]},
]


@pytest.fixture(scope="module")
def tiny():
    return ensure_tiny_models(["vlm", "qwen2vl", "omni"])


@pytest.fixture(scope="module")
def vlm(tiny):
    return Interpreter.from_pretrained(str(tiny["vlm"]), device="cpu")


def requests_of(records, frames=4):
    return [request_from_record(r, MEDIA, video_frames=frames) for r in records]


@functools.lru_cache(maxsize=None)
def plain_model(path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path).eval()


@pytest.fixture(scope="module", autouse=True)
def _release_plain_models():
    """The cached reference models go with this module: later tests count the models alive
    (tests/train/test_grpo.py's LoRA reference test)."""
    yield
    plain_model.cache_clear()


def plain_generate(path, request, max_new_tokens) -> str:
    """The library's documented path, one conversation at a time, no vidcli code."""
    processor, model = plain_model(path)
    videos = [p for p in request.conversation[1]["content"] if p["type"] == "video"]
    kwargs = {"video_metadata": [{"total_num_frames": len(v["video"]), "fps": v["fps"],
                                  "frames_indices": list(range(len(v["video"])))} for v in videos]} if videos else {}
    enc = processor.apply_chat_template(request.conversation, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt", processor_kwargs=kwargs)
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens)
    return processor.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def with_camera(interpreter: Interpreter, seed: int = 0) -> Interpreter:
    torch.manual_seed(seed)
    return Interpreter(interpreter.model, interpreter.processor, CameraEncoder(SMALL_CAMERA).eval(),
                       name=interpreter.name)


def test_batched_greedy_equals_single_and_plain_generate(vlm, tiny):
    requests = requests_of(RECORDS)
    together = vlm.generate(requests, max_new_tokens=6, batch_size=4)
    assert vlm.generate(requests, max_new_tokens=6, batch_size=3) == together
    assert [vlm.generate([r], max_new_tokens=6)[0] for r in requests] == together
    assert [plain_generate(tiny["vlm"], r, 6) for r in requests] == together
    assert len(set(together)) > 1  # the replies depend on the inputs


def test_camera_tokens_replace_the_placeholders(vlm):
    interpreter = with_camera(vlm)
    assert interpreter.camera_tokens() == 6 == interpreter.camera_encoder.num_tokens(32, 48)  # (32/16)·(48/16)
    requests = requests_of(CAMERA_RECORDS)
    batch = interpreter.encode(requests)
    per_row = (batch["input_ids"] == interpreter.camera_token_id).sum(dim=1).tolist()
    assert per_row == [2 * 6, 6]  # encoder.num_tokens per trajectory
    assert batch["camera_maps"].shape == (3, 96, 32, 48)
    single = interpreter.encode(requests[:1])  # unpadded, so the by-hand forward needs no position ids
    with torch.no_grad():
        logits = interpreter.forward(single).logits
        # The same forward by hand: embeddings with the encoder's tokens written in.
        embeds = interpreter.model.get_input_embeddings()(single["input_ids"]).clone()
        mask = single["input_ids"] == interpreter.camera_token_id
        embeds[mask] = interpreter.camera_encoder(single["camera_maps"]).reshape(-1, 64)
        by_hand = interpreter.model(inputs_embeds=embeds, attention_mask=single["attention_mask"]).logits
        assert torch.allclose(logits, by_hand, atol=1e-5)
        # Zeroed camera features: logits before the first camera token stay, after it they change.
        zeroed = with_camera(vlm)
        zeroed.camera_encoder.load_state_dict(interpreter.camera_encoder.state_dict())
        for p in zeroed.camera_encoder.projector[-1].parameters():
            p.zero_()
        assert zeroed.camera_encoder(single["camera_maps"]).abs().max() == 0
        other = zeroed.forward(single).logits
    first = int(mask[0].nonzero()[0])
    assert torch.equal(logits[0, :first], other[0, :first])
    assert (logits[0, first:] - other[0, first:]).abs().amax(dim=-1).min() > 1e-3
    batched = interpreter.generate(requests, max_new_tokens=5)
    assert batched == [interpreter.generate([r], max_new_tokens=5)[0] for r in requests]


def test_without_a_camera_encoder_a_trajectory_is_its_motion_description(vlm):
    (request,) = requests_of(CAMERA_RECORDS[:1])
    text = vlm.processor.apply_chat_template(vlm._conversation(request), add_generation_prompt=True)
    assert "Camera trajectory 1: strong dolly in, moderate pan left\n" in text and CAMERA_PLACEHOLDER not in text
    assert "camera_maps" not in vlm.encode([request])


def test_encode_with_targets_labels_only_the_assistant_turn(vlm):
    requests = requests_of(RECORDS[:3])
    targets = ["<think>a wave</think><answer>1. Dense caption: two people wave</answer>", "kite", "a dog"]
    batch = vlm.encode(requests, targets)
    tokenizer = vlm.processor.tokenizer
    im_end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    assert vlm.end_of_turn_ids() == [im_end]
    width = batch["input_ids"].shape[1]
    for i, (request, target) in enumerate(zip(requests, targets)):
        videos = [p for p in request.conversation[1]["content"] if p["type"] == "video"]
        metadata = [{"total_num_frames": 4, "fps": v["fps"], "frames_indices": [0, 1, 2, 3]} for v in videos]
        prompt = vlm.processor.apply_chat_template(
            request.conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
            processor_kwargs={"video_metadata": metadata})["input_ids"]
        prompt = prompt[0] if isinstance(prompt[0], list) else prompt
        answer = tokenizer(target, add_special_tokens=False)["input_ids"] + [im_end]
        fill = width - len(prompt) - len(answer)
        assert batch["input_ids"][i].tolist() == prompt + answer + [pad] * fill
        assert batch["labels"][i].tolist() == [-100] * len(prompt) + answer + [-100] * fill
        assert batch["attention_mask"][i].tolist() == [1] * (len(prompt) + len(answer)) + [0] * fill
        # Token by token: every prompt token is ignored, every assistant token is its own label.
        for position, (token, label) in enumerate(zip(batch["input_ids"][i].tolist(), batch["labels"][i].tolist())):
            if position < len(prompt) or position >= len(prompt) + len(answer):
                assert label == -100
            else:
                assert label == token
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape
    assert batch["pixel_values"].shape[0] > 0 and batch["pixel_values_videos"].shape[0] > 0


def test_loss_is_the_mean_nll_of_the_assistant_tokens(vlm):
    requests = requests_of(RECORDS[:2])
    batch = vlm.encode(requests, ["<think>x</think>", "a red kite flies"])
    with torch.no_grad():
        loss = vlm.loss(batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = vlm.model(**inputs).logits.float()
        logp = F.log_softmax(logits[:, :-1], dim=-1)
        labels = batch["labels"][:, 1:]
        nll = [-logp[b, t, labels[b, t]] for b in range(2) for t in range(labels.shape[1]) if labels[b, t] != -100]
        assert loss.item() == pytest.approx(torch.stack(nll).mean().item(), rel=1e-5)
        assert vlm.loss(batch, reduction="sum").item() == pytest.approx(torch.stack(nll).sum().item(), rel=1e-5)
        # transformers' own causal-LM loss on the same labels agrees
        assert vlm.model(**inputs, labels=batch["labels"]).loss.item() == pytest.approx(loss.item(), rel=1e-5)


def test_camera_stage_trains_only_the_encoder(vlm):
    interpreter = with_camera(vlm, seed=1)
    params = interpreter.trainable_parameters("camera")
    assert {id(p) for p in params} == {id(p) for p in interpreter.camera_encoder.parameters()}
    assert not any(p.requires_grad for p in interpreter.model.parameters())
    batch = interpreter.encode(requests_of(CAMERA_RECORDS[:1]), ["strong dolly in"])
    interpreter.loss(batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in interpreter.camera_encoder.parameters()
               if p.requires_grad and p.dim() > 1)
    cot = interpreter.trainable_parameters("cot")
    assert len(cot) == len(list(interpreter.model.parameters())) + len(params)
    for p in interpreter.model.parameters():  # leave the shared fixture as it was
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="needs a camera encoder"):
        vlm.trainable_parameters("camera")


def test_prompt_limit_and_unreadable_audio_are_input_errors(vlm):
    requests = requests_of(RECORDS[:2])
    lengths = vlm.encode(requests)["attention_mask"].sum(dim=1).tolist()
    with pytest.raises(InputError) as err:
        vlm.encode(requests, max_prompt_tokens=min(lengths))
    longer = requests[lengths.index(max(lengths))].id
    assert max(lengths) > min(lengths)
    assert str(err.value) == (f"id={longer}: the prompt is {max(lengths)} tokens long, over the limit of "
                              f"{min(lengths)} (--max-prompt-tokens)")
    (heard,) = requests_of([{"id": "a", "instruction": "x", "conditions": [{"type": "audio", "path": "tone.wav"}]}])
    problem = vlm.unsupported(heard)
    assert problem == (f"the audio condition (tone.wav) needs a model that takes audio input; {vlm.name} "
                       "(qwen2_5_vl) takes text, images and video only (use a Qwen2.5-Omni model for audio)")
    with pytest.raises(InputError, match="the audio condition"):
        vlm.generate([heard])


def test_instructions_cannot_write_special_tokens(vlm):
    (request,) = requests_of([{"id": "sneaky", "instruction": "show <|image_pad|> twice"}])
    assert vlm.unsupported(request) == ("the instruction contains the special token <|image_pad|>, "
                                        "which only the prompt builder may write")
    with pytest.raises(InputError, match="id=sneaky: the instruction contains the special token <.image_pad.>"):
        vlm.encode([request])


def test_a_full_vocabulary_grows_by_the_camera_token(tiny):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny["vlm"])
    model = AutoModelForImageTextToText.from_pretrained(tiny["vlm"])
    model.resize_token_embeddings(len(processor.tokenizer))  # no spare row left
    old = model.get_input_embeddings().weight[:len(processor.tokenizer)].detach().clone()
    interpreter = Interpreter(model, processor)
    weight = model.get_input_embeddings().weight
    assert interpreter.camera_token_id == len(old) and weight.shape[0] == len(old) + 1
    assert torch.equal(weight[:-1], old) and torch.allclose(weight[-1], old.mean(dim=0))
    assert model.get_output_embeddings().weight is weight  # still tied
    with pytest.raises(InputError, match="the camera encoder projects to 32 but .* has hidden size 64"):
        Interpreter(model, processor, CameraEncoder(CameraEncoderConfig(hidden_size=32, depth=1, num_heads=2,
                                                                        image_size=(32, 48), out_hidden_size=32)))


def test_omni_thinker_hears_audio(tiny):
    omni = Interpreter.from_pretrained(str(tiny["omni"]), device="cpu")
    assert omni.takes_audio and omni.model_type == "qwen2_5_omni_thinker"
    song = [{"type": "audio", "path": "tone.wav"}, {"type": "identity", "path": "identity_a.png"}]
    records = [{"id": "song", "instruction": "a concert", "conditions": song},
               {"id": "quiet", "instruction": "a quiet room"}]
    requests = requests_of(records)
    together = omni.generate(requests, max_new_tokens=5)
    assert together == [omni.generate([r], max_new_tokens=5)[0] for r in requests]
    assert together[0] == plain_generate(tiny["omni"], requests[0], 5)
    batch = omni.encode(requests[:1])
    audio_id = omni.model.config.audio_token_id
    assert batch["input_features"].shape[:2] == (1, 128) and (batch["input_ids"] == audio_id).sum() == 50  # 2 s
    assert torch.isfinite(omni.loss(omni.encode(requests, ["loud", "soft"])))


def test_a_full_omni_checkpoint_loads_as_its_thinker(tiny, tmp_path):
    """Qwen2.5-Omni checkpoints hold thinker and talker; the interpreter takes the thinker."""
    from transformers import AutoConfig, Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    thinker = Interpreter.from_pretrained(str(tiny["omni"]), device="cpu")
    config = Qwen2_5OmniConfig(thinker_config=AutoConfig.from_pretrained(tiny["omni"]).to_dict(),
                               enable_audio_output=False)
    full = Qwen2_5OmniForConditionalGeneration(config)
    full.thinker.load_state_dict(thinker.model.state_dict())
    full.save_pretrained(tmp_path / "omni-full")
    thinker.processor.save_pretrained(tmp_path / "omni-full")
    assert AutoConfig.from_pretrained(tmp_path / "omni-full").model_type == "qwen2_5_omni"
    loaded = Interpreter.from_pretrained(str(tmp_path / "omni-full"), device="cpu")
    assert loaded.model_type == "qwen2_5_omni_thinker" and loaded.takes_audio
    requests = requests_of([{"id": "song", "instruction": "a concert",
                             "conditions": [{"type": "audio", "path": "tone.wav"}]}])
    assert loaded.generate(requests, max_new_tokens=4) == thinker.generate(requests, max_new_tokens=4)


def test_qwen2_vl_batches_like_single(tiny):
    qwen2 = Interpreter.from_pretrained(str(tiny["qwen2vl"]), device="cpu")
    assert qwen2.model_type == "qwen2_vl" and not qwen2.takes_audio
    requests = requests_of(RECORDS[:2])
    together = qwen2.generate(requests, max_new_tokens=5)
    assert together == [qwen2.generate([r], max_new_tokens=5)[0] for r in requests]
    assert together == [plain_generate(tiny["qwen2vl"], r, 5) for r in requests]


def test_checkpoints_round_trip(vlm, tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    interpreter = with_camera(vlm, seed=2)
    batch = interpreter.encode(requests_of(CAMERA_RECORDS[1:]))
    with torch.no_grad():
        expected = interpreter.forward(batch).logits
    interpreter.save_pretrained(tmp_path / "full")
    assert (tmp_path / "full" / "camera_encoder" / "camera_encoder.safetensors").is_file()
    assert (tmp_path / "full" / "model.safetensors").is_file()
    loaded = Interpreter.from_pretrained(str(tmp_path / "full"), device="cpu")
    assert loaded.camera_encoder is not None and loaded.camera_token_id == interpreter.camera_token_id
    with torch.no_grad():
        assert torch.equal(loaded.forward(loaded.encode(requests_of(CAMERA_RECORDS[1:]))).logits, expected)
    assert Interpreter.from_pretrained(str(tmp_path / "full"), device="cpu", with_camera=False).camera_encoder is None
    fresh = Interpreter.from_pretrained(str(tiny["vlm"]), device="cpu", with_camera=True)
    assert fresh.camera_encoder.config == CameraEncoderConfig.for_language_model(64)  # sized with the tiny LLM

    # A LoRA adapter checkpoint: adapter weights + processor + camera encoder, base named in adapter_config.json.
    base = Interpreter.from_pretrained(str(tiny["vlm"]), device="cpu")
    torch.manual_seed(3)
    lora_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base.model, lora_config)
    adapted = Interpreter(peft_model, base.processor, interpreter.camera_encoder, name="adapted")
    lora = adapted.trainable_parameters("cot")
    assert len(lora) == len([n for n, _ in peft_model.named_parameters() if "lora_" in n]) + len(
        list(interpreter.camera_encoder.parameters()))
    with torch.no_grad():
        adapted_logits = adapted.forward(batch).logits
    assert not torch.allclose(adapted_logits, expected)
    adapted.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    reloaded = Interpreter.from_pretrained(str(tmp_path / "lora"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(reloaded.forward(batch).logits, adapted_logits, atol=1e-5)
