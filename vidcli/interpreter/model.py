"""The ReaDe interpreter: an image-text-to-text model plus the camera encoder.

Backbones: any transformers image-text-to-text model whose processor has a chat
template — Qwen2-VL, Qwen2.5-VL and the Qwen2.5-Omni thinker (the one that also hears
audio) are the tested ones. A full Qwen2.5-Omni checkpoint loads as its thinker (the
talker, which speaks, is not needed for text out).

**Camera tokens.** The tokenizer gets :data:`CAMERA_PLACEHOLDER` as a special token; each
trajectory's placeholder is repeated ``num_tokens`` times in the prompt. A forward hook
on the LLM's input-embedding module replaces the embeddings at those positions with
the camera encoder's output. Everything else (rope / mrope positions, image and video
scattering, the KV cache in ``generate``) keeps working from ``input_ids``
unchanged. Without a camera encoder a trajectory is given as its motion description.

**Batches.** Prompts are tokenized by the processor's own ``apply_chat_template``, left
padded for generation, so a batched greedy output equals the one-at-a-time output and
plain ``model.generate`` on the same inputs. With targets, each row is the prompt's
tokens followed by the tokenized target and the chat template's end-of-turn token(s),
right padded; labels are -100 everywhere but on those assistant tokens.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vidcli.errors import InputError
from vidcli.interpreter.camera_encoder import CameraEncoder, CameraEncoderConfig
from vidcli.interpreter.messages import CAMERA_PLACEHOLDER, Request, audio_problem, camera_descriptions, expand_cameras

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, ProcessorMixin

CAMERA_DIR = "camera_encoder"
IGNORE = -100
_DTYPES = ("auto", "float32", "float16", "bfloat16")
_SENTINEL = "\u2063vidcli-turn\u2063"


class _CameraInjection:
    """Forward hook on the input embeddings: camera placeholders get the pending features.

    Features are consumed by the first call that holds placeholders (the prompt); a
    later call (a decoding step that produced the placeholder token) is left alone.
    """

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id
        self.pending: torch.Tensor | None = None

    def __call__(self, module, args, output):
        if self.pending is None or not args:
            return None
        mask = args[0] == self.token_id
        count = int(mask.sum())
        if count == 0:
            return None
        features, self.pending = self.pending, None
        if count != features.shape[0]:
            raise RuntimeError(f"{count} camera placeholder tokens but {features.shape[0]} camera features")
        mask = mask.unsqueeze(-1).expand_as(output)
        return output.masked_scatter(mask, features.to(device=output.device, dtype=output.dtype))


def _model_class(config):
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    kind = config.model_type
    if kind == "qwen2_5_omni":
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration
    auto_map = getattr(config, "auto_map", None) or {}
    if kind in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or "AutoModelForImageTextToText" in auto_map:
        return AutoModelForImageTextToText
    return None


def _load_backbone(path: str, *, dtype: str, load_in_4bit: bool, device: str, trust_remote_code: bool):
    from transformers import AutoConfig

    from vidcli import weights

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot load the model config: {exc}") from None
    model_class = _model_class(config)
    if config.model_type == "qwen2_5_omni" and not weights.reading_weights():
        config = config.thinker_config  # what the thinker class is built from (loading finds it itself)
    if model_class is None:
        raise InputError(f"{path}: model type {config.model_type!r} is not an image-text-to-text model "
                         "(the interpreter needs one such as Qwen2-VL, Qwen2.5-VL or Qwen2.5-Omni)")
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if load_in_4bit and weights.reading_weights():
        if not torch.cuda.is_available():
            raise InputError("4-bit loading (QLoRA) needs a CUDA device")
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": device if device != "cpu" else "cuda"}
    if dtype == "auto" and not weights.reading_weights():  # the checkpoint's own dtype, from its config
        dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
        dtype = dtype.removeprefix("torch.")
    try:
        model = weights.load_model(model_class, path, config=config,
                                   dtype=dtype if dtype == "auto" else getattr(torch, dtype), **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot load the model: {exc}") from None
    return model if "quantization_config" in kwargs else model.to(weights.placement(device))


def _add_camera_token(processor, model) -> None:
    """Make :data:`CAMERA_PLACEHOLDER` a special token; grow the embeddings only if it has no row.

    New rows are set to the mean embedding, so a model reloaded with the same base gets
    the same row every time (its value never reaches the LLM: the hook overwrites it).
    """
    from tokenizers import AddedToken

    tokenizer = processor.tokenizer
    if CAMERA_PLACEHOLDER not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(CAMERA_PLACEHOLDER, special=True, normalized=False)], special_tokens=True)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) <= rows:
        return
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m}.values():
            layer.weight[rows:] = layer.weight[:rows].mean(dim=0, keepdim=True)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class Interpreter:
    """An image-text-to-text model, its processor and an optional camera encoder."""

    def __init__(self, model: "PreTrainedModel", processor: "ProcessorMixin | None",
                 camera_encoder: CameraEncoder | None = None, *, name: str | None = None) -> None:
        """``processor`` is None only for a model built to be sized (:mod:`vidcli.weights`) from a
        folder without tokenizer files: it runs batches built elsewhere but cannot encode requests,
        and its camera placeholder is the embedding table's last row (no tokenizer uses it)."""
        self.model = model
        self.processor = processor
        self.camera_encoder = camera_encoder
        self.name = name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        if processor is not None:
            _add_camera_token(processor, model)
            self.camera_token_id = processor.tokenizer.convert_tokens_to_ids(CAMERA_PLACEHOLDER)
            # User text must not write control or media tokens: the processor would count them as media.
            decoder = processor.tokenizer.added_tokens_decoder
            self._special_texts = sorted({t.content for t in decoder.values() if t.special}, key=len, reverse=True)
        else:
            self.camera_token_id = model.get_input_embeddings().num_embeddings - 1
            self._special_texts = []
        self._injection = _CameraInjection(self.camera_token_id)
        self._hook = model.get_input_embeddings().register_forward_hook(self._injection)
        self._end_of_turn: list[int] | None = None
        if camera_encoder is not None and camera_encoder.config.out_hidden_size != self.hidden_size:
            raise InputError(f"the camera encoder projects to {camera_encoder.config.out_hidden_size} "
                             f"but {self.name} has hidden size {self.hidden_size}")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        with_camera: bool | None = None,
        load_in_4bit: bool = False,
        trust_remote_code: bool = False,
        camera_config: CameraEncoderConfig | None = None,
    ) -> "Interpreter":
        """Load a plain HF model folder/id or a vidcli checkpoint.

        A checkpoint holds full weights, or a peft adapter whose ``adapter_config.json``
        names the base model; the processor is read from ``path`` when it holds one, else
        from the base. The camera encoder is ``PATH/camera_encoder/`` when present (unless
        ``with_camera=False``); ``with_camera=True`` creates a fresh one when none is saved,
        sized by ``camera_config`` (default: :meth:`CameraEncoderConfig.for_language_model`).
        """
        from transformers import AutoProcessor

        from vidcli import weights

        if dtype not in _DTYPES:
            raise InputError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        folder = Path(path)
        adapter_file = folder / "adapter_config.json"
        base = path
        if adapter_file.is_file():
            try:
                base = json.loads(adapter_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(f"cannot read the adapter's base model: {exc}", file=str(adapter_file)) from None
        model = _load_backbone(base, dtype=dtype, load_in_4bit=load_in_4bit, device=device,
                               trust_remote_code=trust_remote_code)
        has_processor = any((folder / f).is_file() for f in ("processor_config.json", "preprocessor_config.json",
                                                               "tokenizer_config.json"))
        source = path if base == path or has_processor else base
        if weights.optional_files() and not weights.has_tokenizer(source):
            processor = None  # a configuration-only folder: sizes need no tokenizer
        else:
            try:
                processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise InputError(f"{source}: cannot load the processor: {exc}") from None
        if base != path:
            from peft import PeftConfig, PeftModel

            if processor is not None:
                _add_camera_token(processor, model)  # before the adapter, so the shapes match training
            if weights.reading_weights():
                model = PeftModel.from_pretrained(model, path)
            else:  # the adapter's shapes from its config
                model = PeftModel(model, PeftConfig.from_pretrained(path))
        encoder = None
        camera_dir = folder / CAMERA_DIR
        if with_camera is not False and camera_dir.is_dir():
            encoder = CameraEncoder.from_pretrained(camera_dir, device=weights.placement(device))
        elif with_camera:
            hidden = model.get_input_embeddings().embedding_dim
            config = camera_config or CameraEncoderConfig.for_language_model(hidden)
            encoder = CameraEncoder(config).to(weights.placement(device)).eval()
        model.eval()
        return cls(model, processor, encoder, name=str(path))

    # ------------------------------------------------------------------ facts

    @property
    def device(self) -> torch.device:
        """Where batches go: the device of the model's first parameter (the input embeddings)."""
        return next(iter(self.model.parameters())).device

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", type(self.model).__name__))

    @property
    def takes_audio(self) -> bool:
        """The processor extracts audio features and the model has an audio token to put them at."""
        return (getattr(self.processor, "feature_extractor", None) is not None
                and getattr(self.model.config, "audio_token_id", None) is not None)

    def camera_tokens(self) -> int:
        """How many prompt tokens one trajectory takes (0 without a camera encoder)."""
        if self.camera_encoder is None:
            return 0
        return self.camera_encoder.num_tokens(*self.camera_encoder.config.image_size)

    def unsupported(self, request: Request) -> str | None:
        """Why this model cannot take ``request`` (a condition it cannot read, or an
        instruction that spells one of its special tokens), or None."""
        written = next((t for t in self._special_texts if t in request.instruction), None)
        if written:
            return f"the instruction contains the special token {written}, which only the prompt builder may write"
        if self.takes_audio:
            return None
        return audio_problem(request, f"{self.name} ({self.model_type})")

    # ------------------------------------------------------------------ batches

    def end_of_turn_ids(self) -> list[int]:
        """The tokens the chat template closes an assistant turn with (up to its first special token)."""
        if self._end_of_turn is None:
            tokenizer = self.processor.tokenizer
            chat = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]}]
            text = self.processor.apply_chat_template(chat, tokenize=False)
            tail = tokenizer.encode(text.split(_SENTINEL, 1)[1], add_special_tokens=False) if _SENTINEL in text else []
            special = set(tokenizer.all_special_ids)
            stop = next((i for i, t in enumerate(tail) if t in special), None)
            self._end_of_turn = tail[:stop + 1] if stop is not None else [tokenizer.eos_token_id]
        return list(self._end_of_turn)

    def _conversation(self, request: Request) -> list[dict]:
        problem = self.unsupported(request)
        if problem:
            raise InputError(problem, record_id=request.id)
        if not request.cameras:
            return request.conversation
        if self.camera_encoder is None:
            return expand_cameras(request.conversation, camera_descriptions(request))
        return expand_cameras(request.conversation, [CAMERA_PLACEHOLDER * self.camera_tokens()] * len(request.cameras))

    def encode(self, requests: list[Request], targets: list[str] | None = None, *,
               max_prompt_tokens: int | None = None) -> dict:
        """A model-ready batch on the model's device (see the module docstring).

        Keys: the processor's (``input_ids``, ``attention_mask``, pixel values, grids …),
        ``camera_maps`` (trajectories × 96 × H × W Plücker stacks) when there are camera
        tokens, and ``labels`` with targets. InputError for a condition the model cannot
        read, a prompt over ``max_prompt_tokens`` (naming the record and both lengths), or
        a request the processor refuses.
        """
        from jinja2 import TemplateError

        from vidcli.camera import plucker_stack

        if not requests:
            raise ValueError("encode needs at least one request")
        if targets is not None and len(targets) != len(requests):
            raise ValueError(f"{len(targets)} targets for {len(requests)} requests")
        conversations = [self._conversation(r) for r in requests]
        metadata = [[{"total_num_frames": len(p["video"]), "fps": p.get("fps"),
                      "frames_indices": list(range(len(p["video"])))}
                     for m in conv if isinstance(m["content"], list) for p in m["content"] if p["type"] == "video"]
                    for conv in conversations]
        kwargs: dict[str, Any] = {"padding": True, "padding_side": "left"}
        if any(metadata):
            kwargs["video_metadata"] = metadata
        try:
            batch = dict(self.processor.apply_chat_template(
                conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt", processor_kwargs=kwargs))
        except (TemplateError, ValueError) as exc:
            where = requests[0].id if len(requests) == 1 else None
            raise InputError(f"the processor refused the request: {exc}", record_id=where) from None
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        if max_prompt_tokens is not None:
            for request, length in zip(requests, lengths):
                if length > max_prompt_tokens:
                    raise InputError(f"the prompt is {length} tokens long, over the limit of {max_prompt_tokens} "
                                     "(--max-prompt-tokens)", record_id=request.id)
        if targets is not None:
            batch = self._append_targets(batch, lengths, targets)
        cameras = [t for r in requests for t in r.cameras] if self.camera_encoder is not None else []
        if cameras:
            height, width = self.camera_encoder.config.image_size
            frames = self.camera_encoder.config.num_frames
            batch["camera_maps"] = torch.stack([plucker_stack(t, height, width, num_frames=frames) for t in cameras])
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _append_targets(self, batch: dict, lengths: list[int], targets: list[str]) -> dict:
        """Left-padded prompts → right-padded prompt + target + end-of-turn rows, with labels."""
        tokenizer = self.processor.tokenizer
        eot = self.end_of_turn_ids()
        width = batch["input_ids"].shape[1]
        # Per-token tensors (input ids, masks, token types) are rebuilt; per-media ones stay.
        per_token = [k for k, v in batch.items()
                     if isinstance(v, torch.Tensor) and v.shape[:2] == (len(lengths), width)]
        rows: dict[str, list[list[int]]] = {k: [] for k in per_token}
        labels = []
        for i, (length, target) in enumerate(zip(lengths, targets)):
            answer = tokenizer.encode(target, add_special_tokens=False) + eot
            for key in per_token:
                prompt = batch[key][i, width - length:].tolist()
                extra = answer if key == "input_ids" else [1] * len(answer) if key == "attention_mask" \
                    else [0] * len(answer)
                rows[key].append(prompt + extra)
            labels.append([IGNORE] * length + answer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        out = dict(batch)
        for key in per_token:
            out[key] = _pad(rows[key], pad_id if key == "input_ids" else 0)
        out["labels"] = _pad(labels, IGNORE)
        return out

    @contextlib.contextmanager
    def _cameras(self, camera_maps: torch.Tensor | None):
        """Run the camera encoder and let the embedding hook place its tokens in the next forward."""
        if camera_maps is None:
            yield
            return
        if self.camera_encoder is None:
            raise ValueError("the batch has camera maps but the interpreter has no camera encoder")
        features = self.camera_encoder(camera_maps)
        self._injection.pending = features.reshape(-1, features.shape[-1])
        try:
            yield
        finally:
            unused, self._injection.pending = self._injection.pending, None
        if unused is not None:
            raise RuntimeError("the camera features were not injected: no camera placeholder reached the embeddings")

    def forward(self, batch: dict, **kwargs):
        """The model's forward pass on an :meth:`encode` batch, camera tokens injected
        (``labels`` are not passed on: the model's own loss is not used)."""
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "camera_maps")}
        with self._cameras(batch.get("camera_maps")):
            return self.model(**inputs, **kwargs)

    def loss(self, batch: dict, reduction: str = "mean") -> torch.Tensor:
        """Next-token negative log-likelihood over the label tokens (mean, or ``"sum"``)."""
        labels = batch["labels"][:, 1:]
        logits = self.forward(batch).logits[:, :-1]
        keep = labels != IGNORE
        if not keep.any():
            raise ValueError("the batch has no label tokens")
        return F.cross_entropy(logits[keep].float(), labels[keep], reduction=reduction)

    # ------------------------------------------------------------------ generation

    def generate(self, requests: list[Request], *, max_new_tokens: int = 768, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None, batch_size: int = 8,
                 max_prompt_tokens: int | None = None) -> list[str]:
        """Decoded new text for each request, ``batch_size`` requests per ``model.generate``.

        Greedy when ``temperature`` is 0; otherwise sampling with ``temperature`` and
        ``top_p`` only (the checkpoint's top-k and repetition penalty are turned off), from
        ``seed`` when given. The caller's RNG state is left as it was.
        """
        tokenizer = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        options: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens, eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            repetition_penalty=1.0)
        if temperature == 0:
            options.update(do_sample=False)
        else:
            options.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        texts: list[str] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(requests), batch_size):
                batch = self.encode(requests[start:start + batch_size], max_prompt_tokens=max_prompt_tokens)
                maps = batch.pop("camera_maps", None)
                with self._cameras(maps):
                    output = self.model.generate(**batch, **options)
                new = output[:, batch["input_ids"].shape[1]:]
                texts += tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts

    # ------------------------------------------------------------------ training

    def save_pretrained(self, outdir: Path) -> None:
        """Model (or peft adapter) as safetensors, the processor, and ``camera_encoder/`` if any."""
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(outdir)
        self.processor.save_pretrained(outdir)
        if self.camera_encoder is not None:
            self.camera_encoder.save_pretrained(outdir / CAMERA_DIR)

    def trainable_parameters(self, stage: str) -> list:
        """The parameters a stage trains; requires_grad is set on these and cleared elsewhere.

        ``"camera"``: the camera encoder only. ``"cot"``: the model's weights, or only the
        adapter's with a peft model, plus the camera encoder when there is one.
        """
        if stage not in ("camera", "cot"):
            raise ValueError(f"unknown stage {stage!r}; choose camera or cot")
        if stage == "camera" and self.camera_encoder is None:
            raise ValueError("stage 'camera' needs a camera encoder")
        chosen: list = []
        if stage == "cot":
            prefix = getattr(getattr(self.model, "base_model", None), "prefix", None)
            peft = hasattr(self.model, "peft_config") and prefix is not None
            for name, param in self.model.named_parameters():
                if not peft or prefix in name or "modules_to_save" in name:
                    chosen.append(param)
        chosen_ids = {id(p) for p in chosen}
        for param in self.model.parameters():
            param.requires_grad_(id(param) in chosen_ids)
        if self.camera_encoder is not None:
            chosen += list(self.camera_encoder.parameters())
            for param in self.camera_encoder.parameters():
                param.requires_grad_(True)
        return chosen
