"""Pure math of the defenses: randomized response with prior, top-k
sparsification, the clipped Gaussian mechanism, privacy accounting and
Marvell's noise optimisation. Stateless; the Defense classes use them."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "ALPHAS",
    "clip_and_noise",
    "epsilon_spent",
    "marvell_closed_form",
    "marvell_solve",
    "noise_multiplier_for",
    "rr_keep_probability",
    "rr_with_prior",
    "topk_sparsify",
]

# RDP orders: Opacus' defaults, plus orders near 1 (the optimum at the grid's
# large epsilons, 50 and 100) and large orders, without which the accountant
# cannot certify epsilon below about 0.2 at delta = 1e-5 (the grid starts at 0.1).
ALPHAS = (
    [1 + x / 100.0 for x in range(1, 10)]
    + [1 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(12, 64)]
    + [float(a) for a in range(64, 1025, 16)]
    + [2048.0, 4096.0]
)


def rr_keep_probability(epsilon: float, k: int) -> float:
    """Returns the probability that k-ary randomized response keeps the true label: e^eps / (e^eps + k - 1)."""
    return math.exp(epsilon) / (math.exp(epsilon) + k - 1)


def rr_with_prior(
    labels: torch.Tensor, prior: torch.Tensor, *, epsilon: float, generator: torch.Generator
) -> torch.Tensor:
    """Returns labels randomised by RRWithPrior (Ghazi et al., 2021).

    For each sample the k most likely classes under its prior are kept as the
    candidate set, with k maximising keep(eps, k) * prior mass of the top k; a
    label inside the set is kept with keep(eps, k) and otherwise moved uniformly
    to another candidate; a label outside is replaced by a uniform candidate.
    With a uniform prior this is plain K-ary randomized response. Each output
    is epsilon-label-DP whatever the prior, as long as the prior does not
    depend on the sample's own label.
    """
    n = len(labels)
    if prior.dim() == 1:
        prior = prior.expand(n, -1)
    num_classes = prior.shape[1]
    order = prior.argsort(dim=1, descending=True, stable=True)
    mass = prior.gather(1, order).cumsum(dim=1)
    ks = torch.arange(1, num_classes + 1, dtype=prior.dtype)
    keep = torch.exp(torch.tensor(epsilon, dtype=prior.dtype)) / (math.exp(epsilon) + ks - 1)
    k = (keep * mass).argmax(dim=1) + 1
    out = labels.clone()
    u = torch.rand(n, generator=generator)
    for i in range(n):
        candidates = order[i, : k[i]]
        y = labels[i]
        inside = bool((candidates == y).any())
        if inside and u[i] < keep[k[i] - 1]:
            continue
        others = candidates[candidates != y] if inside else candidates
        if len(others) == 0:
            continue
        out[i] = others[torch.randint(len(others), (1,), generator=generator)]
    return out


def topk_sparsify(cut_grad: torch.Tensor, fraction: float) -> torch.Tensor:
    """Returns the gradient with the smallest-magnitude `fraction` of each row's entries set to zero."""
    dim = cut_grad.shape[1]
    zeroed = int(round(fraction * dim))
    if zeroed == 0:
        return cut_grad.clone()
    smallest = cut_grad.abs().topk(zeroed, dim=1, largest=False).indices
    return cut_grad.scatter(1, smallest, 0.0)


def clip_and_noise(
    per_sample: torch.Tensor, *, max_norm: float, noise_std: float, generator: torch.Generator
) -> torch.Tensor:
    """Returns each row clipped to L2 norm max_norm plus N(0, noise_std^2 I) noise."""
    norms = per_sample.norm(dim=1, keepdim=True)
    clipped = per_sample * (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    noise = torch.randn(per_sample.shape, generator=generator, dtype=per_sample.dtype) * noise_std
    return clipped + noise


def noise_multiplier_for(*, epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Returns the Gaussian noise multiplier that spends epsilon over steps at sample_rate (Opacus RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    return get_noise_multiplier(
        target_epsilon=epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant="rdp",
        alphas=ALPHAS,
    )


def epsilon_spent(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Returns epsilon after steps of the subsampled Gaussian mechanism (Opacus RDP accountant)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return accountant.get_epsilon(delta=delta, alphas=ALPHAS)


def _sum_kl(lams: np.ndarray, *, g: float, d: int, u: float, v: float, floor: float) -> float:
    """Marvell's symmetrised KL between the perturbed class distributions (Li et al., ICLR 2022).

    Variances are floored so that a class with no spread in some direction
    (where the KL is infinite) costs a very large but finite amount.
    """
    l0_par, l0_perp, l1_par, l1_perp = lams
    a, b = l0_par + u + floor, l1_par + v + floor
    value = 0.5 * (a / b + b / a) + 0.5 * g * g * (1 / a + 1 / b) - 1
    if d > 1:
        c, e = l0_perp + u + floor, l1_perp + v + floor
        value += (d - 1) / 2 * (c / e + e / c) - (d - 1)
    return value


def marvell_solve(*, g: float, p: float, power: float, d: int, u: float, v: float) -> tuple[float, float, float, float]:
    """Returns Marvell's noise variances (neg_parallel, neg_perp, pos_parallel, pos_perp).

    Class c gets noise with variance *_parallel along the direction between the
    class means and *_perp in each orthogonal direction; g is the distance
    between the means, p the fraction of positives, u and v the inherent
    isotropic gradient variances of the negative and positive class, and
    power bounds the expected noise energy: (1-p)(n_par + (d-1) n_perp) + p(p_par + (d-1) p_perp) <= power.
    """
    if power <= 0:
        return 0.0, 0.0, 0.0, 0.0
    floor = 1e-9 * max(power, g * g, 1e-12)
    # Orthogonal noise only pays when the classes' own spreads differ; with
    # u = v it cannot lower the objective, so the search keeps it at zero.
    perp = d > 1 and not math.isclose(u, v)
    x0 = np.array([power, power / d if perp else 0.0, power, power / d if perp else 0.0])
    weights = np.array([1 - p, (1 - p) * (d - 1), p, p * (d - 1)])
    bounds = [(0.0, None), (0.0, None if perp else 0.0), (0.0, None), (0.0, None if perp else 0.0)]
    # Imported here: only Marvell needs SciPy's optimiser, whose import takes half a second of every
    # label party's start.
    from scipy.optimize import minimize

    result = minimize(
        lambda x: _sum_kl(x, g=g, d=d, u=u, v=v, floor=floor),
        x0,
        method="SLSQP",
        bounds=bounds,
        constraints=[{"type": "ineq", "fun": lambda x: power - weights @ x}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    lams = np.clip(result.x, 0.0, None)
    used = float(weights @ lams)
    if used > power:  # SLSQP may end slightly outside; scaling down keeps the noise shape and meets the constraint
        lams *= power / used
    return tuple(float(x) for x in lams)


def marvell_closed_form(*, g: float, p: float, power: float) -> tuple[float, float]:
    """Returns (neg_parallel, pos_parallel) optimal for u = v = 0, where all noise goes along the mean difference.

    Setting the derivative of the objective along the power constraint to zero
    gives pos/neg = sqrt((power + (1-p) g^2) / (power + p g^2)).
    """
    ratio = math.sqrt((power + (1 - p) * g * g) / (power + p * g * g))
    neg = power / ((1 - p) + p * ratio)
    return neg, ratio * neg
