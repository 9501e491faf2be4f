"""Liu et al.'s similarity attacks: distance, prototype and two clustering variants."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from adversary.attacks.base import ATTACKS, Attack, Prediction, Reference
from adversary.attacks.similarity import (
    distances,
    kmeans,
    kmeans_restarted,
    name_by_known,
    nearest_centroid,
    normalise,
    squared_distances,
    unit_scale,
)

__all__ = [
    "DistanceAttack",
    "KMeansHungarianAttack",
    "KMeansSeededAttack",
    "PrototypeAttack",
    "TrackingAttack",
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


def _nearest(vectors: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, ctx) -> Prediction:
    """Returns each row's label of its nearest target (by ctx.measure), with binary scores on binary tasks."""
    if ctx.num_classes == 2:
        dist = distances(vectors, targets, measure=ctx.measure)
        return Prediction(labels[dist.argmin(dim=1)], _binary_score(dist, labels))
    if ctx.measure == "cosine":
        # The most similar target: a row's own norm does not change which one it is.
        return Prediction(labels[(vectors @ normalise(targets).T).argmax(dim=1)])
    return Prediction(labels[nearest_centroid(vectors, targets)])


@ATTACKS.register("distance")
class DistanceAttack(Attack):
    """Each sample takes the label of its most similar known sample (1-NN)."""

    name = "distance"

    def predict(self, vectors, reference, ctx):
        return _nearest(vectors, reference.vectors, reference.labels, ctx)


@ATTACKS.register("prototype")
class PrototypeAttack(Attack):
    """Each sample takes the label of the nearest class prototype (mean of the class's reference vectors)."""

    name = "prototype"

    def predict(self, vectors, reference, ctx):
        protos, classes = _class_prototypes(reference, ctx.num_classes, unit=ctx.measure == "cosine")
        return _nearest(vectors, protos, classes, ctx)


@ATTACKS.register("tracking")
class TrackingAttack(PrototypeAttack):
    """Per round: nearest class prototype, prototypes tracked over recent rounds (they follow the model).

    The prototypes are means of recent rounds' vectors grouped by the cumulative attacker's current
    labels and seeded by the known samples, so a batch is compared with vectors of nearly the same
    model rather than with a known sample's vector from many rounds ago.
    """

    name = "tracking"
    reference_kind = "tracked"


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
    """k-means (k = classes) on normalised vectors, centroids seeded at the known class prototypes;
    each cluster is then named by the known samples it holds."""

    name = "kmeans_seeded"

    def predict(self, vectors, reference, ctx):
        scale = unit_scale(vectors)
        seeds, classes = _class_prototypes(reference, ctx.num_classes, unit=True)
        assign, centroids = kmeans(vectors, seeds, max_iters=ctx.kmeans_iters, tol=ctx.kmeans_tol, scale=scale)
        known_assign = squared_distances(normalise(reference.vectors), centroids).argmin(dim=1)
        names = name_by_known(known_assign.cpu(), reference.labels.cpu(), classes.cpu()).to(assign.device)
        score = None
        if ctx.num_classes == 2:
            score = _binary_score(squared_distances(vectors, centroids, scale=scale), names)
        return Prediction(names[assign], score)


@ATTACKS.register("kmeans_hungarian")
class KMeansHungarianAttack(Attack):
    """k-means++ on normalised vectors, then clusters named by Hungarian matching to the known samples."""

    name = "kmeans_hungarian"

    @staticmethod
    def clusters(vectors: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (assignments, centroids): k-means++ with ctx's seed, restarts and tolerance, k = classes.

        cross_kmeans clusters the gradients through this too, so both attacks see the same clusters.
        """
        generator = torch.Generator().manual_seed(ctx.seed)
        return kmeans_restarted(
            vectors,
            min(ctx.num_classes, len(vectors)),
            restarts=ctx.kmeans_restarts,
            generator=generator,
            max_iters=ctx.kmeans_iters,
            tol=ctx.kmeans_tol,
            scale=unit_scale(vectors),
        )

    def predict(self, vectors, reference, ctx):
        scale = unit_scale(vectors)
        assign, centroids = self.clusters(vectors, ctx)
        protos, classes = _class_prototypes(reference, ctx.num_classes, unit=True)
        cost = torch.cdist(centroids, protos).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        # Clusters left unmatched (fewer known classes than clusters) take their nearest class.
        name = classes[torch.as_tensor(cost.argmin(axis=1))].clone()
        name[torch.as_tensor(rows)] = classes[torch.as_tensor(cols)]
        score = None
        if ctx.num_classes == 2:
            score = _binary_score(squared_distances(vectors, centroids, scale=scale), name)
        return Prediction(name[assign], score)
