"""Attacks on both channels of one epoch at once (beyond the paper).

The labels behind the returned gradients need not be the true ones: label DP
randomises them. The gradients of an epoch still cluster by whatever labels
trained the top model, and the smashed data, which the feature party computes
itself, predict those labels best where they predict the true ones (a
randomised label is the true one with a higher probability than any other,
whatever the input). So the attacker can do what the label party's top model
does with the same labels: learn a map from its smashed data to the
gradients' clusters, and read each sample's class from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import log_softmax, logsumexp

from adversary.attacks.base import ATTACKS, Attack, AttackContext, Prediction, Reference
from adversary.attacks.similarity import CROSS_RIDGE, ridge_fit
from adversary.attacks.similarity_attacks import KMeansHungarianAttack

__all__ = [
    "CROSS_FOLDS",
    "CrossKMeansAttack",
    "PairAttack",
    "ResponseFit",
    "cluster_rises",
    "cross_fitted_labels",
    "cross_fitted_rises",
    "fit_response",
]

# The folds of cross_fitted_labels: each row's rises come from a ridge fit on the other nine tenths of the
# rows. Learning from randomised labels needs many samples: on the epoch-0 capture of label DP at epsilon 1
# (8,000 MNIST samples) the clusters read from half of them were 0.556 right, from four fifths 0.639, from
# all 0.687 (each named as well as it could be).
CROSS_FOLDS = 10


def cluster_rises(smashed: torch.Tensor, clusters: torch.Tensor, k: int, *, rows: torch.Tensor | None = None):
    """Returns (rises of the rows, the fit): each cluster's indicator as the smashed data predict it
    (ridge regression, CROSS_RIDGE) less the cluster's share, for every row of smashed, the regression
    fitted on `rows` only (default: all). The fit is None where those smashed data do not vary: then every
    rise is 0 and each sample takes the largest cluster (argmax of the shares)."""
    indicators = torch.nn.functional.one_hot(clusters, k).to(smashed.dtype)
    fitted_on = slice(None) if rows is None else rows
    fit = ridge_fit(smashed[fitted_on], indicators[fitted_on], ridge=CROSS_RIDGE)
    if fit is None:
        shares = indicators[fitted_on].mean(dim=0, dtype=torch.float64)
        return shares.expand(len(smashed), k), None
    # Each cluster's predicted indicator less its share of the epoch: where clusters are of very different
    # sizes (mixup, a learnt prior) the share would hand most samples to the largest.
    return fit.centred(smashed), fit


def _names(known_rises: torch.Tensor, known_labels: torch.Tensor) -> torch.Tensor:
    """Returns each cluster's class: Hungarian matching on the known samples' rises (each class's known
    samples vote with their mean rise for every cluster); clusters left unmatched (fewer known classes
    than clusters) take their best class."""
    classes = torch.unique(known_labels)
    # gain[j, c]: the mean rise of cluster j's predicted indicator over the known samples of class c.
    gain = torch.stack([known_rises[known_labels == c].mean(dim=0) for c in classes], dim=1)
    rows, cols = linear_sum_assignment(gain.cpu().numpy(), maximize=True)
    name = classes[gain.argmax(dim=1)].clone()
    name[torch.as_tensor(rows, device=name.device)] = classes[torch.as_tensor(cols, device=classes.device)]
    return name


def cross_fitted_rises(
    smashed: torch.Tensor, clusters: torch.Tensor, k: int, *, generator: torch.Generator, folds: int = CROSS_FOLDS
) -> torch.Tensor:
    """Returns every row's rises (cluster_rises) predicted by a regression fitted on the other folds' rows
    only: a row's own cluster plays no part in them."""
    n = len(clusters)
    fold = torch.randperm(n, generator=generator).to(clusters.device) % folds
    rises = torch.zeros(n, k, dtype=torch.float64, device=smashed.device)
    for f in range(folds):
        held = fold == f
        if bool(held.any()):
            rises[held] = cluster_rises(smashed, clusters, k, rows=~held)[0][held]
    return rises


def cross_fitted_labels(
    smashed: torch.Tensor,
    clusters: torch.Tensor,
    k: int,
    *,
    known_rows: torch.Tensor,
    known_labels: torch.Tensor,
    generator: torch.Generator,
    folds: int = CROSS_FOLDS,
) -> torch.Tensor:
    """Returns cross_kmeans's labelling with every row read out of fold (cross_fitted_rises; the known
    samples' rises that name the clusters too).

    A row's own cluster then plays no part in its label, so the labelling's agreement with the clusters
    is a fair measure of how well it predicts them (CumulativeAttacker: reading randomised labels)."""
    rises = cross_fitted_rises(smashed, clusters, k, generator=generator, folds=folds)
    name = _names(rises[known_rows], known_labels)
    return name[rises.argmax(dim=1)]


# The search of fit_response: bounds of the log-sharpness and the log-odds, and the coarse grid (points per
# parameter) its descent starts from. A log-odds of 30 keeps a sample's own cluster against any reading
# (randomized response at epsilon 30 flips one label in 10^12).
SHARPNESS_LOG_BOUNDS = (-3.0, 5.0)
LOG_ODDS_BOUNDS = (0.0, 30.0)
RESPONSE_GRID = (5, 7)


@dataclass(frozen=True)
class ResponseFit:
    """The gradients' clusters read as randomized response on the classes the smashed data predict.

    The model: a sample's class is j with probability softmax(sharpness * rises / sd)_j (rises read out of
    fold, sd their standard deviation), and its cluster is its class with log-odds log_odds against each
    other cluster: P(cluster = c | class = j) = exp(log_odds [c = j]) / (exp(log_odds) + k - 1). That is
    k-ary randomized response, where log_odds is epsilon. scores: each row's log-posterior over the
    classes (up to a per-row constant), its own cluster's evidence included.
    """

    sharpness: float
    log_odds: float
    scores: torch.Tensor

    def keep(self, k: int) -> float:
        """Returns the probability that a sample's cluster is its class, as fitted."""
        return 1.0 / (1.0 + (k - 1) * math.exp(-self.log_odds))


def _response_nll(theta: np.ndarray, x: np.ndarray, own: np.ndarray) -> tuple[float, np.ndarray]:
    """Returns the negative log-likelihood of the clusters (own: each row's cluster, one-hot) under
    ResponseFit's model at theta = (log sharpness, log-odds), and its gradient."""
    log_sharpness, log_odds = theta
    sharpness, k = math.exp(log_sharpness), x.shape[1]
    log_class = log_softmax(sharpness * x, axis=1)
    joint = log_class + np.where(own, log_odds, 0.0)
    per_row = logsumexp(joint, axis=1)
    log_norm = float(np.logaddexp(log_odds, math.log(k - 1)))
    nll = -float(per_row.sum()) + len(x) * log_norm
    # d/d log-odds: each row's posterior weight on its own cluster, less the kept probability.
    posterior = np.exp(joint - per_row[:, None])
    kept = math.exp(log_odds - log_norm)
    d_odds = -float((posterior * own).sum()) + len(x) * kept
    # d/d sharpness of log P(class j): x_j less the class-weighted mean of x.
    mean_x = (np.exp(log_class) * x).sum(axis=1, keepdims=True)
    d_sharpness = -float((posterior * (x - mean_x)).sum())
    return nll, np.array([d_sharpness * sharpness, d_odds])


def fit_response(rises: torch.Tensor, clusters: torch.Tensor, k: int) -> ResponseFit:
    """Returns the maximum-likelihood ResponseFit of the clusters given the rises (two parameters).

    The rises must not have seen a row's own cluster (cross_fitted_rises): the model adds that evidence
    once, by log_odds. Fitted by L-BFGS-B (SciPy) within the bounds, from the best point of a coarse grid.
    """
    x = rises.detach().cpu().double().numpy()
    sd = float(x.std())
    x = x / sd if sd > 0 else x
    own = np.zeros_like(x, dtype=bool)
    own[np.arange(len(x)), clusters.cpu().numpy()] = True
    grid = [
        np.array([a, b])
        for a in np.linspace(*SHARPNESS_LOG_BOUNDS, RESPONSE_GRID[0])
        for b in np.linspace(*LOG_ODDS_BOUNDS, RESPONSE_GRID[1])
    ]
    start = min(grid, key=lambda theta: _response_nll(theta, x, own)[0])
    bounds = [SHARPNESS_LOG_BOUNDS, LOG_ODDS_BOUNDS]
    result = minimize(_response_nll, start, args=(x, own), jac=True, method="L-BFGS-B", bounds=bounds)
    log_sharpness, log_odds = (float(v) for v in result.x)
    scores = math.exp(log_sharpness) * x + np.where(own, log_odds, 0.0)
    return ResponseFit(math.exp(log_sharpness), log_odds, torch.from_numpy(scores).to(rises.device))


class PairAttack(Attack):
    """An attack on one epoch's gradients and smashed data of the same samples, row for row.

    The engine calls predict_pair at epoch ends with both channels in its frame and the known samples'
    smashed vectors as the reference.
    """

    data_kinds = ("both",)

    def predict(self, vectors: torch.Tensor, reference: Reference, ctx: AttackContext) -> Prediction:
        raise TypeError(f"{self.name} needs both channels: call predict_pair")

    def predict_pair(
        self, grad: torch.Tensor, smashed: torch.Tensor, reference: Reference, ctx: AttackContext
    ) -> Prediction:
        raise NotImplementedError


@ATTACKS.register("cross_kmeans")
class CrossKMeansAttack(PairAttack):
    """The gradients' own clusters as the smashed data predict them.

    k-means++ on the epoch's unit gradients (k = classes, the clusters of kmeans_hungarian on the
    gradients: same seed, restarts and tolerance); a ridge regression of the clusters' indicators on the
    smashed data (cross_channel's ridge); each sample takes the cluster whose predicted indicator rises
    most above the cluster's share of the epoch, and the clusters are named by Hungarian matching on the
    known samples' rises (each class's known samples vote with their mean rise for every cluster). On a
    binary task the score is the class-1 rise minus the class-0 one.
    """

    name = "cross_kmeans"

    def predict_pair(self, grad, smashed, reference, ctx):
        if len(grad) != len(smashed):
            raise ValueError(f"{len(grad)} gradient rows against {len(smashed)} smashed rows: not the same samples")
        clusters, _ = KMeansHungarianAttack.clusters(grad, ctx)
        return self.read(clusters, smashed, reference, ctx.num_classes)

    @staticmethod
    def read(clusters: torch.Tensor, smashed: torch.Tensor, reference: Reference, num_classes: int) -> Prediction:
        """Returns the labelling of the gradients' clusters as the smashed data predict them."""
        k = min(num_classes, len(clusters))
        scores, fit = cluster_rises(smashed, clusters, k)
        if fit is None:
            known_scores = scores[0].expand(len(reference.vectors), k)
        else:
            known_scores = fit.centred(reference.vectors)
        name = _names(known_scores, reference.labels)
        labels = name[scores.argmax(dim=1)]
        score = None
        if num_classes == 2 and (name == 1).any() and (name == 0).any():
            score = (scores[:, name == 1].amax(dim=1) - scores[:, name == 0].amax(dim=1)).float()
        return Prediction(labels, score)
