"""The GRPO objective: hand-computed values, gradients, and equality with TRL's GRPOTrainer.

The TRL comparisons run TRL's own code: a real ``GRPOTrainer`` over the tiny Qwen2
model generates and scores completions (its advantage arithmetic) and computes the loss
(``GRPOTrainer.compute_loss``, through TRL's fused LM head); ours gets the same inputs.
"""
from __future__ import annotations

import math

import pytest
import torch

from vidcli.train.grpo_loss import group_advantages, grpo_loss, per_token_kl, scored_rows, token_logprobs

A = 1 / math.sqrt(2)  # the advantage magnitude of any untied group of two (sample std)
LN2 = math.log(2)

# ----------------------------------------------------------------------------- advantages


def test_group_advantages_hand_computed():
    # Group of 2: mean 0.5, sample std sqrt(0.5); group of 2: mean 2, std sqrt(2).
    got = group_advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), 2)
    a1, a2 = 0.5 / (math.sqrt(0.5) + 1e-4), 1.0 / (math.sqrt(2) + 1e-4)
    assert got.tolist() == pytest.approx([a1, -a1, a2, -a2], abs=1e-7)
    # Group of 4: mean 0.4375, squared deviations sum 0.546875, sample std sqrt(0.546875 / 3).
    std = math.sqrt(0.546875 / 3)
    got = group_advantages(torch.tensor([0.0, 1.0, 0.5, 0.25, 2.0, 2.0, 2.0, 2.0]), 4)
    expected = [(r - 0.4375) / (std + 1e-4) for r in (0.0, 1.0, 0.5, 0.25)] + [0.0] * 4
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


def test_group_advantages_centre_only_eps_and_errors():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    assert group_advantages(rewards, 2, scale=False).tolist() == [0.5, -0.5, 0.0, 0.0]
    assert group_advantages(rewards, 2, eps=0.0)[:2].tolist() == pytest.approx([A, -A])
    assert group_advantages(rewards, 1).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([1.0, float("nan")]), 2)


def test_unscored_completions_leave_their_group_normalised_over_the_rest():
    # Group 1: the fourth reward could not be computed; the other three (mean 2, sample std
    # 1) make the advantages. Group 2: one scored completion is no comparison at all.
    rewards = torch.tensor([1.0, 2.0, 3.0, float("nan"), 5.0, 0.0, 0.0, 0.0])
    judged = torch.tensor([True, True, True, False, True, False, False, False])
    rows = scored_rows(judged, 4)
    assert rows.tolist() == [True, True, True, False] + [False] * 4
    got = group_advantages(rewards, 4, valid=rows)
    assert got.tolist() == pytest.approx([-1 / (1 + 1e-4), 0.0, 1 / (1 + 1e-4)] + [0.0] * 5, abs=1e-7)
    assert scored_rows(torch.ones(4, dtype=torch.bool), 2).all()
    with pytest.raises(ValueError, match="finite"):
        group_advantages(rewards, 4, valid=torch.ones(8, dtype=torch.bool))  # a NaN among the rows that count


# ----------------------------------------------------------------------------- the loss by hand
# Two prompts, G = 2, three completion tokens, eps = 0.2, beta = 0.1. Rewards [1, 0] and
# [0.2, 0.6] with eps_std = 0 give advantages [+a, -a, -a, +a], a = 1/sqrt(2).
# Ratios r (mask):
#   c0 (+a): 1.5 (clipped: 1.2a), 1.0 (a), 0.5 (unclipped branch for A>0: 0.5a)   mean 0.9a
#   c1 (-a): 0.5 (clipped: -0.8a), 1.5 (unclipped for A<0: -1.5a), pad             mean -1.15a
#   c2 (-a): 1.1 (-1.1a), pad, pad                                                  mean -1.1a
#   c3 (+a): 1, 1, 1                                                                mean a
# ref - logp is zero except ln 2 at c0 t2 and c3 t0 (KL = 2 - ln 2 - 1 = 1 - ln 2) and -ln 2
# at c3 t2 (KL = 0.5 + ln 2 - 1 = ln 2 - 0.5). Per-completion KL means: (1-ln2)/3, 0, 0, 0.5/3.
# loss = -(1/4) * [(0.9 - 1.15 - 1.1 + 1)a - beta((1-ln2)/3 + 0.5/3)]
#      = (0.35a + beta(1.5 - ln2)/3) / 4


def _hand_batch():
    log = math.log
    delta = torch.tensor([[log(1.5), 0.0, log(0.5)], [log(0.5), log(1.5), log(3.0)],
                          [log(1.1), 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    logp = torch.full((4, 3), -1.0, dtype=torch.float64, requires_grad=True)
    old = logp.detach() - delta
    ref = logp.detach() + torch.tensor([[0, 0, LN2], [0, 0, 0], [0, 0, 0], [LN2, 0, -LN2]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.2, 0.6], dtype=torch.float64), 2, eps=0.0)
    return logp, old, ref, adv, mask


def test_hand_computed_loss_metrics_and_normalisations():
    logp, old, ref, adv, mask = _hand_batch()
    assert adv.tolist() == pytest.approx([A, -A, -A, A])
    loss, metrics = grpo_loss(logp, old, ref, adv, mask, epsilon_low=0.2, beta=0.1)
    assert loss.item() == pytest.approx((0.35 * A + 0.1 * (1.5 - LN2) / 3) / 4, abs=1e-12)
    # 9 real tokens; one clipped low (c1 t0), one clipped high (c0 t0).
    assert metrics["clip_ratio/low_mean"].item() == pytest.approx(1 / 9)
    assert metrics["clip_ratio/high_mean"].item() == pytest.approx(1 / 9)
    assert metrics["clip_ratio/region_mean"].item() == pytest.approx(2 / 9)
    assert metrics["ratio_mean"].item() == pytest.approx(9.1 / 9)
    assert metrics["kl"].item() == pytest.approx((1.5 - LN2) / 9)
    # Token sums: policy 2.3a, KL 1.5 - ln 2, over 9 tokens (bnpo) or 4 * 3 slots (dr_grpo).
    token_sum = 2.3 * A - 0.1 * (1.5 - LN2)
    bnpo, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, loss_type="bnpo")
    assert bnpo.item() == pytest.approx(-token_sum / 9, abs=1e-12)
    dr, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, loss_type="dr_grpo")
    assert dr.item() == pytest.approx(-token_sum / 12, abs=1e-12)
    dr_long, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, loss_type="dr_grpo", max_completion_length=6)
    assert dr_long.item() == pytest.approx(-token_sum / 24, abs=1e-12)
    # Ratio-weighted KL: c0 t2 has r = 0.5, so its KL counts half; c3's ratios are 1.
    weighted, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, ratio_weighted_kl=True)
    assert weighted.item() == pytest.approx((0.35 * A + 0.1 * (0.5 * (1 - LN2) + 0.5) / 3) / 4, abs=1e-12)


def test_masked_rows_have_no_loss_and_no_weight():
    logp, old, ref, adv, mask = _hand_batch()
    rows = torch.tensor([True, True, False, False])
    loss, metrics = grpo_loss(logp, old, ref, adv, mask, epsilon_low=0.2, beta=0.1, row_mask=rows)
    # Only c0 (policy mean 0.9a, KL mean (1 - ln 2)/3) and c1 (-1.15a, 0), averaged over two rows.
    assert loss.item() == pytest.approx((0.25 * A + 0.1 * (1 - LN2) / 3) / 2, abs=1e-12)
    assert metrics["kl"].item() == pytest.approx((1 - LN2) / 5)  # over the 5 tokens of c0 and c1
    loss.backward()
    assert logp.grad[2:].abs().sum() == 0 and logp.grad[:2].abs().sum() > 0
    bnpo, _ = grpo_loss(logp, old, ref, adv, mask, beta=0.1, loss_type="bnpo", row_mask=rows)
    assert bnpo.item() == pytest.approx(-(0.9 * 3 - 1.15 * 2) * A / 5 + 0.1 * (1 - LN2) / 5, abs=1e-12)
    nothing = torch.zeros(4, dtype=torch.bool)
    fresh = logp.detach().clone().requires_grad_(True)
    empty, _ = grpo_loss(fresh, old, ref, adv, mask, beta=0.1, row_mask=nothing)
    empty.backward()
    assert empty.item() == 0.0 and torch.count_nonzero(fresh.grad) == 0


def test_gradient_flows_only_through_unclipped_tokens():
    logp, old, ref, adv, mask = _hand_batch()
    beta = 0.1
    loss, _ = grpo_loss(logp, old, ref, adv, mask, epsilon_low=0.2, beta=beta)
    loss.backward()
    # d/dlogp of r*A is r*A; of beta*KL it is beta*(1 - exp(ref - logp)); each token weighs 1/(4 n_i).
    expected = [
        [0.0, -A / 12, (-0.5 * A - beta) / 12],  # t0: r=1.5 > 1.2 with A>0: clipped, no gradient
        [0.0, 1.5 * A / 8, 0.0],  # t0: r=0.5 < 0.8 with A<0: clipped; t2: padding
        [1.1 * A / 4, 0.0, 0.0],
        [(-A - beta) / 12, -A / 12, (-A + 0.5 * beta) / 12],
    ]
    assert logp.grad.tolist() == [pytest.approx(row, abs=1e-12) for row in expected]


def test_without_kl_clipped_tokens_get_exactly_zero_gradient():
    gen = torch.Generator().manual_seed(3)
    logp = torch.randn(6, 5, generator=gen, dtype=torch.float64).requires_grad_()
    old = logp.detach() + 0.4 * torch.randn(6, 5, generator=gen, dtype=torch.float64)
    adv = torch.randn(6, generator=gen, dtype=torch.float64)
    mask = torch.ones(6, 5)
    loss, _ = grpo_loss(logp, old, None, adv, mask, epsilon_low=0.2, epsilon_high=0.3, beta=0.0)
    loss.backward()
    ratio, a = torch.exp(logp.detach() - old), adv[:, None].expand(6, 5)
    clipped = ((ratio < 0.8) & (a < 0)) | ((ratio > 1.3) & (a > 0))
    assert clipped.any() and (~clipped).any()
    assert (logp.grad[clipped] == 0).all()
    assert torch.allclose(logp.grad[~clipped], -(ratio * a)[~clipped] / 30)


def test_on_policy_ratio_is_one_but_carries_the_policy_gradient():
    logp = torch.tensor([[-0.5, -2.0]], requires_grad=True)
    loss, metrics = grpo_loss(logp, None, None, torch.tensor([2.0]), torch.ones(1, 2), beta=0.0)
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)
    assert metrics["ratio_mean"].item() == 1.0 and "kl" not in metrics
    assert logp.grad.tolist() == [[-1.0, -1.0]]


def test_kl_estimator_and_argument_errors():
    logp, ref = torch.tensor([-1.0, -1.0, -2.0]), torch.tensor([-1.0, -1.0 + LN2, -2.0 - LN2])
    assert per_token_kl(logp, ref).tolist() == pytest.approx([0.0, 1 - LN2, LN2 - 0.5])
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logp[None], None, None, torch.ones(1), torch.ones(1, 3), beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logp[None], None, None, torch.ones(1), torch.ones(1, 3), beta=0.0, loss_type="ppo")


# ----------------------------------------------------------------------------- token log-probs


def test_token_logprobs_shift_on_a_hand_example():
    # input_ids = [prompt 2, completion 1, 0]; position 0 scores the first completion token
    # (probs [1/4, 1/2, 1/4] -> token 1: log 1/2), position 1 the second ([3/5, 1/5, 1/5]
    # -> token 0: log 3/5); position 2 predicts past the end and must not matter.
    logits = torch.tensor([[[0.0, LN2, 0.0], [math.log(3), 0.0, 0.0], [50.0, -50.0, 9.0]]])
    ids, mask = torch.tensor([[2, 1, 0]]), torch.ones(1, 2)
    assert token_logprobs(logits, ids, mask)[0].tolist() == pytest.approx([math.log(1 / 2), math.log(3 / 5)])
    # Temperature 2 halves the logits: [1, sqrt 2, 1] / (2 + sqrt 2) -> token 1.
    hot = token_logprobs(logits, ids, mask, temperature=2.0)[0, 0].item()
    assert hot == pytest.approx(math.log(math.sqrt(2) / (2 + math.sqrt(2))))
    # Only the last C + 1 positions (logits_to_keep), and padding scored as 0.
    assert token_logprobs(logits[:, -3:], ids, torch.tensor([[1, 0]]))[0].tolist() == \
        pytest.approx([math.log(1 / 2), 0.0])
    with pytest.raises(ValueError, match="at least 3 positions"):
        token_logprobs(logits[:, 1:], ids, mask)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
def test_token_logprobs_equals_log_softmax_gather(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(3, 9, 50, generator=gen)).to(dtype)
    ids = torch.randint(0, 50, (3, 9), generator=gen)
    mask = torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    got = token_logprobs(logits, ids, mask, temperature=0.7)
    full = torch.log_softmax(logits.float() / 0.7, dim=-1)[:, 3:8]  # positions L-C-1 .. L-2
    expected = full.gather(-1, ids[:, 4:, None]).squeeze(-1) * mask
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=tol)


def test_token_logprobs_matches_trl_selective_log_softmax():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    gen = torch.Generator().manual_seed(1)
    logits, ids = torch.randn(2, 7, 30, generator=gen), torch.randint(0, 30, (2, 7), generator=gen)
    theirs = trl_utils.selective_log_softmax(logits[:, 2:-1], ids[:, 3:], temperature=1.3)
    assert torch.allclose(token_logprobs(logits, ids, torch.ones(2, 4), temperature=1.3), theirs, atol=1e-6)


# ----------------------------------------------------------------------------- TRL equivalence

GROUP = 4
PROMPTS = ["a red car drives along a road at night", "a cat", "the camera pans left over the sea"]
REWARDS = [0.0, 1.0, 0.5, 0.25, 2.0, 2.0, 2.0, 2.0, 0.3, -1.0, 0.7, 0.3]  # middle group tied


@pytest.fixture(scope="module")
def trl_trainer(tmp_path_factory):
    """A real TRL GRPOTrainer over the tiny Qwen2 model (beta 0.04, eps 0.2 / 0.28, T 0.8).

    TRL 1.x weights the KL term by the ratio by default; SPEC §5's objective does not, so
    ``use_bias_correction_kl`` is off here (the weighted form is compared separately).
    """
    pytest.importorskip("trl", reason="trl is the reference implementation for these tests")
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from vidcli.testing import ensure_tiny_models

    path = ensure_tiny_models("llm")["llm"]

    def table_reward(prompts, completions, **kwargs):
        return REWARDS[:len(completions)]

    config = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo")), per_device_train_batch_size=len(REWARDS),
        num_generations=GROUP, max_completion_length=6, temperature=0.8, beta=0.04, epsilon=0.2,
        epsilon_high=0.28, loss_type="grpo", use_bias_correction_kl=False, use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", seed=0,
    )
    with torch.random.fork_rng(devices=[]):  # the trainer seeds the global RNG
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path), reward_funcs=table_reward, args=config,
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
            processing_class=AutoTokenizer.from_pretrained(path),
        )
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by the loss
        trainer.model.train()
        batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(GROUP)])
    yield trainer, batch
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("scale", ["group", "none"])
def test_advantages_equal_trl(trl_trainer, monkeypatch, scale):
    trainer, batch = trl_trainer
    if scale != trainer.scale_rewards:
        monkeypatch.setattr(trainer, "scale_rewards", scale)
        with torch.random.fork_rng(devices=[]):
            batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(GROUP)])
    ours = group_advantages(torch.tensor(REWARDS), GROUP, scale=scale == "group")
    assert batch["advantages"].tolist() == pytest.approx(ours.tolist(), abs=1e-6)


@pytest.mark.parametrize("loss_type,beta,weighted", [("grpo", 0.04, False), ("grpo", 0.0, False),
                                                     ("grpo", 0.04, True), ("bnpo", 0.04, False),
                                                     ("dr_grpo", 0.04, False)])
def test_loss_arithmetic_equals_trl(trl_trainer, monkeypatch, loss_type, beta, weighted):
    """Arbitrary log-probs handed to TRL's compute_loss in place of the model's: loss, gradient, metrics."""
    trainer, _ = trl_trainer
    gen = torch.Generator().manual_seed(7)
    rows, width = 10, 8
    logp = (-3 * torch.rand(rows, width, generator=gen, dtype=torch.float64)).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(rows, width, generator=gen, dtype=torch.float64)
    ref = logp.detach() + 0.5 * torch.randn(rows, width, generator=gen, dtype=torch.float64)
    adv = torch.randn(rows, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([8, 1, 5, 3, 8, 2, 7, 0, 4, 6])  # ragged, one empty completion
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    for name, value in [("loss_type", loss_type), ("beta", beta), ("epsilon_low", 0.2), ("epsilon_high", 0.28),
                        ("max_completion_length", 12), ("_metrics", {"train": _ListDict(), "eval": _ListDict()}),
                        ("_get_per_token_logps_and_entropies",
                         lambda *args, **kwargs: (logp, torch.zeros_like(logp), None))]:
        monkeypatch.setattr(trainer, name, value)
    monkeypatch.setattr(trainer.args, "use_bias_correction_kl", weighted)
    inputs = {"prompt_ids": torch.zeros(rows, 1, dtype=torch.long), "prompt_mask": torch.ones(rows, 1),
              "completion_ids": torch.zeros(rows, width, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    theirs = trainer.compute_loss(trainer.model, inputs)
    (their_grad,) = torch.autograd.grad(theirs, logp)
    ours, metrics = grpo_loss(logp, old, ref, adv, mask, epsilon_low=0.2, epsilon_high=0.28, beta=beta,
                              loss_type=loss_type, max_completion_length=12, ratio_weighted_kl=weighted)
    (our_grad,) = torch.autograd.grad(ours, logp)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-12)
    assert torch.allclose(our_grad, their_grad, atol=1e-12)
    _assert_metrics_equal(trainer._metrics["train"], metrics, beta)
    assert 0 < metrics["clip_ratio/low_mean"] and 0 < metrics["clip_ratio/high_mean"]


def test_model_loss_and_gradients_equal_trl(trl_trainer, monkeypatch):
    """End to end on the tiny model: TRL's fused-head log-probs and loss against token_logprobs + grpo_loss."""
    trainer, batch = trl_trainer
    model = trainer.model
    monkeypatch.setattr(trainer, "_metrics", {"train": _ListDict(), "eval": _ListDict()})
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    width = batch["completion_ids"].size(1)
    lengths = torch.tensor([6, 1, 4, 6, 2, 6, 3, 5, 6, 1, 6, 4])  # ragged completions
    mask = batch["completion_mask"] * (torch.arange(width)[None] < lengths[:, None])
    attention = torch.cat([batch["prompt_mask"], mask], dim=1)
    assert (batch["prompt_mask"] == 0).any()  # left padding is part of the test
    with torch.no_grad():
        current = token_logprobs(model(input_ids=input_ids, attention_mask=attention).logits, input_ids, mask, 0.8)
    gen = torch.Generator().manual_seed(11)
    old = current + 0.3 * torch.randn(current.shape, generator=gen)
    ref = current + 0.3 * torch.randn(current.shape, generator=gen)
    inputs = {**batch, "completion_mask": mask, "old_per_token_logps": old, "ref_per_token_logps": ref}

    model.zero_grad()
    theirs = trainer.compute_loss(model, inputs)
    theirs.backward()
    their_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    logp = token_logprobs(model(input_ids=input_ids, attention_mask=attention).logits, input_ids, mask, 0.8)
    ours, metrics = grpo_loss(logp, old, ref, batch["advantages"], mask, epsilon_low=0.2, epsilon_high=0.28,
                              beta=0.04)
    ours.backward()

    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, their_grads[name], atol=1e-6, rtol=1e-4), name
    _assert_metrics_equal(trainer._metrics["train"], metrics, 0.04, tol=1e-6)
    assert 0 < metrics["clip_ratio/region_mean"] < 1


class _ListDict(dict):
    """The shape of GRPOTrainer._metrics[mode]: a list per metric name, created on first use."""

    def __missing__(self, key):
        self[key] = []
        return self[key]


def _assert_metrics_equal(trl_metrics: dict, ours: dict, beta: float, tol: float = 1e-7) -> None:
    """Equal to TRL's logged values (TRL counts clipped tokens in float32, hence 1e-7)."""
    names = ["clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"] + (["kl"] if beta else [])
    for name in names:
        assert ours[name].item() == pytest.approx(trl_metrics[name][-1], abs=tol), name
