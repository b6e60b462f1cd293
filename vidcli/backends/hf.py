"""A local transformers model as a :class:`~vidcli.backends.base.ChatModel` (``hf:PATH_OR_ID``).

Two kinds of checkpoint, told apart by their config:

- a causal LM (``AutoModelForCausalLM`` + its tokenizer's chat template), text only;
- an image-text-to-text model such as Qwen2.5-VL (``AutoModelForImageTextToText`` +
  ``AutoProcessor``), which reads the image and video parts of a conversation.

Conversations are answered in batches of ``batch_size``: prompts are left-padded so that
every row's new tokens start at the same column, and the attention mask hides the
padding, so a batched greedy reply equals the reply to the conversation alone.
Only the :class:`Sampling` fields steer decoding (the checkpoint's own sampling defaults,
such as top-k or a repetition penalty, are not applied), so ``hf:`` and ``openai:``
backends given the same Sampling mean the same thing.
"""
from __future__ import annotations

import gc
from typing import Any

from vidcli.backends.base import Conversation, Reply, Sampling
from vidcli.errors import InputError

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def _is_decoded(media: Any, *, video: bool) -> bool:
    """An in-memory image (PIL or HxW[xC] array), or a video (list of images or TxHxWxC array)."""
    import numpy as np
    from PIL import Image

    if video:
        if isinstance(media, np.ndarray):
            return media.ndim == 4 and media.shape[0] > 0
        return isinstance(media, (list, tuple)) and len(media) > 0 and all(
            _is_decoded(frame, video=False) for frame in media)
    return isinstance(media, Image.Image) or (isinstance(media, np.ndarray) and media.ndim in (2, 3))


def _parts(conversation: Conversation) -> list[dict]:
    """The content parts of all messages, in order (a string content is no part)."""
    return [part for m in conversation if not isinstance(m.get("content"), str) for part in m.get("content") or []]


class HFChatModel:
    """Chat with a local transformers checkpoint; loaded on first use, once."""

    def __init__(
        self,
        path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        trust_remote_code: bool = False,
    ) -> None:
        if dtype not in _DTYPES:
            raise InputError(f"hf:{path}: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise InputError(f"hf:{path}: batch size must be at least 1, got {batch_size}")
        self.spec = f"hf:{path}"
        self.path = str(path)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.trust_remote_code = trust_remote_code
        self._model = None
        self._processor = None  # a tokenizer for a causal LM, a processor for a VLM
        self._vision = False
        self._model_type = ""

    # -- loading -------------------------------------------------------------------

    def _load(self) -> None:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        remote = self.trust_remote_code
        try:
            config = AutoConfig.from_pretrained(self.path, trust_remote_code=remote)
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.spec}: cannot load the model config: {exc}") from None
        kind = self._model_type = config.model_type
        auto_map = getattr(config, "auto_map", None) or {}  # remote-code models name their classes here
        if kind in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "AutoModelForImageTextToText" in auto_map:
            self._vision, model_class = True, AutoModelForImageTextToText
        elif kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "AutoModelForCausalLM" in auto_map:
            self._vision, model_class = False, AutoModelForCausalLM
        else:
            raise InputError(
                f"{self.spec}: model type {kind!r} is neither a causal LM nor an "
                "image-text-to-text model, so it cannot chat"
            )
        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        try:
            model = model_class.from_pretrained(self.path, config=config, dtype=dtype, trust_remote_code=remote)
            if self._vision:
                processor = AutoProcessor.from_pretrained(self.path, trust_remote_code=remote)
                tokenizer = processor.tokenizer
            else:
                processor = tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=remote)
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.spec}: cannot load the model: {exc}") from None
        tokenizer.padding_side = "left"  # new tokens must start at the same column in every row
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model = model.to(device).eval()
        self._processor = processor

    def _tokenizer(self):
        return self._processor.tokenizer if self._vision else self._processor

    # -- generation ----------------------------------------------------------------

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[Reply]:
        """Answer every conversation in order; one this model cannot read gets an error Reply."""
        if self._model is None:
            self._load()
        replies: list[Reply | None] = [None] * len(conversations)
        ready: list[tuple[int, Conversation]] = []
        for i, conversation in enumerate(conversations):
            problem = self._unreadable(conversation)
            if problem:
                replies[i] = Reply(text=None, error=f"{self.spec}: {problem}")
            else:
                ready.append((i, self._prepare(conversation)))
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start:start + self.batch_size]
            for (i, _), reply in zip(chunk, self._answer([c for _, c in chunk], sampling)):
                replies[i] = reply
        return replies

    def _answer(self, conversations: list[Conversation], sampling: Sampling) -> list[Reply]:
        from jinja2 import TemplateError

        try:
            return [Reply(text=text) for text in self._generate_batch(conversations, sampling)]
        except (TemplateError, ValueError) as exc:  # the chat template or processor refused an input
            if len(conversations) == 1:
                return [Reply(text=None, error=f"{self.spec}: {exc}")]
            # Answer one by one, so only the conversation at fault gets the error.
            return [reply for c in conversations for reply in self._answer([c], sampling)]

    def _unreadable(self, conversation: Conversation) -> str | None:
        """Why this model cannot read the conversation, or None."""
        for part in _parts(conversation):
            kind = part.get("type")
            if kind == "text":
                continue
            if kind not in ("image", "video"):
                return f"unsupported content part type {kind!r}"
            if not self._vision:
                return (f"{self._model_type} is a text-only model and cannot read the {kind} in "
                        "this conversation; use a vision-language model")
            media = part.get(kind)
            if not _is_decoded(media, video=kind == "video"):
                # Never hand anything else on: the processor would open a string as a path or URL.
                what = "a video part must hold frames" if kind == "video" else "an image part must hold pixels"
                return f"{what} (PIL images or numpy arrays), got {type(media).__name__}"
        return None

    def _prepare(self, conversation: Conversation) -> Conversation:
        """Text-only models get plain-string contents, joined as ``transformers serve`` joins them."""
        if self._vision:
            return conversation
        return [
            {**m, "content": m["content"] if isinstance(m.get("content"), str)
             else " ".join(p["text"] for p in m.get("content") or [])}
            for m in conversation
        ]

    def _encode(self, conversations: list[Conversation]) -> dict[str, Any]:
        common = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
        if not self._vision:
            return self._processor.apply_chat_template(conversations, padding=True, **common)
        # Frames arrive decoded, so the processor cannot know their rate; it sets the temporal
        # positions (mrope), so pass it on. Nested per conversation, in order of appearance.
        metadata = [
            [{"total_num_frames": len(p["video"]), "fps": p.get("fps"),
              "frames_indices": list(range(len(p["video"])))}
             for p in _parts(conv) if p.get("type") == "video"]
            for conv in conversations
        ]
        processor_kwargs: dict[str, Any] = {"padding": True}
        if any(metadata):
            processor_kwargs["video_metadata"] = metadata
        return self._processor.apply_chat_template(conversations, processor_kwargs=processor_kwargs, **common)

    def _generate_batch(self, conversations: list[Conversation], sampling: Sampling) -> list[str]:
        import torch

        inputs = self._encode(conversations).to(self._model.device)
        tokenizer = self._tokenizer()
        eos = self._model.generation_config.eos_token_id
        options = dict(
            max_new_tokens=sampling.max_tokens,
            eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            repetition_penalty=1.0,
        )
        if sampling.temperature == 0:
            options.update(do_sample=False)
        else:
            # top_k=0 turns off the checkpoint's top-k: neither Sampling nor the OpenAI protocol has one.
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.random.fork_rng(devices=[self._model.device] if self._model.device.type == "cuda" else []):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            with torch.inference_mode():
                output = self._model.generate(**inputs, **options)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def close(self) -> None:
        """Free the model (and GPU memory); a later call to generate loads it again."""
        on_cuda = self._model is not None and self._model.device.type == "cuda"
        self._model = None
        self._processor = None
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
