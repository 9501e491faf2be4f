"""Pure math of the similarity attacks: frames (PCA, random projection), normalisation, distances, k-means.

On L2-normalised vectors, ||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b): cosine
similarity on gradients and Euclidean distance on smashed data become one
Euclidean measure, so one k-means and one nearest-neighbour serve both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "Frame",
    "distances",
    "fit_pca",
    "kmeans",
    "kmeans_plus_plus",
    "kmeans_restarted",
    "name_by_known",
    "nearest_centroid",
    "normalise",
    "random_frame",
    "RidgeFit",
    "ridge_fit",
    "squared_distances",
    "unit_scale",
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
        """Returns vectors (rows) in this frame, without a centred copy of the wide vectors."""
        return vectors @ self.basis - self.mean @ self.basis


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
    centred = rows - mean
    # Randomized range finder with power iterations: the test matrix is drawn on the CPU from the seed,
    # so a GPU and a CPU fit the same axes (up to float rounding).
    sketch = min(k + 10, width, len(rows))
    test = torch.randn(width, sketch, generator=generator).to(vectors.device, vectors.dtype)
    basis, _ = torch.linalg.qr(centred @ test)
    for _ in range(4):
        basis, _ = torch.linalg.qr(centred.T @ basis)
        basis, _ = torch.linalg.qr(centred @ basis)
    _, _, vh = torch.linalg.svd(basis.T @ centred, full_matrices=False)
    return Frame(mean, vh[:k].T.contiguous(), "pca")


def random_frame(width: int, dim: int, *, seed: int, device: torch.device | str = "cpu") -> Frame:
    """Returns a seeded Gaussian projection to dim dimensions (distances kept, Johnson-Lindenstrauss); no fit needed."""
    generator = torch.Generator().manual_seed(seed * 7_919 + width)
    basis = torch.randn(width, dim, generator=generator) / math.sqrt(dim)
    return Frame(torch.zeros(1, width, device=device), basis.to(device), "random")


# The ridge of the regressions of gradients (or their clusters) on the smashed data (cross_channel,
# cross_kmeans), relative to the smashed data's mean variance per coordinate.
CROSS_RIDGE = 0.1


@dataclass(frozen=True)
class RidgeFit:
    """A ridge regression of targets on vectors, both centred: predict(x) = (x - x_mean) B + y_mean."""

    coefficients: torch.Tensor  # float64, (width of x, width of y)
    x_mean: torch.Tensor
    y_mean: torch.Tensor

    def centred(self, vectors: torch.Tensor) -> torch.Tensor:
        """Returns the fitted values without the targets' mean, (x - x_mean) B, in float64."""
        return (vectors - self.x_mean).double() @ self.coefficients

    def predict(self, vectors: torch.Tensor) -> torch.Tensor:
        """Returns the fitted values (x - x_mean) B + y_mean, in float64."""
        return self.centred(vectors) + self.y_mean.double()


def ridge_fit(vectors: torch.Tensor, targets: torch.Tensor, *, ridge: float) -> RidgeFit | None:
    """Returns the ridge regression of targets on vectors, or None when the vectors do not vary.

    B = (X'X / n + r I)^-1 X'Y / n on the centred rows, with r = ridge times the mean variance per
    coordinate of X: scikit-learn's Ridge with alpha = n r and an intercept fits the same.
    """
    x_mean, y_mean = vectors.mean(dim=0), targets.mean(dim=0)
    x = (vectors - x_mean).double()
    y = (targets - y_mean).double()
    n, width = x.shape
    covariance = x.T @ x / n
    variance = float(torch.trace(covariance)) / width
    if variance <= 0:
        return None
    eye = torch.eye(width, dtype=covariance.dtype, device=covariance.device)
    coefficients = torch.linalg.solve(covariance + ridge * variance * eye, x.T @ y / n)
    return RidgeFit(coefficients, x_mean, y_mean)


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """Returns the rows scaled to unit L2 norm (zero rows stay zero)."""
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)


def unit_scale(vectors: torch.Tensor) -> torch.Tensor:
    """Returns 1/|row| for every row (0 for zero rows): rows times it are unit vectors, never materialised."""
    norms = torch.linalg.vector_norm(vectors, dim=1)
    return torch.where(norms > 0, 1.0 / norms.clamp_min(1e-30), torch.zeros_like(norms))


# Rows per chunk of the centroid update (its membership matrix is classes x rows).
CHUNK_ROWS = 262_144
# k-means scales rows to unit length in a copy when the copy is at most this large; beyond, on the fly.
SCALED_COPY_BYTES = 64 * 2**20


def _scaled_sums(vectors: torch.Tensor, assign: torch.Tensor, k: int, scale: torch.Tensor | None) -> torch.Tensor:
    """Returns the (k, d) sums of the (scaled) rows of each cluster: one (k, n) @ (n, d) product, a chunk of
    rows at a time (a matrix product runs on every core; a scatter-add on one)."""
    sums = torch.zeros(k, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    for start in range(0, len(vectors), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        members = torch.zeros(k, len(vectors[rows]), dtype=vectors.dtype, device=vectors.device)
        weights = torch.ones_like(members[0]) if scale is None else scale[rows]
        members.scatter_(0, assign[rows][None, :], weights[None, :])
        sums.addmm_(members, vectors[rows])
    return sums


def distances(a: torch.Tensor, b: torch.Tensor, *, measure: str) -> torch.Tensor:
    """Returns the (len(a), len(b)) matrix of distances: "cosine" (as 1 - cos) or "euclidean"."""
    if measure == "cosine":
        return 1.0 - (a @ normalise(b).T) * unit_scale(a)[:, None]
    if measure == "euclidean":
        return squared_distances(a, b).sqrt_()
    raise ValueError(f"unknown measure {measure!r}; known: cosine, euclidean")


def squared_distances(
    vectors: torch.Tensor,
    centroids: torch.Tensor,
    sq_norms: torch.Tensor | None = None,
    *,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Returns the (len(vectors), len(centroids)) matrix of squared Euclidean distances, by one matrix product.

    With scale, row i is taken as vectors[i] * scale[i] (e.g. unit_scale: cosine geometry) without a
    scaled copy; sq_norms, when given, are the squared norms of the rows so taken.
    """
    products = vectors @ centroids.T
    if scale is not None:
        products.mul_(scale[:, None])
    if sq_norms is None:
        sq_norms = torch.linalg.vector_norm(vectors, dim=1).square()
        if scale is not None:
            sq_norms = sq_norms * scale.square()
    d = products.mul_(-2.0).add_(sq_norms[:, None]).add_((centroids * centroids).sum(dim=1)[None, :])
    return d.clamp_min_(0.0)


def nearest_centroid(
    vectors: torch.Tensor, centroids: torch.Tensor, *, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Returns each row's nearest centroid (rows taken as vectors * scale when given): the argmax of
    x.c - |c|^2 / 2, one fused product, needing neither the rows' norms nor their squared distances."""
    half = (centroids * centroids).sum(dim=1)[None, :] * -0.5
    if scale is None:
        return torch.addmm(half, vectors, centroids.T).argmax(dim=1)
    return (vectors @ centroids.T).mul_(scale[:, None]).add_(half).argmax(dim=1)


def kmeans_plus_plus(
    vectors: torch.Tensor, k: int, *, generator: torch.Generator, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Returns k initial centroids drawn by greedy k-means++ with a seeded (CPU) generator.

    As scikit-learn's KMeans seeds (Arthur and Vassilvitskii 2007, greedy
    variant): each new centre is the best of 2 + ln(k) candidates drawn with
    probability proportional to the squared distance to the nearest centre so
    far, "best" meaning the lowest potential (sum of squared distances) after
    adding it. With scale, rows are taken as vectors * scale (see squared_distances).
    """
    n = vectors.shape[0]
    trials = 2 + int(math.log(k)) if k > 1 else 1
    sq_norms = torch.linalg.vector_norm(vectors, dim=1).square()
    if scale is not None:
        sq_norms = sq_norms * scale.square()

    def rows(index: torch.Tensor) -> torch.Tensor:
        picked = vectors[index]
        return picked if scale is None else picked * scale[index, None]

    first = int(torch.randint(n, (1,), generator=generator).item())
    chosen = [first]
    closest = squared_distances(vectors, rows(torch.tensor([first], device=vectors.device)), sq_norms, scale=scale)
    closest = closest.squeeze(1)
    potential = closest.sum()
    for _ in range(1, k):
        draws = torch.rand(trials, generator=generator, dtype=torch.float64).to(vectors.device) * potential.double()
        cumulative = torch.cumsum(closest.double(), dim=0)
        candidates = torch.searchsorted(cumulative, draws).clamp_(max=n - 1)
        to_candidates = squared_distances(vectors, rows(candidates), sq_norms, scale=scale).T
        to_candidates = torch.minimum(to_candidates, closest[None, :])
        potentials = to_candidates.sum(dim=1)
        best = int(potentials.argmin())
        chosen.append(int(candidates[best]))
        closest, potential = to_candidates[best].contiguous(), potentials[best]
    return rows(torch.as_tensor(chosen, device=vectors.device)).clone()


def kmeans(
    vectors: torch.Tensor,
    centroids: torch.Tensor,
    *,
    max_iters: int,
    tol: float = 1e-4,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (assignments, centroids) after Lloyd iterations from the given centroids, run to convergence.

    Stops when no assignment changes, or when the centroids move less than tol
    times the data's mean per-feature variance (total squared shift), as
    scikit-learn's KMeans does; max_iters only guards against a run that never
    settles. A cluster that loses all its members keeps its previous centroid,
    so cluster i stays tied to whatever seeded it (scikit-learn relocates it
    instead; seeded naming needs it kept). With scale, rows are taken as
    vectors * scale (unit_scale: k-means on unit vectors) without a scaled copy.
    """
    if scale is not None and vectors.numel() * vectors.element_size() <= SCALED_COPY_BYTES:
        # Small enough to scale once: every step then skips the per-row scaling.
        vectors, scale = vectors * scale[:, None], None
    centroids = centroids.clone()
    n = len(vectors)
    sq_norms = torch.linalg.vector_norm(vectors, dim=1).square()
    if scale is not None:
        sq_norms = sq_norms * scale.square()
    threshold = 0.0
    if n > 1:
        weights = torch.ones(n, dtype=vectors.dtype, device=vectors.device) if scale is None else scale
        mean = (weights[None, :] @ vectors) / n
        threshold = tol * float((sq_norms.sum() / n - (mean * mean).sum()) / vectors.shape[1])
    k = len(centroids)
    assign = nearest_centroid(vectors, centroids, scale=scale)
    for _ in range(max_iters):
        counts = torch.bincount(assign, minlength=k).to(vectors.dtype)
        sums = _scaled_sums(vectors, assign, k, scale)
        filled = counts > 0
        previous = centroids.clone()
        centroids[filled] = sums[filled] / counts[filled, None]
        new_assign = nearest_centroid(vectors, centroids, scale=scale)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        if float(((centroids - previous) ** 2).sum()) <= threshold:
            break
    return assign, centroids


def kmeans_restarted(
    vectors: torch.Tensor,
    k: int,
    *,
    restarts: int,
    generator: torch.Generator,
    max_iters: int,
    tol: float = 1e-4,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (assignments, centroids) of the best of `restarts` k-means runs, each from a fresh k-means++
    draw: the lowest within-cluster sum of squares wins (scikit-learn's n_init)."""
    best = None
    for _ in range(restarts):
        seeds = kmeans_plus_plus(vectors, k, generator=generator, scale=scale)
        assign, centroids = kmeans(vectors, seeds, max_iters=max_iters, tol=tol, scale=scale)
        inertia = float(squared_distances(vectors, centroids, scale=scale).gather(1, assign[:, None]).sum())
        if best is None or inertia < best[0]:
            best = inertia, assign, centroids
    return best[1], best[2]


def name_by_known(assign_known: torch.Tensor, known_labels: torch.Tensor, seed_classes: torch.Tensor) -> torch.Tensor:
    """Returns the class name of each cluster: the class whose known samples it holds most of.

    Cluster j was seeded by seed_classes[j]; that naming breaks ties, so it
    changes only when the known samples themselves say otherwise (e.g. two
    known samples that converged into each other's clusters swap the names:
    an inverted labelling the attacker recognises by itself).
    """
    k = len(seed_classes)
    held = torch.zeros(k, k)
    column = {int(c): i for i, c in enumerate(seed_classes.tolist())}
    for cluster, label in zip(assign_known.tolist(), known_labels.tolist()):
        if int(label) in column:
            held[cluster, column[int(label)]] += 1.0
    held += 0.5 * torch.eye(k)
    rows, cols = linear_sum_assignment(-held.numpy())
    names = seed_classes.clone()
    names[torch.as_tensor(rows)] = seed_classes[torch.as_tensor(cols)]
    return names
