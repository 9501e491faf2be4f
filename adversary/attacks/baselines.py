"""Baselines logged beside the similarity attacks: norm and direction scoring
(Li et al., ICLR 2022, binary tasks) and a random guess."""

from __future__ import annotations

import torch

from adversary.attacks.base import ATTACKS, Attack, Prediction
from adversary.attacks.similarity import normalise, unit_scale

__all__ = ["DirectionScoring", "NormScoring", "RandomGuess"]


def _orient(scores: torch.Tensor, reference_scores: torch.Tensor, reference_labels: torch.Tensor) -> Prediction:
    """Returns predictions thresholding scores midway between the known classes' mean scores.

    The known samples tell which side is class 1; the score is flipped so that it grows with class 1.
    """
    m0 = reference_scores[reference_labels == 0].mean()
    m1 = reference_scores[reference_labels == 1].mean()
    sign = 1.0 if m1 >= m0 else -1.0
    threshold = (m0 + m1) / 2
    oriented = sign * (scores - threshold)
    return Prediction((oriented > 0).long(), oriented)


@ATTACKS.register("norm")
class NormScoring(Attack):
    """Binary: the gradient norm separates the classes (the rarer class gets larger gradients)."""

    name = "norm"
    data_kinds = ("grad",)
    binary_only = True

    def predict(self, vectors, reference, ctx):
        return _orient(vectors.norm(dim=1), reference.vectors.norm(dim=1), reference.labels)


@ATTACKS.register("direction")
class DirectionScoring(Attack):
    """Binary: gradients of the same class point the same way; cosine to a known class-1 gradient."""

    name = "direction"
    data_kinds = ("grad",)
    binary_only = True

    def predict(self, vectors, reference, ctx):
        anchor = normalise(reference.vectors[reference.labels == 1].mean(dim=0, keepdim=True))
        cos = (vectors @ anchor.T).squeeze(1) * unit_scale(vectors)
        return Prediction((cos > 0).long(), cos)


@ATTACKS.register("random")
class RandomGuess(Attack):
    """A uniform random guess over the classes: the floor every attack must beat."""

    name = "random"
    data_kinds = ("none",)
    reference_kind = "none"

    def predict(self, vectors, reference, ctx):
        generator = torch.Generator().manual_seed(ctx.seed)
        labels = torch.randint(ctx.num_classes, (len(vectors),), generator=generator)
        score = torch.rand(len(vectors), generator=generator) if ctx.num_classes == 2 else None
        return Prediction(labels, score)
