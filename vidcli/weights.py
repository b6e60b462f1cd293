"""Where a model's weights come from: its checkpoint, nowhere, or random numbers at full size.

Every loader in vidcli (the interpreter's backbone, the frozen VLM, the generator
pipelines) builds its models through :func:`load_model`, so the same setup code serves
three purposes:

- **checkpoint** (the default): ``from_pretrained`` on the folder, as a user's run does;
- **no weights** (:func:`without_weights`): every model is built from its configuration
  on PyTorch's meta device — shapes and dtypes without memory or file reads. This is how
  ``--plan`` sizes a run from a folder that holds configuration files only;
- **random weights** (:func:`random_weights`): built from the configuration directly on
  a device with the architecture's own random initialisation — the real-size
  benchmarks' way to run one training step without downloading anything.

Tokenizers, processors and schedulers hold no weights and are always read from files;
loaders treat them as optional when weights are not read (a configuration-only folder
may lack them, see :func:`optional_files`).
"""
from __future__ import annotations

import contextlib
import contextvars
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from vidcli.errors import InputError


@dataclass(frozen=True)
class _Mode:
    kind: str  # "meta" or "random"
    device: str


_MODE: contextvars.ContextVar[_Mode | None] = contextvars.ContextVar("vidcli_weights", default=None)


@contextlib.contextmanager
def without_weights() -> Iterator[None]:
    """Models loaded inside are built from their configs on the meta device."""
    token = _MODE.set(_Mode("meta", "meta"))
    try:
        yield
    finally:
        _MODE.reset(token)


@contextlib.contextmanager
def random_weights(device: str) -> Iterator[None]:
    """Models loaded inside are built from their configs on ``device`` with random weights."""
    token = _MODE.set(_Mode("random", device))
    try:
        yield
    finally:
        _MODE.reset(token)


def reading_weights() -> bool:
    """True when loaders read checkpoints (outside both contexts)."""
    return _MODE.get() is None


def optional_files() -> bool:
    """True when a missing tokenizer or processor may be skipped (weights are not being read)."""
    return _MODE.get() is not None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def has_tokenizer(path: str | Path) -> bool:
    """A local folder with tokenizer files (a hub id counts as having them)."""
    folder = Path(path)
    return not folder.is_dir() or any((folder / name).is_file() for name in TOKENIZER_FILES)


def placement(device: str) -> str:
    """The device models are put on: the caller's, or the meta device without weights."""
    mode = _MODE.get()
    return "meta" if mode is not None and mode.kind == "meta" else device


def _building(mode: _Mode):
    import torch

    # The meta device as the default device, not accelerate's init_empty_weights: under the
    # latter, transformers leaves tied embeddings untied (T5's shared table counted twice).
    return torch.device(mode.device)


def load_model(cls: Any, path: str | Path, *, dtype: Any = None, subfolder: str | None = None,
               config: Any = None, library: str | None = None, **kwargs: Any):
    """``cls.from_pretrained(path, ...)``, or the same architecture built from its config.

    ``cls`` is a transformers or diffusers model class (an Auto class too); ``library``
    says which when it cannot be told from the class. ``config`` is the (transformers)
    config object to build from without weights, when the caller has read or adapted it
    (``from_pretrained`` reads its own). Without weights the extra ``kwargs`` of
    ``from_pretrained`` (quantisation, remote code) are not applied, except
    ``trust_remote_code`` which reading the config needs.
    """
    import torch

    mode = _MODE.get()
    if mode is None:
        if subfolder is not None:
            kwargs["subfolder"] = subfolder
        if dtype is not None:
            kwargs["dtype"] = dtype
        return cls.from_pretrained(path, **kwargs)
    library = library or ("diffusers" if cls.__module__.startswith("diffusers") else "transformers")
    with _building(mode):
        if library == "diffusers":
            model = cls.from_config(cls.load_config(path, subfolder=subfolder))
            if dtype is not None:
                _cast_like_diffusers(model, dtype)
        else:
            if config is None:
                from transformers import AutoConfig

                folder = Path(path) / subfolder if subfolder else path
                config = AutoConfig.from_pretrained(folder, trust_remote_code=kwargs.get("trust_remote_code", False))
            builder = cls.from_config if hasattr(cls, "_model_mapping") else cls._from_config
            model = builder(config, dtype=dtype if dtype is not None else torch.float32)
    return model.eval()


def _cast_like_diffusers(model: Any, dtype: Any) -> None:
    """``dtype`` for every parameter but those diffusers keeps in float32 when it loads in a lower
    precision (the model class's ``_keep_in_fp32_modules``: norms, time embeddings)."""
    import torch

    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, param in model.named_parameters():
        wanted = torch.float32 if dtype != torch.float32 and any(k in name.split(".") for k in keep) else dtype
        param.data = param.data.to(wanted)


def pipeline_components(path: str | Path, *, dtype: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The components of a diffusers pipeline folder built without reading weights.

    Model components are built with :func:`load_model` (``overrides`` replaces some, e.g.
    a VAE already built in its own dtype); schedulers are read from their config;
    tokenizers are read when the folder has them and None otherwise.
    """
    import importlib

    index_file = Path(path) / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a diffusers pipeline folder ({exc})") from None
    components: dict[str, Any] = dict(overrides or {})
    for name, spec in index.items():
        if name.startswith("_") or name in components or not isinstance(spec, list) or spec[0] is None:
            continue
        library, class_name = spec
        cls = getattr(importlib.import_module(library), class_name)
        folder = Path(path) / name
        if (folder / "config.json").is_file() and library in ("diffusers", "transformers") \
                and hasattr(cls, "from_pretrained") and not class_name.endswith("Scheduler"):
            components[name] = load_model(cls, path, dtype=dtype, subfolder=name, library=library)
        elif class_name.endswith("Scheduler"):
            components[name] = cls.from_pretrained(path, subfolder=name)
        else:  # tokenizers and processors: files only, and optional here
            components[name] = cls.from_pretrained(path, subfolder=name) if has_tokenizer(folder) else None
    return components
