"""Pure math of the similarity attacks: PCA, normalisation, distances, k-means.

On L2-normalised vectors, ||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b): cosine
similarity on gradients and Euclidean distance on smashed data become one
Euclidean measure, so one k-means and one nearest-neighbour serve both.
"""

from __future__ import annotations

import torch

__all__ = ["distances", "kmeans", "kmeans_plus_plus", "normalise", "reduce_dim"]


def reduce_dim(
    vectors: torch.Tensor, others: list[torch.Tensor], *, above: int, dim: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Returns vectors and others projected on vectors' top `dim` principal axes when wider than `above`."""
    if vectors.shape[1] <= above or dim >= vectors.shape[1]:
        return vectors, others
    mean = vectors.mean(dim=0, keepdim=True)
    # Full SVD rather than a randomised one: the same input gives the same axes, live and offline.
    _, _, vh = torch.linalg.svd(vectors - mean, full_matrices=False)
    basis = vh[:dim].T
    return (vectors - mean) @ basis, [(o - mean) @ basis for o in others]


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """Returns the rows scaled to unit L2 norm (zero rows stay zero)."""
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)


def distances(a: torch.Tensor, b: torch.Tensor, *, measure: str) -> torch.Tensor:
    """Returns the (len(a), len(b)) matrix of distances: "cosine" (as 1 - cos) or "euclidean"."""
    if measure == "cosine":
        return 1.0 - normalise(a) @ normalise(b).T
    if measure == "euclidean":
        return torch.cdist(a, b)
    raise ValueError(f"unknown measure {measure!r}; known: cosine, euclidean")


def kmeans_plus_plus(vectors: torch.Tensor, k: int, *, generator: torch.Generator) -> torch.Tensor:
    """Returns k initial centroids drawn by k-means++ with a seeded generator."""
    n = vectors.shape[0]
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centroids = [vectors[first]]
    closest = torch.cdist(vectors, vectors[first : first + 1]).squeeze(1) ** 2
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            pick = torch.randint(n, (1,), generator=generator, device="cpu").item()
        else:
            pick = torch.multinomial((closest / total).cpu(), 1, generator=generator).item()
        centroids.append(vectors[pick])
        closest = torch.minimum(closest, torch.cdist(vectors, vectors[pick : pick + 1]).squeeze(1) ** 2)
    return torch.stack(centroids)


def kmeans(vectors: torch.Tensor, centroids: torch.Tensor, *, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (assignments, centroids) after Lloyd iterations from the given centroids.

    A cluster that loses all its members keeps its previous centroid, so
    cluster i stays tied to whatever seeded it.
    """
    centroids = centroids.clone()
    assign = torch.cdist(vectors, centroids).argmin(dim=1)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=len(centroids)).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        new_assign = torch.cdist(vectors, centroids).argmin(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return assign, centroids
