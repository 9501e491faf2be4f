"""Both k-means attacks against scikit-learn's KMeans, on real data (scikit-learn's digits)."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from adversary.attacks import ATTACKS, AttackContext, Reference
from adversary.attacks.similarity import kmeans, kmeans_plus_plus, normalise


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = normalise(torch.from_numpy(data.data.astype(np.float32)))
    return x, torch.from_numpy(data.target)


def _inertia(x: torch.Tensor, assign: torch.Tensor, centroids: torch.Tensor) -> float:
    return float(((x - centroids[assign]) ** 2).sum())


def test_seeded_kmeans_gives_scikit_learns_labels_from_the_same_centroids(digits):
    x, y = digits
    known_rows = [int((y == c).nonzero()[0]) for c in range(10)]
    reference = Reference(x[known_rows], y[known_rows], "test")
    ctx = AttackContext(num_classes=10, measure="cosine", kmeans_iters=300, seed=0, kmeans_tol=1e-4)
    ours = ATTACKS.get("kmeans_seeded")().predict(x, reference, ctx).labels
    seeds = normalise(x[known_rows])
    theirs = KMeans(10, init=seeds.numpy(), n_init=1, max_iter=300, tol=1e-4).fit(x.numpy())
    # Cluster j was seeded at class j's known sample, so scikit-learn's cluster index is the class.
    assert np.array_equal(ours.numpy(), theirs.labels_)
    assert (ours == y).float().mean() > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_from_kmeans_plus_plus_gives_scikit_learns_labels(digits, seed):
    x, _ = digits
    init = kmeans_plus_plus(x, 10, generator=torch.Generator().manual_seed(seed))
    assign, centroids = kmeans(x, init, max_iters=300, tol=0.0)
    theirs = KMeans(10, init=init.numpy(), n_init=1, max_iter=300, tol=0.0).fit(x.numpy())
    assert np.array_equal(assign.numpy(), theirs.labels_)
    assert _inertia(x, assign, centroids) == pytest.approx(theirs.inertia_, rel=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_kmeans_plus_plus_finds_partitions_as_good_as_scikit_learns(digits, seed):
    x, _ = digits
    generator = torch.Generator().manual_seed(seed)
    restarts = 5
    ours = min(
        _inertia(x, *kmeans(x, kmeans_plus_plus(x, 10, generator=generator), max_iters=300)) for _ in range(restarts)
    )
    theirs = KMeans(10, init="k-means++", n_init=restarts, random_state=seed).fit(x.numpy()).inertia_
    assert ours <= theirs * 1.01


def test_kmeans_hungarian_clusters_are_the_best_of_its_restarts(digits):
    """The attack keeps its lowest-inertia restart: its partition is scikit-learn-grade too."""
    x, y = digits
    known_rows = [int((y == c).nonzero()[0]) for c in range(10)]
    reference = Reference(x[known_rows], y[known_rows], "test")
    ctx = AttackContext(num_classes=10, measure="cosine", kmeans_iters=300, seed=3, kmeans_restarts=5)
    labels = ATTACKS.get("kmeans_hungarian")().predict(x, reference, ctx).labels
    centroids = torch.stack([x[labels == c].mean(dim=0) for c in labels.unique()])
    relabel = {int(c): i for i, c in enumerate(labels.unique())}
    assign = torch.as_tensor([relabel[int(c)] for c in labels])
    theirs = KMeans(10, init="k-means++", n_init=5, random_state=3).fit(x.numpy()).inertia_
    assert _inertia(x, assign, centroids) <= theirs * 1.01
