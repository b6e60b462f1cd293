"""The GRPO objective (SPEC §5) as plain tensor functions, independent of any trainer.

A GRPO step samples ``G`` completions per prompt, scores them, turns the rewards into
group-relative advantages (:func:`group_advantages`), and minimises the clipped
surrogate with a per-token KL penalty against a frozen reference (:func:`grpo_loss`)
over the log-probabilities of the sampled tokens (:func:`token_logprobs`).

Tensor layout, as everywhere in the GRPO recipe: a batch holds ``B = P * G``
completions, the ``G`` completions of one prompt consecutive; per-token tensors are
``(B, C)`` over the completion tokens, ``C`` the padded completion length, with a
``(B, C)`` mask that is 1 on real completion tokens and 0 on padding.

These functions match the arithmetic of TRL's ``GRPOTrainer`` (``loss_type="grpo"``,
token-level importance sampling, group reward scaling); ``tests/train/test_grpo_loss.py``
runs TRL's own code next to them to keep it that way.
"""
from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")


def scored_rows(judged: torch.Tensor, group_size: int) -> torch.Tensor:
    """The completions that take part in a step: judged ones in a group with at least two judged.

    ``judged`` is ``(B,)`` bool, False where the reward could not be computed (the judge
    failed after its retries). Such a completion is no evidence either way; a group left
    with fewer than two has nothing to compare and takes no part at all.
    """
    groups = judged.view(-1, group_size)
    enough = groups.sum(dim=1, keepdim=True) >= 2
    return (groups & enough).reshape(-1)


def group_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-4,
                     scale: bool = True, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Group-relative advantages ``A_i = (R_i - mean_j R_j) / (std_j R_j + eps)``.

    ``rewards`` is ``(B,)`` with each prompt's ``group_size`` completions consecutive.
    The mean and standard deviation are taken within each group. The standard deviation
    is the sample one (Bessel's correction, divisor ``G - 1``) and ``eps`` defaults to
    1e-4: both as TRL's ``GRPOTrainer`` computes them, so a policy trained here sees the
    same advantage scale as one trained there. A group whose rewards are all equal gets
    zero advantages (``0 / eps``): it carries no preference between its completions.
    With ``scale=False`` the advantages are only centred (Dr. GRPO's choice; TRL's
    ``scale_rewards="none"``). A group of one has no spread and gets zero advantages.

    ``valid`` (``(B,)`` bool, see :func:`scored_rows`) leaves rows out: their rewards
    may be anything (NaN included), the mean and deviation are taken over the valid
    rows of each group, and the others get advantage 0. A group with fewer than two
    valid rows gets zeros.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be one-dimensional, got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    if not torch.isfinite(rewards[valid]).all():
        raise ValueError("rewards must be finite")
    keep = valid.view(-1, group_size).to(rewards.dtype)
    groups = torch.where(valid, rewards, torch.zeros_like(rewards)).view(-1, group_size)
    count = keep.sum(dim=1, keepdim=True)
    mean = groups.sum(dim=1, keepdim=True) / count.clamp(min=1)
    centred = (groups - mean) * keep
    if scale:
        # Sample standard deviation over the valid rows (Bessel: divisor count - 1).
        std = ((centred ** 2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
        centred = centred / (std + eps)
    return (centred * (count >= 2)).reshape(-1)


def per_token_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate ``exp(ref - logp) - (ref - logp) - 1`` (the "k3" estimator).

    It is an unbiased estimate of KL(π_θ || π_ref) for tokens sampled from π_θ and,
    unlike the plain log-ratio, never negative, so the penalty cannot reward drifting.
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, epsilon_low: float = 0.2,
              epsilon_high: float | None = None, beta: float = 0.001, loss_type: str = "grpo",
              max_completion_length: int | None = None, ratio_weighted_kl: bool = False,
              row_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped GRPO surrogate with a KL penalty, and its diagnostics.

    Per token: ``ℓ_t = min(r·A, clip(r, 1-ε_low, 1+ε_high)·A) - β·KL_t`` with
    ``r = exp(logp - old_logp)``. The loss is ``-`` the average of ``ℓ_t`` over real
    tokens, averaged as ``loss_type`` says:

    - ``"grpo"`` (SPEC §5, default): mean over each completion's tokens, then mean over
      completions, so every completion weighs the same whatever its length;
    - ``"bnpo"``: mean over all real tokens of the batch;
    - ``"dr_grpo"``: sum over all real tokens divided by ``B * max_completion_length``
      (default: the padded width ``C``), a constant that does not favour short answers.

    Args:
        logp: ``(B, C)`` log-probabilities of the sampled tokens under the policy being
            trained; gradients flow through it.
        old_logp: ``(B, C)`` log-probabilities under the policy that sampled them. ``None``
            means the sampling policy is the current one (one update per rollout): the
            ratio is then 1 in value but still carries the policy gradient.
        ref_logp: ``(B, C)`` reference log-probabilities; required when ``beta != 0``.
        advantages: ``(B,)`` one advantage per completion, or ``(B, C)`` per token.
        mask: ``(B, C)`` 1 for real completion tokens, 0 for padding.
        epsilon_low, epsilon_high: the clip range ``[1-ε_low, 1+ε_high]``;
            ``epsilon_high=None`` means symmetric.
        beta: weight of the KL penalty.
        ratio_weighted_kl: multiply ``KL_t`` by ``r`` (TRL's ``use_bias_correction_kl``,
            on by default there): the k3 estimate assumes tokens drawn from π_θ, and
            ``r`` re-weights tokens drawn from π_old. Off by default, as SPEC §5 writes
            the objective; note that even at ``r = 1`` it changes the gradient, since
            ``r`` carries ``∂logp``.
        row_mask: ``(B,)`` bool, False for completions that take no part (their reward
            could not be computed, :func:`scored_rows`): they get no loss and do not
            count in any average, as if they were not in the batch. With no row left
            the loss is 0 (still connected to ``logp``, so backward works).

    Returns:
        ``(loss, metrics)``. ``metrics`` holds detached scalar tensors, each a mean over
        the batch's real tokens: ``kl`` (the penalised estimate, when ``ref_logp`` is
        given), ``ratio_mean``, and the fractions of tokens whose clipped branch was
        taken (so their policy gradient is zero): ``clip_ratio/low_mean``
        (``r < 1-ε_low`` with ``A < 0``), ``clip_ratio/high_mean`` (``r > 1+ε_high`` with ``A > 0``) and
        ``clip_ratio/region_mean`` (either).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose from {LOSS_TYPES}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("a KL penalty (beta != 0) needs reference log-probabilities")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    rows = torch.ones(mask.size(0), dtype=mask.dtype, device=mask.device) if row_mask is None \
        else row_mask.to(mask.dtype)
    mask = mask * rows.unsqueeze(1)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # one advantage per completion, broadcast over tokens
    if old_logp is None:
        old_logp = logp.detach()

    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = torch.min(ratio * advantages, clipped * advantages)
    kl = per_token_kl(logp, ref_logp) if ref_logp is not None else None
    if kl is not None and ratio_weighted_kl:
        kl = kl * ratio
    if beta != 0.0:
        per_token = per_token - beta * kl
    per_token_loss = -per_token * mask

    if loss_type == "grpo":
        loss = (per_token_loss.sum(-1) / mask.sum(-1).clamp(min=1.0)).sum() / rows.sum().clamp(min=1.0)
    elif loss_type == "bnpo":
        loss = per_token_loss.sum() / mask.sum().clamp(min=1.0)
    else:
        width = max_completion_length if max_completion_length is not None else mask.size(1)
        loss = per_token_loss.sum() / (rows.sum().clamp(min=1.0) * width)

    with torch.no_grad():
        tokens = mask.sum().clamp(min=1.0)

        def token_mean(x: torch.Tensor) -> torch.Tensor:
            return (x.to(mask.dtype) * mask).sum() / tokens

        low = (ratio < 1 - epsilon_low) & (advantages < 0)
        high = (ratio > 1 + epsilon_high) & (advantages > 0)
        metrics = {"ratio_mean": token_mean(ratio), "clip_ratio/low_mean": token_mean(low),
                   "clip_ratio/high_mean": token_mean(high), "clip_ratio/region_mean": token_mean(low | high)}
        if kl is not None:
            metrics["kl"] = token_mean(kl)
    return loss, metrics


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities of the completion tokens, ``(B, C)``, in float32.

    ``input_ids`` is ``(B, L)``: prompt then completion, the completion being its last
    ``C = completion_mask.size(1)`` positions. ``logits`` is ``(B, L', V)``, the model's
    output for ``input_ids``: either all ``L`` positions, or only the last ``C + 1``
    (transformers' ``logits_to_keep=C + 1``). The logit at position ``p`` predicts the
    token at ``p + 1``, so the completion's tokens are scored by positions
    ``L-C-1 .. L-2``. Logits are divided by ``temperature`` first, so the log-probs are
    those of the distribution the completions were sampled from.

    Memory: a ``log_softmax`` over the whole ``(B, C, V)`` block would materialise a
    second copy of it (in float32 for half-precision logits); here one row at a time
    is upcast and reduced with ``logsumexp``, which also keeps bf16 logits accurate.
    Padding positions (mask 0) get log-probability 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    width = completion_mask.size(1)
    if logits.size(1) < width + 1 or input_ids.size(1) < width + 1:
        raise ValueError(f"scoring {width} completion tokens needs logits for at least {width + 1} positions "
                         f"and a prompt; got logits {tuple(logits.shape)}, input_ids {tuple(input_ids.shape)}")
    scores = logits[:, -width - 1:-1]
    targets = input_ids[:, -width:]
    rows = []
    for row_scores, row_targets in zip(scores, targets):
        row = row_scores.float() / temperature
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    return torch.stack(rows).masked_fill(completion_mask == 0, 0.0)
