"""`splitleak bench attacks --synthetic N,D,K`: every epoch-end attack at a chosen scale, beside a
reference implementation of the same computation, in one run.

The vectors are class-structured like a cut's: gradient-like rows point along one
direction per class with noise and norms that vary; smashed-like rows scatter
around one mean per class. One labelled sample per class is the attacker's
prior knowledge. Our attacks run as the live engine runs them (the PCA fit of the
epoch included); each reference runs on the same vectors and, for k-means, from the
same initial centroids: scikit-learn's PCA and KMeans, and NumPy/BLAS for the
nearest-prototype attacks. Our attacks all run before any reference, so the peak
RSS beside each of ours is ours alone.
"""

from __future__ import annotations

import resource
import statistics
import time

import numpy as np
import torch

__all__ = ["synthetic_vectors", "bench_synthetic"]


def synthetic_vectors(n: int, d: int, k: int, *, seed: int, kind: str) -> tuple[torch.Tensor, np.ndarray]:
    """Returns (vectors (n, d) float32, labels): class-structured rows, made in place to keep memory at one copy."""
    # The labels are the same for every kind (a sample's gradient and smashed data share its class).
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    generator = torch.Generator().manual_seed(seed * 2 + 1 + (kind == "smashed"))
    centres = torch.randn(k, d, generator=generator)
    centres *= 4.0 / centres.norm(dim=1, keepdim=True)
    vectors = torch.empty(n, d)
    chunk = max(1, 2**21 // d)  # rows of about 8 MB
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        block = torch.randn(min(chunk, n - start), d, generator=generator) * (1.0 / d**0.5) * 2.0
        block += centres[labels[rows]] / 4.0
        if kind == "grad":
            block *= torch.rand(len(block), 1, generator=generator) * 5 + 0.1
        vectors[rows] = block
    return vectors, labels.numpy()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reference(
    name: str, data: str, reduced: torch.Tensor, known: np.ndarray, known_labels: np.ndarray, ctx, engine_seed
):
    """Returns (reference name, seconds, predictions or None) of the reference computation of one attack."""
    from sklearn.cluster import KMeans

    from adversary.attacks.similarity import kmeans_plus_plus, normalise

    x = reduced.cpu().numpy()
    start = time.perf_counter()
    if name in ("distance", "prototype"):
        # One known sample per class: the class prototype is that sample; nearest by cosine or Euclid.
        refs = x[known]
        if data == "grad":
            refs = refs / np.linalg.norm(refs, axis=1, keepdims=True)
            nearest = np.argmax(x @ refs.T, axis=1)
        else:
            sq = (refs * refs).sum(axis=1)[None, :] - 2.0 * (x @ refs.T)
            nearest = np.argmin(sq, axis=1)
        return "numpy BLAS nearest prototype", time.perf_counter() - start, known_labels[nearest]
    if name == "kmeans_seeded":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        seeds = unit[known]
        fitted = KMeans(len(known), init=seeds, n_init=1, max_iter=ctx.kmeans_iters, tol=ctx.kmeans_tol).fit(unit)
        return "scikit-learn KMeans, same seeds", time.perf_counter() - start, known_labels[fitted.labels_]
    if name == "kmeans_hungarian":
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        generator = torch.Generator().manual_seed(engine_seed)
        best = None
        tensor = torch.from_numpy(unit)
        for _ in range(ctx.kmeans_restarts):
            init = kmeans_plus_plus(tensor, len(known), generator=generator).numpy()
            fitted = KMeans(len(known), init=init, n_init=1, max_iter=ctx.kmeans_iters, tol=ctx.kmeans_tol).fit(unit)
            if best is None or fitted.inertia_ < best.inertia_:
                best = fitted
        from scipy.optimize import linear_sum_assignment

        protos = normalise(torch.from_numpy(x[known])).numpy()
        cost = np.sqrt(((best.cluster_centers_[:, None, :] - protos[None, :, :]) ** 2).sum(axis=2))
        rows, cols = linear_sum_assignment(cost)
        names = known_labels[np.argmin(cost, axis=1)]
        names[rows] = known_labels[cols]
        return "scikit-learn KMeans, same k-means++ seeds", time.perf_counter() - start, names[best.labels_]
    return None, None, None


def _pca_reference(vectors: torch.Tensor, dim: int, seed: int, max_rows: int) -> tuple[str, float]:
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    n = len(vectors)
    rows = vectors
    if n > max_rows:
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows].sort().values
        rows = vectors[pick]
    pca = PCA(dim, svd_solver="randomized", random_state=seed).fit(rows.numpy())
    pca.transform(vectors.numpy())
    return "scikit-learn PCA (randomized, same rows), transform of all rows", time.perf_counter() - start


def bench_synthetic(
    n: int,
    d: int,
    k: int,
    *,
    attacks: list[str] | None,
    channels: list[str],
    seed: int = 0,
    repeats: int = 3,
    device: str = "cpu",
) -> list[dict]:
    """Returns one row per attack and data kind: its time (median of repeats), accuracy and peak RSS beside its
    reference's (median of repeats, same vectors, same initial centroids)."""
    from adversary.attacks.base import attack_seed
    from adversary.engine import AttackEngine, cumulative_starts
    from splitleak.config import AttackSection

    cfg = AttackSection()
    names = list(attacks) if attacks else [*cfg.per_epoch, "cumulative"]
    labels_of, rows = {}, []
    vectors = {}
    for data in channels:
        vectors[data], labels_of[data] = synthetic_vectors(n, d, k, seed=seed, kind=data)
    truth = labels_of[channels[0]]
    ids = np.arange(n)
    known = np.asarray([int(np.nonzero(truth == c)[0][0]) for c in range(k)])
    engine = AttackEngine(
        cfg.model_copy(
            update={"cumulative": "cumulative" in names, "per_epoch": [a for a in names if a != "cumulative"]}
        ),
        known_ids=known,
        known_labels=truth[known],
        num_classes=k,
        seed=seed,
        device=device,
    )
    if device != "cpu":
        vectors = {data: v.to(device) for data, v in vectors.items()}
    size_mb = n * d * 4 / 2**20
    ours: dict[tuple[str, str], tuple[float, np.ndarray | None]] = {}
    reduced: dict[str, torch.Tensor] = {}
    results_all = []
    singles = [a for a in names if a != "cumulative"]
    for data in channels:
        timings: dict[str, list[float]] = {}
        for _ in range(repeats):
            results, reduced[data] = engine.epoch_attacks(data, 0, ids, vectors[data], singles)
            timings.setdefault("pca", []).append(engine.frame_seconds[data])
            for r in results:
                timings.setdefault(r.attack, []).append(r.seconds)
        ours[("pca", data)] = (statistics.median(timings["pca"]), None)
        rows.append({"attack": "pca", "data": data, "peak_rss_mb": _peak_rss_mb()})
        for r in results:
            ours[(r.attack, r.data)] = (statistics.median(timings[r.attack]), r.predictions)
            rows.append({"attack": r.attack, "data": r.data, "peak_rss_mb": _peak_rss_mb()})
        results_all += results
    if set(channels) == {"grad", "smashed"}:
        # Attacks on both channels at once (cross_kmeans), as the live engine runs them after the others.
        for r in engine.pair_attacks(0, ids, reduced):
            ours[(r.attack, r.data)] = (r.seconds, r.predictions)
            rows.append({"attack": r.attack, "data": r.data, "peak_rss_mb": _peak_rss_mb()})
            results_all.append(r)
    if "cumulative" in names and set(channels) == {"grad", "smashed"}:
        start = time.perf_counter()
        candidates, readings = cumulative_starts(results_all)
        predictions = engine.cumulative.end_epoch(ids, candidates, epoch_vectors=reduced, readings=readings)
        ours[("cumulative", "both")] = (time.perf_counter() - start, predictions)
        rows.append({"attack": "cumulative", "data": "both", "peak_rss_mb": _peak_rss_mb()})
    # Every epoch-end attack once, as the live engine runs them.
    total = sum(seconds for seconds, _ in ours.values())
    ctx_cfg = engine.cfg
    finished = []
    for row in rows:
        attack, data = row["attack"], row["data"]
        seconds, predictions = ours[(attack, data)]
        out = {
            "attack": attack,
            "data": data,
            "samples": n,
            "dim": d,
            "seconds": round(seconds, 4),
            "reference": None,
            "reference_seconds": None,
            "accuracy": None if predictions is None else round(float((predictions == truth).mean()), 6),
            "reference_accuracy": None,
            "peak_rss_mb": round(row["peak_rss_mb"], 1),
        }
        if attack == "pca" and d > ctx_cfg.pca_above:
            trials = [
                _pca_reference(vectors[data].cpu(), ctx_cfg.pca_dim, seed, ctx_cfg.pca_fit_samples)
                for _ in range(repeats)
            ]
            out["reference"] = trials[0][0]
            out["reference_seconds"] = round(statistics.median(t[1] for t in trials), 4)
        elif attack not in ("pca", "cumulative", "random") and data != "both":
            trials = [
                _reference(attack, data, reduced[data], known, truth[known], ctx_cfg, attack_seed(seed, 0))
                for _ in range(repeats)
            ]
            reference, _, ref_predictions = trials[0]
            ref_seconds = statistics.median(t[1] for t in trials) if reference is not None else None
            if reference is not None:
                out |= {
                    "reference": reference,
                    "reference_seconds": round(ref_seconds, 4),
                    "reference_accuracy": round(float((ref_predictions == truth).mean()), 6),
                    "agreement": round(float(np.mean(ref_predictions == predictions)), 6),
                }
        finished.append(out)
    finished.append(
        {
            "attack": "all epoch-end attacks",
            "data": "+".join(channels),
            "samples": n,
            "dim": d,
            "seconds": round(total, 3),
            "reference": None,
            "reference_seconds": None,
            "accuracy": None,
            "reference_accuracy": None,
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rows), 1),
            "vectors_mb": round(size_mb * len(channels), 1),
        }
    )
    return finished
