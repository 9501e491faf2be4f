"""Pure math of the similarity attacks: PCA, normalisation, distances, k-means.

On L2-normalised vectors, ||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b): cosine
similarity on gradients and Euclidean distance on smashed data become one
Euclidean measure, so one k-means and one nearest-neighbour serve both.
"""

from __future__ import annotations

import math

import torch

__all__ = ["distances", "kmeans", "kmeans_plus_plus", "normalise", "reduce_dim", "squared_distances"]


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


def squared_distances(vectors: torch.Tensor, centroids: torch.Tensor, sq_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the (len(vectors), len(centroids)) matrix of squared Euclidean distances, by one matrix product."""
    if sq_norms is None:
        sq_norms = (vectors * vectors).sum(dim=1)
    d = sq_norms[:, None] - 2.0 * (vectors @ centroids.T) + (centroids * centroids).sum(dim=1)[None, :]
    return d.clamp_min_(0.0)


def kmeans_plus_plus(vectors: torch.Tensor, k: int, *, generator: torch.Generator) -> torch.Tensor:
    """Returns k initial centroids drawn by greedy k-means++ with a seeded (CPU) generator.

    As scikit-learn's KMeans seeds (Arthur and Vassilvitskii 2007, greedy
    variant): each new centre is the best of 2 + ln(k) candidates drawn with
    probability proportional to the squared distance to the nearest centre so
    far, "best" meaning the lowest potential (sum of squared distances) after
    adding it.
    """
    n = vectors.shape[0]
    trials = 2 + int(math.log(k)) if k > 1 else 1
    sq_norms = (vectors * vectors).sum(dim=1)
    first = int(torch.randint(n, (1,), generator=generator).item())
    chosen = [first]
    closest = squared_distances(vectors, vectors[first : first + 1], sq_norms).squeeze(1)
    potential = closest.sum()
    for _ in range(1, k):
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(vectors.device) * potential.double()
        cumulative = torch.cumsum(closest.double(), dim=0)
        candidates = torch.searchsorted(cumulative, draws).clamp_(max=n - 1)
        to_candidates = squared_distances(vectors[candidates], vectors, sq_norms[candidates])
        to_candidates = torch.minimum(to_candidates, closest[None, :])
        potentials = to_candidates.sum(dim=1)
        best = int(potentials.argmin())
        chosen.append(int(candidates[best]))
        closest, potential = to_candidates[best], potentials[best]
    return vectors[torch.as_tensor(chosen, device=vectors.device)].clone()


def kmeans(
    vectors: torch.Tensor, centroids: torch.Tensor, *, max_iters: int, tol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (assignments, centroids) after Lloyd iterations from the given centroids, run to convergence.

    Stops when no assignment changes, or when the centroids move less than tol
    times the data's mean per-feature variance (total squared shift), as
    scikit-learn's KMeans does; max_iters only guards against a run that never
    settles. A cluster that loses all its members keeps its previous centroid,
    so cluster i stays tied to whatever seeded it (scikit-learn relocates it
    instead; seeded naming needs it kept).
    """
    centroids = centroids.clone()
    sq_norms = (vectors * vectors).sum(dim=1)
    threshold = tol * float(vectors.var(dim=0, unbiased=False).mean()) if len(vectors) > 1 else 0.0
    assign = squared_distances(vectors, centroids, sq_norms).argmin(dim=1)
    for _ in range(max_iters):
        counts = torch.bincount(assign, minlength=len(centroids)).to(vectors.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        filled = counts > 0
        previous = centroids.clone()
        centroids[filled] = sums[filled] / counts[filled, None]
        new_assign = squared_distances(vectors, centroids, sq_norms).argmin(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        if float(((centroids - previous) ** 2).sum()) <= threshold:
            break
    return assign, centroids
