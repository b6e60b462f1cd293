"""The tiny models' tokenizers, chat templates and chat generation defaults.

Tokenizers are trained on the spot on :func:`training_corpus`, a small English corpus
about videos, cameras, objects and colours: byte-level BPE with Qwen2's pre-tokenizer and
special tokens for the chat models (:func:`qwen_tokenizer`, :func:`omni_tokenizer`), a
SentencePiece Unigram one for the T5-style text encoders (:func:`unigram_tokenizer`).
The builders of :mod:`vidcli.testing.models` use them, as does the toy world's critic.
"""
from __future__ import annotations

import tempfile

# Qwen's special tokens, appended after the trained vocabulary as in the real tokenizer.
QWEN_SPECIAL_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# Renders text parts only; any other part is refused, since a text model cannot see it.
LLM_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- else -%}{{- raise_exception('this model reads text only, got a ' + part['type'] + ' part') -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Same layout as the Qwen2.5-VL template: default system turn, one vision block per
# image or video part (the processor expands each pad token to the patch count).
VLM_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] in ('image', 'image_url') -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] in ('video', 'video_url') -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def training_corpus() -> list[str]:
    """A few hundred short English sentences in the domain the tests talk about."""
    things = ["dog", "cat", "red car", "small boat", "white horse", "young woman", "old man",
              "child", "robot", "blue bird", "yellow ball", "train", "bicycle", "green tree"]
    actions = ["walks across", "runs along", "jumps over", "sits on", "rolls down",
               "flies above", "drives through", "waits near", "turns around in", "stops at"]
    places = ["the street", "a sandy beach", "the kitchen", "a dark forest", "a sunny park",
              "the city at night", "a snowy field", "the river bank", "a busy market", "the room"]
    cameras = ["The camera pans left.", "The camera pans right.", "The camera zooms in slowly.",
               "The camera zooms out.", "The camera tilts up.", "The camera tilts down.",
               "The camera stays static.", "The camera moves forward.", "The camera orbits around the subject.",
               "A handheld shot follows the subject.", "A wide shot shows the whole scene.",
               "A close-up shot shows the face."]
    colours = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
               "white", "gray", "golden"]
    styles = ["cinematic", "realistic", "anime", "watercolor", "documentary", "slow motion",
              "black and white", "vintage film", "bright and colorful", "soft lighting"]
    lines: list[str] = []
    for i, thing in enumerate(things):
        for j, action in enumerate(actions):
            place = places[(i + j) % len(places)]
            lines.append(f"A {thing} {action} {place}. {cameras[(i * 3 + j) % len(cameras)]}")
    for i, colour in enumerate(colours):
        thing = things[i % len(things)]
        lines.append(f"The {thing} is {colour}. Is the {thing} {colour}? Yes.")
        lines.append(f"Is the {thing} {colours[(i + 5) % len(colours)]}? No, it is {colour}.")
        lines.append(f"The video is {styles[i % len(styles)]}, with {colour} light on {places[i % len(places)]}.")
    for i, style in enumerate(styles):
        lines.append(f"Style: {style}. Background: {places[i]}. Main object: a {things[i]}.")
        lines.append(f'{{"answer": "yes", "explanation": "the {things[i]} is visible in frame {i}"}}')
        lines.append(f'{{"answer": "no", "explanation": "there is no {things[-i - 1]} in the video"}}')
        lines.append(
            f'{{"dense": "a {things[i]} in {places[i]}", "main_object": "{things[i]}", '
            f'"background": "{places[i]}", "movement": "{actions[i]}", "style": "{style}", '
            f'"camera": "{cameras[i].lower().rstrip(".")}"}}'
        )
    lines += ["Answer with yes or no.", "Describe the video in one sentence.",
              "What is the main object? What color is it? Where is it?", "Think step by step.",
              "The first frame shows the start; the last frame shows the end.",
              "Generate a video of the scene. Keep the identity of the person.",
              "Numbers: 0 1 2 3 4 5 6 7 8 9 10 16 24 30 60 100.", "[1, 2, 3], {\"a\": true, \"b\": null}"]
    return lines


def qwen_tokenizer():
    """Byte-level BPE trained with Qwen2's own pre-tokenizer, special tokens appended."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    base = Qwen2Tokenizer()  # empty vocabulary, but Qwen2's normalizer and pre-tokenizer
    tok = base.train_new_from_iterator([training_corpus()], vocab_size=700, show_progress=False)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                   special_tokens=True)
    # As in the instruct checkpoints: a reply ends at <|im_end|>, padding uses <|endoftext|>.
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def unigram_tokenizer(vocab_size: int):
    """A T5-style Unigram tokenizer (``<pad>``=0, ``</s>``=1, ``<unk>``=2), as UMT5 and SigLIP use.

    The pieces are learned by SentencePiece, which made the real T5 vocabularies and,
    single-threaded, learns the same scores on every run (the Unigram trainer of
    ``tokenizers`` orders tied pieces differently from run to run).
    """
    import io

    import sentencepiece as spm
    from transformers import T5Tokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus()), model_writer=proto, vocab_size=vocab_size,
        hard_vocab_limit=False, model_type="unigram", normalization_rule_name="identity",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def padded_vocab(n: int, multiple: int = 64) -> int:
    """Round the embedding size up, as real checkpoints do, leaving room past the last id."""
    return (n + multiple - 1) // multiple * multiple


def chat_generation_config(tok):
    """Generation defaults shaped like a Qwen instruct checkpoint's.

    They sample (so ``transformers serve`` honours a request's temperature; a request
    with temperature 0 turns sampling off) and stop at either end token.
    """
    from transformers import GenerationConfig

    eot, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    return GenerationConfig(bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot,
                            do_sample=True, temperature=0.7, top_p=0.8, top_k=20, max_new_tokens=64)


# The multimodal tokens of Qwen2.5-Omni, by the attribute names its processor reads.
OMNI_SPECIAL_TOKENS = {
    "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

# Like VLM_CHAT_TEMPLATE, with Qwen2.5-Omni's block tokens and an audio block.
OMNI_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_bos|><|IMAGE|><|vision_eos|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_bos|><|VIDEO|><|vision_eos|>' -}}"
    "{%- elif part['type'] == 'audio' -%}{{- '<|audio_bos|><|AUDIO|><|audio_eos|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def omni_tokenizer():
    """The Qwen tokenizer plus Omni's named multimodal tokens (``tokenizer.audio_token`` …)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    tok = qwen_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in OMNI_SPECIAL_TOKENS.values()],
                   special_tokens=True)
    # Named model-specific tokens are set when a tokenizer is created, so make it anew.
    with tempfile.TemporaryDirectory() as folder:
        tok.save_pretrained(folder)
        return Qwen2Tokenizer.from_pretrained(folder, extra_special_tokens=OMNI_SPECIAL_TOKENS)
