"""The interpreter start point's untrained base: the kit's tiny Qwen2.5-VL with a tokenizer of its own texts.

The tiny kit's VLM (:func:`vidcli.testing.models.build_vlm`) reads a general test corpus's
byte-level BPE, in which the toy world's fact words are several pieces each ("triangle" is
five) and a chain-of-thought answer runs to ~410 tokens. Fine-tuned on the world's CoT
records, that model wrote nearly the same caption whatever was asked: copying a request's
colour or shape into its answer meant copying a run of pieces across the whole answer.
The interpreter's base keeps the kit's architecture and size (the same config: 2 layers,
64 wide) and learns its tokenizer from what it will read and write — the interpreter's
system prompt, the training requests and their CoT targets, and the kit's corpus — so
that each fact word is one token and an answer ~225 (docs/toyworld.md, "The interpreter
start point"). The weights are drawn afresh at the usual 0.02 scale: the kit's wider draw
exists to make an untrained model's greedy text vary, and this one is trained.
"""
from __future__ import annotations

import json
from pathlib import Path

INIT = 0.02
VOCAB = 1200


def texts(cot: Path) -> list[str]:
    """What the tokenizer is learned on: the kit's corpus and, per CoT record, its prompt as the
    interpreter renders it (system and user message) and its target."""
    from vidcli.prompts import render
    from vidcli.testing import training_corpus

    records = [json.loads(line) for line in cot.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [m["content"] for r in records for m in render("interpreter_system", instruction=r["instruction"])]
    return list(training_corpus()) + prompts + [r["cot"]["target"] for r in records]


def build_base(folder: Path | str, cot: Path | str, *, seed: int) -> None:
    """An untrained interpreter in ``folder``: the kit's VLM config and processor, a tokenizer learned on ``cot``."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vidcli.testing import ensure_tiny_models
    from vidcli.testing.tokenizers import QWEN_SPECIAL_TOKENS, chat_generation_config, padded_vocab
    from vidcli.toyworld.critic import train_tokenizer

    kit = Path(ensure_tiny_models("vlm")["vlm"])
    tok = train_tokenizer(texts(Path(cot)), vocab_size=VOCAB)
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2_5_VLConfig.from_pretrained(kit)
    text = config.text_config
    text.vocab_size, text.bos_token_id, text.pad_token_id, text.eos_token_id = (
        padded_vocab(len(tok)), eot, eot, ids["<|im_end|>"])
    text.initializer_range = config.vision_config.initializer_range = INIT
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = chat_generation_config(tok)
    processor = AutoProcessor.from_pretrained(kit)
    processor.tokenizer = tok
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
