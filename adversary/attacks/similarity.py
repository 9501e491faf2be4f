"""Pure math of the similarity attacks: frames (PCA, random projection), normalisation, distances, k-means.

On L2-normalised vectors, ||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b): cosine
similarity on gradients and Euclidean distance on smashed data become one
Euclidean measure, so one k-means and one nearest-neighbour serve both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Frame",
    "distances",
    "fit_pca",
    "kmeans",
    "kmeans_plus_plus",
    "normalise",
    "random_frame",
    "squared_distances",
]


@dataclass(frozen=True)
class Frame:
    """A linear map to fewer dimensions: x -> (x - mean) @ basis. PCA axes, or a random projection."""

    mean: torch.Tensor
    basis: torch.Tensor
    # "pca" (fitted on an epoch's vectors) or "random" (a seeded Johnson-Lindenstrauss projection).
    kind: str

    @property
    def width(self) -> int:
        return self.basis.shape[0]

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """Returns vectors (rows) in this frame; the subtraction and product keep one extra copy at most."""
        return (vectors - self.mean) @ self.basis


def fit_pca(vectors: torch.Tensor, *, dim: int, seed: int, max_rows: int) -> Frame:
    """Returns the top `dim` principal axes of vectors, by seeded randomized SVD (Halko et al. 2011).

    At most max_rows rows (drawn by the seed) are used for the fit: the axes of a large sample are
    those of the whole. The same input and seed give the same axes, live and in replay.
    """
    n, width = vectors.shape
    generator = torch.Generator().manual_seed(seed)
    rows = vectors
    if n > max_rows:
        pick = torch.randperm(n, generator=generator)[:max_rows].sort().values
        rows = vectors[pick.to(vectors.device)]
    mean = rows.mean(dim=0, keepdim=True)
    k = min(dim, width, len(rows))
    devices = [vectors.device] if vectors.device.type == "cuda" else []
    # svd_lowrank draws its test matrix from the global generator: seed it without disturbing anyone else's.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(rows - mean, q=min(k + 10, width, len(rows)), niter=4)
    return Frame(mean, v[:, :k].contiguous(), "pca")


def random_frame(width: int, dim: int, *, seed: int, device: torch.device | str = "cpu") -> Frame:
    """Returns a seeded Gaussian projection to dim dimensions (distances kept, Johnson-Lindenstrauss); no fit needed."""
    generator = torch.Generator().manual_seed(seed * 7_919 + width)
    basis = torch.randn(width, dim, generator=generator) / math.sqrt(dim)
    return Frame(torch.zeros(1, width, device=device), basis.to(device), "random")


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
