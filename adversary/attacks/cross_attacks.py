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

import torch
from scipy.optimize import linear_sum_assignment

from adversary.attacks.base import ATTACKS, Attack, AttackContext, Prediction, Reference
from adversary.attacks.cumulative import CROSS_RIDGE
from adversary.attacks.similarity import ridge_fit
from adversary.attacks.similarity_attacks import KMeansHungarianAttack

__all__ = ["CrossKMeansAttack", "PairAttack"]


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
        k = min(ctx.num_classes, len(grad))
        indicators = torch.nn.functional.one_hot(clusters, k).to(smashed.dtype)
        fit = ridge_fit(smashed, indicators, ridge=CROSS_RIDGE)
        if fit is None:
            # Smashed data that do not vary predict nothing: every sample gets the largest cluster.
            shares = indicators.mean(dim=0, dtype=torch.float64)
            scores, known_scores = shares.expand(len(smashed), k), shares.expand(len(reference.vectors), k)
        else:
            # Each cluster's predicted indicator less its share of the epoch: where clusters are of very
            # different sizes (mixup, a learnt prior) the share would hand most samples to the largest.
            scores, known_scores = fit.centred(smashed), fit.centred(reference.vectors)
        classes = torch.unique(reference.labels)
        # gain[j, c]: the mean rise of cluster j's predicted indicator over the known samples of class c.
        gain = torch.stack([known_scores[reference.labels == c].mean(dim=0) for c in classes], dim=1)
        rows, cols = linear_sum_assignment(gain.cpu().numpy(), maximize=True)
        # Clusters left unmatched (fewer known classes than clusters) take their best class.
        name = classes[gain.argmax(dim=1)].clone()
        name[torch.as_tensor(rows, device=name.device)] = classes[torch.as_tensor(cols, device=classes.device)]
        labels = name[scores.argmax(dim=1)]
        score = None
        if ctx.num_classes == 2 and (name == 1).any() and (name == 0).any():
            score = (scores[:, name == 1].amax(dim=1) - scores[:, name == 0].amax(dim=1)).float()
        return Prediction(labels, score)
