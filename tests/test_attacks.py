"""Attack math on vectors with a known answer, and the engine's contract."""

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adversary.attacks import ATTACKS, AttackContext, Reference
from adversary.attacks.cumulative import CumulativeAttacker
from adversary.attacks.similarity import distances, fit_pca, kmeans, kmeans_plus_plus, normalise, random_frame
from adversary.engine import AttackEngine
from splitleak.config import AttackSection


def _clusters(n_per=50, classes=4, dim=12, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    directions = normalise(torch.randn(classes, dim, generator=g))
    labels = torch.arange(classes).repeat_interleave(n_per)
    scale = torch.rand(len(labels), 1, generator=g) * 5 + 0.1  # norms vary: cosine must not care
    vectors = (directions[labels] + spread * torch.randn(len(labels), dim, generator=g)) * scale
    return vectors, labels


def _known(vectors, labels):
    rows = [int((labels == c).nonzero()[0]) for c in labels.unique()]
    return Reference(vectors[rows], labels[rows], "test"), rows


@pytest.mark.parametrize("name", ["distance", "prototype", "kmeans_seeded", "kmeans_hungarian"])
def test_similarity_attacks_recover_separated_classes(name):
    vectors, labels = _clusters()
    reference, _ = _known(vectors, labels)
    ctx = AttackContext(num_classes=4, measure="cosine", kmeans_iters=50, seed=0)
    prediction = ATTACKS.get(name)().predict(vectors, reference, ctx)
    assert (prediction.labels == labels).float().mean() == 1.0


def test_kmeans_hungarian_names_clusters_whatever_their_order():
    vectors, labels = _clusters(classes=5, seed=3)
    reference, _ = _known(vectors, labels)
    for seed in range(5):
        ctx = AttackContext(num_classes=5, measure="cosine", kmeans_iters=50, seed=seed, kmeans_restarts=5)
        assert torch.equal(ATTACKS.get("kmeans_hungarian")().predict(vectors, reference, ctx).labels, labels)


def test_unified_measure_is_cosine():
    """||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b)."""
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 5, generator=g), torch.randn(3, 5, generator=g)
    euclid = torch.cdist(normalise(a), normalise(b)) ** 2
    assert torch.allclose(euclid, 2 * distances(a, b, measure="cosine"), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 60), k=st.integers(1, 5))
def test_kmeans_keeps_every_centroid_and_is_deterministic(seed, n, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    init = kmeans_plus_plus(x, k, generator=torch.Generator().manual_seed(seed))
    again = kmeans_plus_plus(x, k, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(init, again) and init.shape == (k, 4)
    assign, centroids = kmeans(x, init, max_iters=20)
    assert centroids.shape == (k, 4) and assign.max() < k
    # Each point sits with its nearest centroid at convergence or the iteration cap.
    assert torch.isfinite(centroids).all()


def test_pca_frame_against_scikit_learn():
    """Randomized PCA spans the same top axes as scikit-learn's exact PCA, and is the same for the same seed."""
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(0)
    signal = torch.randn(500, 8, generator=g) @ torch.randn(8, 300, generator=g) * 3
    x = signal + 0.1 * torch.randn(500, 300, generator=g)
    frame = fit_pca(x, dim=8, seed=1, max_rows=10_000)
    assert torch.equal(frame.basis, fit_pca(x, dim=8, seed=1, max_rows=10_000).basis)
    theirs = torch.from_numpy(PCA(8, svd_solver="full").fit(x.numpy()).components_.T).float()
    # Same subspace: projecting scikit-learn's axes onto ours keeps their length.
    assert torch.allclose((frame.basis.T @ theirs).norm(dim=0), torch.ones(8), atol=1e-3)
    assert frame.project(x).shape == (500, 8)
    subsampled = fit_pca(x, dim=8, seed=1, max_rows=200)
    assert ((subsampled.basis.T @ theirs).norm(dim=0) > 0.99).all()


def test_random_frame_is_seeded():
    a, b = random_frame(300, 16, seed=3), random_frame(300, 16, seed=3)
    assert torch.equal(a.basis, b.basis) and a.project(torch.randn(4, 300)).shape == (4, 16)


def test_norm_and_direction_scoring_on_binary_gradients():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=g)
    labels = (torch.rand(200, generator=g) < 0.3).long()
    # Cross-entropy-like cut gradients: opposite directions per class, the rare class larger.
    scale = torch.where(labels == 1, 2.0, 0.5) * (0.5 + torch.rand(200, generator=g))
    grads = torch.where(labels[:, None] == 1, -1.0, 1.0) * w * scale[:, None]
    reference, _ = _known(grads, labels)
    ctx = AttackContext(num_classes=2, measure="cosine", kmeans_iters=10, seed=0)
    assert (ATTACKS.get("direction")().predict(grads, reference, ctx).labels == labels).all()
    norm = ATTACKS.get("norm")().predict(grads, reference, ctx)
    assert (norm.labels == labels).float().mean() > 0.8


def test_attack_signatures_cannot_receive_ground_truth():
    for name in ATTACKS:
        params = list(inspect.signature(ATTACKS.get(name)().predict).parameters)
        assert params == ["vectors", "reference", "ctx"], name
        if ATTACKS.get(name).data_kinds == ("both",):
            params = list(inspect.signature(ATTACKS.get(name)().predict_pair).parameters)
            assert params == ["grad", "smashed", "reference", "ctx"], name
    params = set(inspect.signature(AttackEngine.__init__).parameters)
    assert not {"labels", "ground_truth", "truth", "y"} & params


def test_engine_uses_known_samples_of_the_same_epoch():
    vectors, labels = _clusters(classes=3, n_per=30)
    ids = np.arange(len(labels)) * 7 + 1
    _, rows = _known(vectors, labels)
    engine = AttackEngine(AttackSection(), known_ids=ids[rows], known_labels=labels[rows].numpy(), num_classes=3)
    results = engine.train_epoch(0, ids, smashed=vectors, grad=vectors)
    by_key = {(r.attack, r.data): r for r in results}
    assert np.array_equal(by_key[("distance", "grad")].predictions, labels.numpy())
    assert "epoch 0" in by_key[("distance", "grad")].reference
    assert ("norm", "grad") not in by_key, "binary baselines do not run on a 3-class task"
    inference = engine.infer_end(ids[:10], vectors[:10])
    names = {r.attack for r in inference}
    assert {"distance", "kmeans_seeded", "train_centroids", "train_knn", "random"} == names
    known_ref = next(r for r in inference if r.attack == "distance").reference
    assert "training epoch 0" in known_ref, "without the side channel the proxy falls back to last-epoch smashed data"


def test_kmeans_on_unit_rows_needs_no_normalised_copy():
    """Scaled rows (scale = 1/|row|) give exactly what k-means on a normalised copy gives."""
    from adversary.attacks.similarity import unit_scale

    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 6, generator=g) * (torch.rand(300, 1, generator=g) * 10 + 0.1)
    unit = normalise(x)
    seeds_scaled = kmeans_plus_plus(x, 4, generator=torch.Generator().manual_seed(1), scale=unit_scale(x))
    seeds_copy = kmeans_plus_plus(unit, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(seeds_scaled, seeds_copy, atol=1e-6)
    scaled = kmeans(x, seeds_copy, max_iters=100, scale=unit_scale(x))
    copied = kmeans(unit, seeds_copy, max_iters=100)
    assert torch.equal(scaled[0], copied[0]) and torch.allclose(scaled[1], copied[1], atol=1e-5)


def _randomised_response(classes=5, n_per=120, keep=0.4, seed=0):
    """Smashed data that follow the true classes; gradients that follow labels kept with probability
    keep and otherwise drawn uniformly from the other classes (K-ary randomized response)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per)
    centres = 3.0 * torch.randn(classes, 8, generator=g)
    smashed = centres[labels] + torch.randn(len(labels), 8, generator=g)
    flip = torch.rand(len(labels), generator=g) >= keep
    other = (labels + torch.randint(1, classes, (len(labels),), generator=g)) % classes
    noisy = torch.where(flip, other, labels)
    directions = normalise(torch.randn(classes, 6, generator=g))
    grad = -(directions[noisy] + 0.05 * torch.randn(len(labels), 6, generator=g))
    return grad, smashed, labels, noisy


def test_cross_kmeans_reads_the_true_classes_through_randomised_labels():
    """The gradients carry the randomised labels (so does k-means on them); the smashed data predict the
    randomised label best where they predict the true one, so the regression recovers the true classes."""
    grad, smashed, labels, noisy = _randomised_response(n_per=300)
    reference, rows = _known(smashed, labels)
    ctx = AttackContext(num_classes=5, measure="cosine", kmeans_iters=100, seed=1, kmeans_restarts=3)
    on_grad = ATTACKS.get("kmeans_hungarian")().predict(grad, Reference(grad[rows], labels[rows], "t"), ctx)
    assert (noisy == labels).float().mean() < 0.45
    assert (on_grad.labels == labels).float().mean() < 0.6
    prediction = ATTACKS.get("cross_kmeans")().predict_pair(grad, smashed, reference, ctx)
    assert (prediction.labels == labels).float().mean() > 0.95
    assert prediction.scores is None


def test_cross_kmeans_is_ridge_regression_of_the_gradient_clusters_as_scikit_learn_fits_it():
    """The same clusters as kmeans_hungarian on the gradients (same seed and restarts), regressed on the
    smashed data by scikit-learn's Ridge (alpha = n times 0.1 of the mean variance per coordinate), the
    clusters named by SciPy's Hungarian matching on the known samples' mean predictions; each sample takes
    the cluster whose prediction rises most above the cluster's share."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.linear_model import Ridge

    from adversary.attacks.similarity import kmeans_restarted, unit_scale

    grad, smashed, labels, _ = _randomised_response(classes=4, keep=0.5, seed=2)
    reference, rows = _known(smashed, labels)
    ctx = AttackContext(num_classes=4, measure="cosine", kmeans_iters=100, seed=7, kmeans_restarts=2)
    clusters, _ = kmeans_restarted(
        grad, 4, restarts=2, generator=torch.Generator().manual_seed(7), max_iters=100, scale=unit_scale(grad)
    )
    x = smashed.double().numpy()
    indicators = np.eye(4)[clusters.numpy()]
    alpha = len(x) * 0.1 * x.var(axis=0).mean()
    model = Ridge(alpha=alpha).fit(x, indicators)
    # Each cluster's predicted indicator less its share of the epoch (the intercept cancels in the naming).
    known = model.predict(x[rows]) - indicators.mean(axis=0)
    gain = np.stack([known[labels[rows].numpy() == c].mean(axis=0) for c in range(4)], axis=1)
    cluster_of, class_of = linear_sum_assignment(-gain)
    name = np.empty(4, dtype=np.int64)
    name[cluster_of] = class_of
    expected = name[(model.predict(x) - indicators.mean(axis=0)).argmax(axis=1)]
    prediction = ATTACKS.get("cross_kmeans")().predict_pair(grad, smashed, reference, ctx)
    assert np.array_equal(prediction.labels.numpy(), expected)


def test_cross_kmeans_reads_a_cluster_that_is_small_beside_a_large_one():
    """Gradients that follow the true class in 3 of 10 samples and otherwise fall into class 0's cluster
    (clusters of very different sizes, as under mixup): the large cluster is predicted most for every
    sample, but each class's own cluster rises most above its share."""
    g = torch.Generator().manual_seed(6)
    labels = torch.arange(4).repeat_interleave(200)
    smashed = (3.0 * torch.randn(4, 8, generator=g))[labels] + torch.randn(len(labels), 8, generator=g)
    followed = torch.where(torch.rand(len(labels), generator=g) < 0.3, labels, torch.zeros_like(labels))
    directions = normalise(torch.randn(4, 6, generator=g))
    grad = -(directions[followed] + 0.05 * torch.randn(len(labels), 6, generator=g))
    assert (followed == 0).float().mean() > 0.7
    reference, _ = _known(smashed, labels)
    ctx = AttackContext(num_classes=4, measure="cosine", kmeans_iters=100, seed=0, kmeans_restarts=2)
    prediction = ATTACKS.get("cross_kmeans")().predict_pair(grad, smashed, reference, ctx)
    assert (prediction.labels == labels).float().mean() > 0.95


def test_cross_kmeans_scores_a_binary_task_for_auc():
    from sklearn.metrics import roc_auc_score

    grad, smashed, labels, _ = _randomised_response(classes=2, n_per=200, keep=0.7, seed=3)
    reference, _ = _known(smashed, labels)
    ctx = AttackContext(num_classes=2, measure="cosine", kmeans_iters=100, seed=0, kmeans_restarts=2)
    prediction = ATTACKS.get("cross_kmeans")().predict_pair(grad, smashed, reference, ctx)
    assert (prediction.labels == labels).float().mean() > 0.95
    assert roc_auc_score(labels.numpy(), prediction.scores.numpy()) > 0.95


def test_the_engine_runs_pair_attacks_at_epoch_ends_on_both_channels():
    grad, smashed, labels, _ = _randomised_response(classes=3, n_per=60, keep=0.6, seed=4)
    ids = np.arange(len(labels)) * 3 + 2
    _, rows = _known(smashed, labels)
    config = AttackSection(per_epoch=["distance", "cross_kmeans"])
    engine = AttackEngine(config, known_ids=ids[rows], known_labels=labels[rows].numpy(), num_classes=3)
    results = engine.train_epoch(0, ids, smashed=smashed, grad=grad)
    pair = next(r for r in results if r.attack == "cross_kmeans")
    assert pair.data == "both" and "epoch 0 smashed vectors of the known samples" in pair.reference
    assert (pair.predictions == labels.numpy()).mean() > 0.9
    assert not any(r.attack == "cross_kmeans" and r.data != "both" for r in results)
    with pytest.raises(TypeError, match="both channels"):
        ATTACKS.get("cross_kmeans")().predict(smashed, Reference(smashed[rows], labels[rows], "t"), None)


def test_cross_kmeans_reaches_the_cumulative_attacker_as_a_reading_only(monkeypatch):
    """Its labelling is handed to the cumulative attacker as a reading, never as a candidate, so where the
    attacker read no randomised labels (three classes: the check needs four) it labels alike with and
    without it."""
    grad, smashed, labels, _ = _randomised_response(classes=3, n_per=60, keep=0.5, seed=5)
    ids = np.arange(len(labels)) * 3 + 2
    _, rows = _known(smashed, labels)
    handed = []
    end_epoch = CumulativeAttacker.end_epoch

    def recorded(self, ids, candidates, epoch_vectors=None, readings=None):
        handed.append((sorted(candidates), sorted(readings or {})))
        return end_epoch(self, ids, candidates, epoch_vectors=epoch_vectors, readings=readings)

    monkeypatch.setattr(CumulativeAttacker, "end_epoch", recorded)
    outcome = {}
    for per_epoch in (["distance", "kmeans_seeded"], ["distance", "kmeans_seeded", "cross_kmeans"]):
        engine = AttackEngine(
            AttackSection(per_epoch=per_epoch), known_ids=ids[rows], known_labels=labels[rows].numpy(), num_classes=3
        )
        for epoch in range(2):
            results = engine.train_epoch(epoch, ids, smashed=smashed, grad=grad)
        assert not engine.cumulative.reads_randomised
        outcome[len(per_epoch)] = next(r for r in results if r.attack == "cumulative")
    assert np.array_equal(outcome[2].predictions, outcome[3].predictions)
    assert "cross_kmeans" not in outcome[3].reference
    assert handed[-1][1] == ["cross_kmeans.both"] and not any("cross_kmeans" in name for name in handed[-1][0])
    assert handed[0][1] == []
