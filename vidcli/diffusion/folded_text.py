"""Cross-attention to a padded prompt with its padding folded into one key (``--fold-text-padding``).

Wan's pipeline pads every prompt's embeddings with zero rows to 512 tokens, and its DiT attends
to all of them. The zero rows are alike: the text projection maps each to the same vector, and
cross-attention gives each the same key and value (text tokens carry no position). Attention
to n identical keys is attention to one of them whose score is raised by log n, so a prompt of
L tokens can be attended to as L tokens plus one, weighted by its padding's count, with the
same result up to the dtype's rounding (in bfloat16 the offset itself rounds, which moves the
padding's weight by at most 1.6%). Where the video has few tokens — the toy world's 80 — the 512
text tokens are most of the DiT's work; at Wan2.1-1.3B's real sizes a few percent of its arithmetic
(about 3% at 288×512×49, 1% at 480×832×81).

:func:`fold_text_padding` installs it on a ``WanTransformer3DModel`` without touching its
modules or weights (hooks and attention processors only: the state dict, LoRA adapters and
saved checkpoints are unchanged). The DiT then takes the same (B, N, D) embeddings as before:

1. before the DiT runs, each prompt's rows after its last non-zero one are its padding; the
   embeddings are cut to the batch's longest prompt plus one row, and one channel is appended
   that marks the rows standing for padding (1) and the prompt's own (0);
2. the text projection maps the other channels and passes the mark on;
3. each block's cross-attention reads the mark, gives every padding row of a prompt the score
   offset log(padding count / padding rows kept), and attends.

The mark travels inside the tensor the blocks receive, so a block recomputed in backward
(gradient checkpointing) sees the same offsets as its forward did.
"""
from __future__ import annotations

import functools

import torch

from vidcli.errors import InputError


def fold(embeds: torch.Tensor) -> torch.Tensor:
    """(B, N, D) zero-padded embeddings → (B, K, D + 1): cut to the longest prompt's length plus one
    row (at most N), the last channel marking padding rows with 1."""
    batch, length, _ = embeds.shape
    positions = torch.arange(1, length + 1, device=embeds.device)
    own = torch.where(embeds.ne(0).any(-1), positions, 0).amax(-1)  # each prompt's length: its last non-zero row
    kept = min(length, int(own.max()) + 1)
    mark = (torch.arange(kept, device=embeds.device) >= own[:, None]).to(embeds.dtype)
    return torch.cat([embeds[:, :kept], mark[..., None]], -1)


def score_offsets(mark: torch.Tensor, length: int) -> torch.Tensor:
    """(B, K) padding marks of prompts padded to ``length`` → (B, 1, 1, K) offsets added to the attention
    scores: log(padding count / padding rows kept) on padding rows, 0 elsewhere (in float64; the caller
    casts them to its scores' dtype)."""
    mark = mark.double()
    rows = mark.sum(-1, keepdim=True)  # padding rows kept
    count = length - (mark.shape[-1] - rows)  # padding rows the prompt had
    offset = torch.where(mark > 0, torch.log(count.clamp(min=1) / rows.clamp(min=1)), 0.0)
    return offset[:, None, None, :]


class _Projection:
    """Hooks on the DiT's text projection: map the embedding channels, pass the padding mark on."""

    def __init__(self) -> None:
        self.mark: torch.Tensor | None = None

    def before(self, module, args):
        (caption,) = args
        self.mark = caption[..., -1:]
        return (caption[..., :-1],)

    def after(self, module, args, output):
        mark, self.mark = self.mark, None
        return torch.cat([output, mark.to(output.dtype)], -1)


@functools.cache
def _processor_class():
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    class FoldedPaddingAttnProcessor(WanAttnProcessor):
        """Wan's cross-attention over folded text: the mark channel split off and turned into score offsets."""

        def __init__(self, length: int) -> None:
            super().__init__()
            self.length = length

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            text, mark = encoder_hidden_states[..., :-1], encoder_hidden_states[..., -1]
            offsets = score_offsets(mark, self.length).to(hidden_states.dtype)
            return super().__call__(attn, hidden_states, text, offsets, rotary_emb)

    return FoldedPaddingAttnProcessor


def fold_text_padding(dit: torch.nn.Module, length: int) -> None:
    """Let ``dit`` (a text-to-video ``WanTransformer3DModel``) attend to prompts zero-padded to ``length``
    tokens with their padding folded (module docstring). Done once; a second call changes nothing."""
    if getattr(dit, "_vidcli_folded_text", None) is not None:
        return
    if any(block.attn2.add_k_proj is not None for block in dit.blocks):
        raise InputError("--fold-text-padding works on text-to-video Wan DiTs; this one also attends to an image")
    processor = _processor_class()
    projection = _Projection()
    text_projection = dit.condition_embedder.text_embedder

    def fold_input(module, args, kwargs):
        if "encoder_hidden_states" in kwargs:
            embeds = kwargs["encoder_hidden_states"]
        else:
            embeds = args[2]
        if embeds.shape[1] != length:
            raise ValueError(f"text embeddings of {embeds.shape[1]} tokens; this DiT folds prompts padded to {length}")
        if "encoder_hidden_states" in kwargs:
            kwargs = {**kwargs, "encoder_hidden_states": fold(embeds)}
        else:
            args = (*args[:2], fold(embeds), *args[3:])
        return args, kwargs

    dit._vidcli_folded_text = [
        dit.register_forward_pre_hook(fold_input, with_kwargs=True),
        text_projection.register_forward_pre_hook(projection.before),
        text_projection.register_forward_hook(projection.after),
    ]
    for block in dit.blocks:
        block.attn2.set_processor(processor(length))
