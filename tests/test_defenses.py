"""Each defense mechanism against its definition."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import small_config
from party_label.defenses import DefenseContext, build_defense
from party_label.defenses.label_dp import _chosen_k
from party_label.defenses.mechanisms import (
    clip_and_noise,
    epsilon_spent,
    marvell_closed_form,
    marvell_solve,
    rr_keep_probability,
    rr_with_prior,
    topk_sparsify,
)

CTX = DefenseContext(num_classes=10, train_size=1000, batch_size=50, epochs=5, seed=0)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 5.0])
def test_rr_flip_probabilities_match_the_definition(epsilon):
    k, n = 10, 40_000
    labels = torch.randint(k, (n,), generator=torch.Generator().manual_seed(1))
    out = rr_with_prior(labels, torch.full((k,), 1 / k), epsilon=epsilon, generator=torch.Generator().manual_seed(2))
    keep = rr_keep_probability(epsilon, k)
    assert abs(float((out == labels).double().mean()) - keep) < 4 * math.sqrt(keep * (1 - keep) / n)
    # A flipped label goes to each other class equally often.
    moved = out[out != labels] - labels[out != labels]
    counts = torch.bincount(moved % k, minlength=k)[1:].double()
    assert counts.std() / counts.mean() < 0.1


def test_rr_with_prior_restricts_to_the_top_classes():
    prior = torch.tensor([0.7, 0.25, 0.03, 0.02])
    labels = torch.tensor([0, 1, 2, 3] * 500)
    out = rr_with_prior(labels, prior, epsilon=2.0, generator=torch.Generator().manual_seed(0))
    # For eps = 2 the best candidate set is the top 2 classes: the output never leaves it.
    assert set(out.tolist()) == {0, 1}


def _brute_force_k(prior: list[float], epsilon: float) -> tuple[int, float]:
    """The k (and its objective) that maximises keep(eps, k) * the prior mass of the top k, by trying all."""
    ranked = sorted(prior, reverse=True)
    best = max(range(1, len(prior) + 1), key=lambda k: (rr_keep_probability(epsilon, k) * sum(ranked[:k]), -k))
    return best, rr_keep_probability(epsilon, best) * sum(ranked[:best])


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(0.001, 1.0), min_size=2, max_size=12),
    epsilon=st.floats(0.05, 8.0),
)
def test_rr_with_prior_chooses_the_k_that_maximises_the_chance_of_the_true_label(weights, epsilon):
    prior = torch.tensor(weights, dtype=torch.float64)
    prior = prior / prior.sum()
    k = int(_chosen_k(prior[None], epsilon)[0])
    best_k, best = _brute_force_k(prior.tolist(), epsilon)
    ranked = sorted(prior.tolist(), reverse=True)
    # Ties aside (equal objectives), the same k; the objective is the maximum either way.
    assert rr_keep_probability(epsilon, k) * sum(ranked[:k]) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_rr_with_prior_keeps_with_the_stated_probability_inside_the_top_k(epsilon):
    k_classes, n = 6, 60_000
    prior = torch.tensor([0.35, 0.3, 0.2, 0.1, 0.04, 0.01])
    k, _ = _brute_force_k(prior.tolist(), epsilon)
    assert 1 < k < k_classes, "a prior whose best set is neither one class nor all of them"
    labels = torch.randint(k_classes, (n,), generator=torch.Generator().manual_seed(3))
    out = rr_with_prior(labels, prior, epsilon=epsilon, generator=torch.Generator().manual_seed(4))
    top = set(range(k))  # the prior is sorted: its top k are classes 0..k-1
    assert set(out.tolist()) <= top, "the output never leaves the top-k support"
    inside = torch.tensor([int(y) in top for y in labels])
    keep = rr_keep_probability(epsilon, k)
    kept = float((out[inside] == labels[inside]).double().mean())
    assert abs(kept - keep) < 4 * math.sqrt(keep * (1 - keep) / int(inside.sum()))
    # Inside: a moved label goes to each other candidate equally often; outside: uniform over the top k.
    outside = torch.bincount(out[~inside], minlength=k)[:k].double()
    assert outside.std() / outside.mean() < 0.1
    expected = int((~inside).sum()) / k
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in outside.tolist())


def test_a_uniform_prior_is_k_ary_randomized_response():
    for epsilon in (0.1, 1.0, 10.0):
        assert int(_chosen_k(torch.full((1, 10), 0.1), epsilon)[0]) == 10


def test_a_learnt_prior_randomises_each_stage_once_from_the_model_trained_before_it(tmp_path):
    section = {"name": "label_dp", "epsilon": 1.0, "prior": "learned", "stages": 2}
    cfg = small_config(tmp_path, label_party={"defense": section}, train={"epochs": 4}).label_party.defense
    ctx = DefenseContext(num_classes=10, train_size=1000, batch_size=50, epochs=4, seed=0)
    defense = build_defense(cfg, ctx)
    labels = torch.randint(10, (1200,), generator=torch.Generator().manual_seed(0))
    train = torch.arange(1000)
    table = defense.train_labels(labels, train).clone()
    first = table >= 0
    assert int(first.sum()) == 500 and not first[1000:].any(), "stage 0: half the training set, at the start"
    _, active = defense.targets(None, train[:100], epoch=0)
    assert torch.equal(active, first[:100]), "a sample trains only once its label is randomised"
    assert defense.wants_prior(train, epoch=0) is None and defense.stage_start(1) == 2
    wanted = defense.wants_prior(train, epoch=1)
    assert torch.equal(wanted, ~first[:1000]), "the next stage's samples, in the epoch before it"
    # A model that learnt something: 0.6 on the true class, the rest spread.
    ids = train[wanted]
    prior = torch.full((len(ids), 10), 0.4 / 9)
    prior[torch.arange(len(ids)), labels[ids]] = 0.6
    defense.record_prior(ids, prior)
    out, active = defense.targets(None, train, epoch=2)
    assert active is None, "every training sample trains from stage 1 on"
    assert torch.equal(defense.table[first], table[first]), "stage 0's labels are not randomised again"
    figures = defense.metrics(steps=1)
    keep_uniform = rr_keep_probability(1.0, 10)
    k, _ = _brute_force_k(prior[0].tolist(), 1.0)
    assert figures["stage1_mean_k"] == k and figures["stage0_mean_k"] == 10
    assert figures["stage1_kept_fraction"] == pytest.approx(rr_keep_probability(1.0, k), abs=0.06)
    assert figures["stage1_kept_fraction"] > keep_uniform + 0.2, "a good prior keeps more labels at the same epsilon"
    assert abs(figures["stage0_kept_fraction"] - keep_uniform) < 0.06
    assert defense.privacy_spent(steps=10) == (1.0, 0.0)


def test_label_dp_randomises_training_labels_once(tmp_path):
    cfg = small_config(tmp_path, label_party={"defense": {"name": "label_dp", "epsilon": 1.0}}).label_party.defense
    defense = build_defense(cfg, CTX)
    labels = torch.randint(10, (1200,), generator=torch.Generator().manual_seed(0))
    train = torch.arange(1000)
    first, again = defense.train_labels(labels, train), build_defense(cfg, CTX).train_labels(labels, train)
    assert torch.equal(first, again), "randomised once per run, by seed"
    assert (first[1000:] == -1).all(), "only training labels are randomised (and trained on)"
    flipped = defense.metrics(steps=10)["flipped_fraction"]
    assert abs(flipped - (1 - rr_keep_probability(1.0, 10))) < 0.05
    assert defense.privacy_spent(steps=10) == (1.0, 0.0)


@settings(max_examples=40, deadline=None)
@given(fraction=st.floats(0.0, 0.95), rows=st.integers(1, 8), dim=st.integers(1, 64), seed=st.integers(0, 999))
def test_compression_zeroes_exactly_the_requested_fraction(fraction, rows, dim, seed):
    g = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)) + 1e-3
    out = topk_sparsify(g, fraction)
    zeroed = int(round(fraction * dim))
    assert ((out == 0).sum(dim=1) == zeroed).all()
    kept = out != 0
    assert torch.equal(out[kept], g[kept])
    if 0 < zeroed < dim:
        assert (
            g.abs()[kept]
            .reshape(rows, -1)
            .min(dim=1)
            .values.ge(g.abs()[~kept].reshape(rows, -1).max(dim=1).values)
            .all()
        )


def test_gaussian_mechanism_noise_scale_is_sigma_times_c():
    sigma, clip = 1.7, 0.5
    rows = torch.zeros(20_000, 16)
    out = clip_and_noise(rows, max_norm=clip, noise_std=sigma * clip, generator=torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - sigma * clip) < 0.01 * sigma * clip
    big = torch.full((100, 16), 10.0)
    clipped = clip_and_noise(big, max_norm=clip, noise_std=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(clipped.norm(dim=1), torch.full((100,), clip))


def test_dp_sgd_noise_and_epsilon_agree_with_opacus(tmp_path):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    from party_label.defenses.mechanisms import ALPHAS

    cfg = small_config(tmp_path, label_party={"defense": {"name": "dp_sgd", "epsilon": 10.0}}).label_party.defense
    defense = build_defense(cfg, CTX)
    direct_sigma = get_noise_multiplier(
        target_epsilon=10.0, target_delta=cfg.delta, sample_rate=1.0, steps=5, accountant="rdp", alphas=ALPHAS
    )
    assert defense.noise_multiplier == direct_sigma
    accountant = RDPAccountant()
    for _ in range(5):
        accountant.step(noise_multiplier=direct_sigma, sample_rate=1.0)
    steps = 5 * defense.steps_per_epoch
    epsilon, delta = defense.privacy_spent(steps=steps)
    assert epsilon == pytest.approx(accountant.get_epsilon(delta=cfg.delta, alphas=ALPHAS), rel=1e-9)
    assert epsilon <= 10.0 + 0.1 and delta == cfg.delta
    # The returned rows carry noise of std 2 * sigma * C in per-sample units (label change moves a row by 2C).
    grads = torch.zeros(50, 4000)
    out = defense.protect(grads, torch.zeros(50, dtype=torch.long)) * 50
    assert float(out.std()) == pytest.approx(2 * direct_sigma * cfg.max_grad_norm, rel=0.02)
    top = defense.metrics(steps=steps)["top_model_epsilon"]
    assert top == pytest.approx(
        epsilon_spent(noise_multiplier=direct_sigma, sample_rate=50 / 1000, steps=steps, delta=cfg.delta)
    )
    assert top < epsilon, "the top model gains from sampling; the returned rows do not"


@pytest.mark.parametrize("p", [0.5, 0.2, 0.8, 0.05])
@pytest.mark.parametrize("s", [0.1, 1.0, 10.0])
def test_marvell_solver_matches_the_closed_form_when_u_v_are_zero(p, s):
    g = 2.0
    power = s * g * g
    neg_par, neg_perp, pos_par, pos_perp = marvell_solve(g=g, p=p, power=power, d=16, u=0.0, v=0.0)
    expected_neg, expected_pos = marvell_closed_form(g=g, p=p, power=power)
    assert neg_perp == 0 and pos_perp == 0
    assert neg_par == pytest.approx(expected_neg, rel=1e-3)
    assert pos_par == pytest.approx(expected_pos, rel=1e-3)
    assert (1 - p) * neg_par + p * pos_par <= power * (1 + 1e-6)


@settings(max_examples=20, deadline=None)
@given(p=st.floats(0.05, 0.95), s=st.floats(0.1, 10), u=st.floats(0, 2), v=st.floats(0, 2), d=st.integers(2, 32))
def test_marvell_meets_the_power_constraint(p, s, u, v, d):
    g = 1.5
    lams = np.array(marvell_solve(g=g, p=p, power=s * g * g, d=d, u=u, v=v))
    assert (lams >= 0).all()
    used = (1 - p) * (lams[0] + (d - 1) * lams[1]) + p * (lams[2] + (d - 1) * lams[3])
    assert used <= s * g * g * (1 + 1e-4)


def test_marvell_noise_follows_the_solution_and_refuses_multiclass(tmp_path):
    cfg = small_config(
        tmp_path, data={"name": "breast_cancer"}, label_party={"defense": {"name": "marvell", "scale": 4.0}}
    ).label_party.defense
    with pytest.raises(ValueError, match="binary tasks only"):
        build_defense(cfg, CTX)
    binary = DefenseContext(num_classes=2, train_size=1000, batch_size=400, epochs=1, seed=0)
    defense = build_defense(cfg, binary)
    labels = (torch.arange(400) % 4 == 0).long()
    direction = torch.zeros(8)
    direction[0] = 1.0
    grads = torch.where(labels[:, None] == 1, direction, -direction) / 400  # u = v = 0, g = 2
    out = (defense.protect(grads, labels) - grads) * 400
    neg_par, _, pos_par, _ = defense.last_solution
    assert neg_par + pos_par > 0
    assert float(out[labels == 1, 0].var()) == pytest.approx(pos_par, rel=0.3)
    assert float(out[labels == 0, 0].var()) == pytest.approx(neg_par, rel=0.2)
    assert float(out[:, 1:].abs().max()) < 1e-6, "no noise off the mean-difference direction when u = v = 0"


def test_defense_config_errors_name_the_missing_strength(tmp_path):
    from splitleak.config import ConfigError

    with pytest.raises(ConfigError, match="defense dp_sgd needs epsilon"):
        small_config(tmp_path, label_party={"defense": {"name": "dp_sgd"}})
    with pytest.raises(ConfigError, match="marvell protects binary tasks only"):
        small_config(tmp_path, label_party={"defense": {"name": "marvell", "scale": 1}})


def test_mixup_returns_each_sample_its_share_of_both_mixed_rows(tmp_path):
    """The gradient that goes back for sample i under mixup, against the chain rule written out by hand:
    lambda * g(mixed row i) + (1 - lambda) * g(the mixed row that took i as its partner)."""
    import torch.nn.functional as F

    from party_label.server import build_label_party

    config = small_config(tmp_path, label_party={"defense": {"name": "label_dp", "epsilon": 2.0, "mixup_alpha": 0.2}})
    party = build_label_party(config)
    smashed = torch.randn(16, config.model.cut_dim, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.randint(10, (16,), generator=torch.Generator().manual_seed(1))
    state = party.defense.state_dict()["mixup"]
    party._loss(smashed, labels, None).backward()

    rng = np.random.default_rng()
    rng.bit_generator.state = state
    lam, pairing = rng.beta(0.2, 0.2), torch.as_tensor(rng.permutation(16))
    mixed = (lam * smashed + (1 - lam) * smashed[pairing]).detach().requires_grad_(True)
    onehot = torch.eye(10)[labels]
    targets = lam * onehot + (1 - lam) * onehot[pairing]
    loss = -(targets * F.log_softmax(party.top(mixed), dim=1)).sum(dim=1).mean()
    loss.backward()
    expected = lam * mixed.grad
    expected.index_add_(0, pairing, (1 - lam) * mixed.grad)
    assert 0 < lam < 1
    torch.testing.assert_close(smashed.grad, expected, rtol=1e-5, atol=1e-7)


def test_a_run_with_a_learnt_prior_and_mixup_trains_and_reports_each_stage(tmp_path):
    from splitleak.runner import run_in_process

    defense = {"name": "label_dp", "epsilon": 2.0, "prior": "learned", "stages": 2, "mixup_alpha": 0.2}
    config = small_config(
        tmp_path,
        label_party={"defense": defense},
        train={"epochs": 4},
        adversary={"mode": "proxy", "ground_truth": "dataset"},
    )
    summary = run_in_process(config)
    metrics = summary["defense"]
    assert metrics["stages_randomised"] == 2 and metrics["stage1_prior_recorded_fraction"] == 1.0
    assert metrics["stage1_mean_k"] < metrics["stage0_mean_k"] == 10, "the learnt prior narrows the candidates"
    assert metrics["stage1_kept_fraction"] > metrics["stage0_kept_fraction"]
    assert summary["task"]["test_accuracy"] > 0.3 and metrics["epsilon"] == 2.0  # chance: 0.1
