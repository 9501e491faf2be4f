"""Liu et al.'s similarity attacks: distance, prototype and two clustering variants."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from adversary.attacks.base import ATTACKS, Attack, Prediction, Reference
from adversary.attacks.similarity import distances, kmeans, kmeans_plus_plus, normalise

__all__ = [
    "DistanceAttack",
    "KMeansHungarianAttack",
    "KMeansSeededAttack",
    "PrototypeAttack",
    "TrainCentroidsAttack",
    "TrainKnnAttack",
]


def _class_prototypes(reference: Reference, num_classes: int, *, unit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (prototypes, classes): the mean reference vector of each class present."""
    vectors = normalise(reference.vectors) if unit else reference.vectors
    classes = torch.unique(reference.labels)
    protos = torch.stack([vectors[reference.labels == c].mean(dim=0) for c in classes])
    return protos, classes


def _binary_score(dist: torch.Tensor, classes: torch.Tensor) -> torch.Tensor | None:
    """Returns d(class 0) - d(class 1) for each row, when both classes are among the columns' classes."""
    if not (classes == 0).any() or not (classes == 1).any():
        return None
    d0 = dist[:, classes == 0].min(dim=1).values
    d1 = dist[:, classes == 1].min(dim=1).values
    return d0 - d1


@ATTACKS.register("distance")
class DistanceAttack(Attack):
    """Each sample takes the label of its most similar known sample (1-NN)."""

    name = "distance"

    def predict(self, vectors, reference, ctx):
        dist = distances(vectors, reference.vectors, measure=ctx.measure)
        labels = reference.labels[dist.argmin(dim=1)]
        return Prediction(labels, _binary_score(dist, reference.labels) if ctx.num_classes == 2 else None)


@ATTACKS.register("prototype")
class PrototypeAttack(Attack):
    """Each sample takes the label of the nearest class prototype (mean of the class's reference vectors)."""

    name = "prototype"

    def predict(self, vectors, reference, ctx):
        unit = ctx.measure == "cosine"
        protos, classes = _class_prototypes(reference, ctx.num_classes, unit=unit)
        dist = distances(vectors, protos, measure=ctx.measure)
        return Prediction(classes[dist.argmin(dim=1)], _binary_score(dist, classes) if ctx.num_classes == 2 else None)


@ATTACKS.register("train_centroids")
class TrainCentroidsAttack(PrototypeAttack):
    """Inference phase: nearest centroid of training smashed data labelled by a training-phase attack."""

    name = "train_centroids"
    data_kinds = ("smashed",)
    reference_kind = "train_labelled"


@ATTACKS.register("train_knn")
class TrainKnnAttack(DistanceAttack):
    """Inference phase: label of the nearest training smashed vector, as labelled by a training-phase attack."""

    name = "train_knn"
    data_kinds = ("smashed",)
    reference_kind = "train_labelled"


@ATTACKS.register("kmeans_seeded")
class KMeansSeededAttack(Attack):
    """k-means (k = classes) on normalised vectors, centroids seeded at the known class prototypes."""

    name = "kmeans_seeded"

    def predict(self, vectors, reference, ctx):
        unit = normalise(vectors)
        seeds, classes = _class_prototypes(reference, ctx.num_classes, unit=True)
        assign, centroids = kmeans(unit, seeds, iters=ctx.kmeans_iters)
        score = None
        if ctx.num_classes == 2:
            score = _binary_score(torch.cdist(unit, centroids), classes)
        return Prediction(classes[assign], score)


@ATTACKS.register("kmeans_hungarian")
class KMeansHungarianAttack(Attack):
    """k-means++ on normalised vectors, then clusters named by Hungarian matching to the known samples."""

    name = "kmeans_hungarian"

    def predict(self, vectors, reference, ctx):
        unit = normalise(vectors)
        generator = torch.Generator().manual_seed(ctx.seed)
        k = min(ctx.num_classes, len(unit))
        best = None
        # Restarts from fresh k-means++ draws; the lowest within-cluster sum of squares wins.
        for _ in range(ctx.kmeans_restarts):
            assign, centroids = kmeans(unit, kmeans_plus_plus(unit, k, generator=generator), iters=ctx.kmeans_iters)
            inertia = float(((unit - centroids[assign]) ** 2).sum())
            if best is None or inertia < best[0]:
                best = inertia, assign, centroids
        _, assign, centroids = best
        protos, classes = _class_prototypes(reference, ctx.num_classes, unit=True)
        cost = torch.cdist(centroids, protos).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        # Clusters left unmatched (fewer known classes than clusters) take their nearest class.
        name = classes[torch.as_tensor(cost.argmin(axis=1))].clone()
        name[torch.as_tensor(rows)] = classes[torch.as_tensor(cols)]
        score = None
        if ctx.num_classes == 2:
            score = _binary_score(torch.cdist(unit, centroids), name)
        return Prediction(name[assign], score)
