"""The cumulative attacker (beyond the paper): one label estimate per training
sample from everything the adversary has seen so far.

Every (epoch, channel) block of exchanges is one *view* of the training
samples, in the paper's unified Euclidean space: unit gradients (so squared
distance is 2 - 2 cos) and unit smashed vectors, looked at twice at half
weight each (centred on the epoch's mean, and as the engine framed them).
Labels do not change during training, so every view is a noisy look at one
latent labelling.

The model behind the fit: in view b, the vectors of class c scatter
isotropically around a centre mu_bc with a variance sigma_b^2 of the view's
own. Maximised over centres and variances, its classification likelihood is,
up to constants,

    -sum_b (n_b d_b / 2) log(W_b(L) / (n_b d_b))

with W_b(L) the within-class sum of squares of view b under labelling L and
d_b the view's effective dimension (the participation ratio of its
covariance: how many directions its vectors really vary in; the gradients of
a binary task with a one-layer top model all lie on one line, so d_b is about
1, whatever the cut width). A view in which the classes form tight clusters
(epoch-0 gradients, late smashed data) has a small W_b and so, in the fitting
step, a large weight n_b d_b / (2 W_b); a view whose structure does not follow
the labels (gradients clustered by runner-up class under momentum, Marvell's
noise) keeps a large W_b under any labelling that fits the other views, and a
small weight. Each
step reassigns every sample to the class that maximises the weighted sum,
which is a majorisation step (log W <= log W' + (W - W') / W'), so the
criterion never increases and the fit converges.

Each epoch also gives a third look, across the channels: the smashed data
mapped by the least-squares linear predictor of the gradients (ridge
regression, cross_channel). What the defenses add to the gradients (DP noise,
randomised labels, Marvell's noise) does not depend on the smashed data given
the labels, so the regression averages it out over the epoch and keeps the
part of the gradients that the smashed data predict: the labels' direction,
for as long as the top model has not fitted them. It counts half, as each
smashed geometry does, and is not weighted by view_trust: it is built from the
smashed data and follows them where the gradients carry nothing. Its rows are
compared as unit vectors, except where they vary along one direction only (a
binary task's gradients at a one-layer top model): unit vectors on one line
collapse onto its two poles, so there the predictions are scaled as a whole
(cross_directions).

Which views to trust is decided from unlabelled evidence. The label party's
defenses act on the gradients it returns (noise, randomised labels, Marvell);
none acts on the smashed data, which the feature party computes itself and
which follow the labels more closely as the bottom model learns. A view whose
own partition shares nothing with the newest smashed data's (normalised mutual
information near 0) follows something other than the labels, however tight its
clusters, and is weighted down (view_trust): gradients that follow randomised
labels or noise, and the first epochs' smashed data that follow the inputs'
own look. Where the channels tell the same story (undefended training) every
view counts in full; so do gradients whose own clusters, found without the
known samples, hold one known sample of each class apart (before the smashed
data of a fresh bottom model follow the labels).

Nothing here reads ground truth. The fit starts from the attacker's own
previous labelling, the known samples alone (each sample first goes to its
nearest known sample over all views, as seeded k-means starts) and the
labellings of the single attacks of the same epoch. What decides between the
fits is the criterion above on the weighted views; among those within a small
margin of the lowest, the ones whose views place the most known samples in
their own class (each known sample is clamped to its label, so this is the
views' vote against the clamp; it tells apart labellings that differ only in
which cluster carries which name), and of those the one the other fits agree
with most: a labelling that several descents reach is where the views lead,
one that only its own start reaches is where that start was stuck. The
criterion does not see class names: where the views place at most a third of
the known samples in their own class, the kept fit's classes are renamed by them
(named_by_known_samples).

At the end of epoch 0 it may take cross_kmeans's labelling instead of the fit's, where the gradients
look like randomised labels and cross_kmeans, read out of fold, predicts their clusters significantly
better than the fit: under randomized response the labelling that predicts the randomised labels better,
among those made without them, is right more often (_read_randomised_labels). From then on cross_kmeans's
labelling of each epoch is also a start of its epoch-end fit, kept wherever the criterion and the known
samples allow it (end_epoch's readings). Where the gradients looked like randomised labels at epoch 0 but
cross_kmeans did not read them better, the smashed data's clusters carry little of the classes, and from
then on (epoch 0's fit is made again) each epoch-end fit also looks at the newest smashed data with every
class's centre held at its known sample (the anchored view: the distance attack's reading as one more look)
and starts from that reading too. At every epoch end,
where its labelling is the gradients' own clusters, it reads them as randomized response on the classes
the smashed data predict and moves the rows that this reading puts in another class at two epoch ends in
a row (_read_response).

Between epochs it keeps up round by round: each batch is scored against class
prototypes that follow the moving model (means of recent rounds' vectors,
grouped by the attacker's current labels, seeded by the known samples), added
to what earlier epochs established. A confident earlier estimate is a large
score margin, which one round's weaker evidence does not overturn.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from adversary.attacks.base import AttackContext, Reference, attack_seed
from adversary.attacks.cross_attacks import (
    CrossKMeansAttack,
    cross_fitted_labels,
    cross_fitted_rises,
    fit_response,
)
from adversary.attacks.similarity import (
    CROSS_RIDGE,
    kmeans_restarted,
    name_by_known,
    normalise,
    ridge_fit,
    squared_distances,
)
from adversary.attacks.similarity_attacks import KMeansHungarianAttack

__all__ = [
    "CHANNELS",
    "CumulativeAttacker",
    "View",
    "ViewFit",
    "best_fit",
    "cross_channel",
    "fit_views",
    "named_by_known_samples",
    "natural_clusters",
    "paired_z",
    "track_prototypes",
    "view_trust",
]

CHANNELS = ("grad", "smashed")
# A fit has settled when at most this fraction of the samples changed class in a step.
SETTLE = 0.001
# Fits that label at least this fraction of their rows alike are one optimum: in the consensus among the
# close fits (best_fit) they count once. Starts seeded by the same known samples (the fit grown around
# them, the nearest known sample) often reach one optimum; counted twice, it outvoted the attacker's own
# labelling (digits, three top layers, Adam: 1.000 at epoch 1, then 0.901 at epoch 2, kept because two
# starts reached it, where the attacker's labelling refitted was 0.998 right).
SAME_OPTIMUM = 0.98
# The normalised mutual information between a view's own partition and the smashed data's from which
# the view counts in full; below it, its weight falls as the square of the ratio.
RELATED = 0.3
# The same for a gradient view older than the newest smashed data. Once the bottom model has learnt, the
# newest smashed data are a sharper reference than in the epoch those gradients came from, and older
# gradients must share more with them to count in full: under label DP with a learnt prior the first
# epoch's gradients (mixup-blended, 0.37 of their own labels right) shared 0.31 with the second epoch's
# smashed data and outvoted them.
OLDER_RELATED = 0.45
# An older smashed view's weight is also multiplied by this for each epoch of its age, so that the
# older epochs together count less than the newest (1/2 + 1/4 + ... < 1). The smashed data of
# successive epochs are the same samples through a bottom model that changes slowly: their errors
# repeat, and the fit, which adds the views' log-likelihoods as if each were an independent look,
# let them outvote the newest, which the bottom model has sharpened. Under Marvell on breast_cancer
# (25 runs) the attacker fell up to 3.3 points below k-means on the newest smashed data alone; the
# SimpleNet cut after block 6 went from 0.825 at epoch 1 to 0.742 at epoch 2.
SMASHED_AGE_FACTOR = 0.5
# The attacker's own labelling, refitted, stays among the close fits of best_fit within this many
# times the margin: what it holds yields only to a fit whose criterion is clearly lower, not to one
# that a fixed margin happens to leave alone inside it. After the SimpleNet cut at block 2, at epoch 2,
# the attacker's labelling (0.630 right) lay 0.00502 above the lowest criterion, just outside the
# margin of 0.005, and the one fit inside it (0.389 right) was kept. From DISTINCT_FROM classes on,
# where the attacker's labelling holds a tie between optima.
HELD_MARGIN = 2.0
# The weight of the cross-channel view: half a look, as each of the smashed data's two geometries.
CROSS_WEIGHT = 0.5
# Below this effective dimension the cross-channel predictions vary along one direction only (a binary
# task's gradients at a one-layer top model: participation ratio 1.02 on breast_cancer under Marvell),
# and are scaled as a whole instead of row by row (cross_directions).
ONE_DIRECTION = 1.5
# From this many classes on, a gradient view whose unseeded k-means puts every known sample in a cluster
# of its own counts in full: by chance (clusters unrelated to the labels) that happens with
# probability K!/K^K, under 0.1 from 4 classes on.
DISTINCT_FROM = 4
# From this many classes on, one pair of known samples may share a cluster: recognition by chance is then
# K!(1 + K(K-1)/2)/K^K, 0.017 at 10 classes (0.00036 without the pair), while gradients that follow the
# labels are rarely so clean that ten known samples all sit apart (the SimpleNet cut after block 10,
# epoch 0: k-means on the gradients 0.918 right, two known samples in one cluster, the view weighted
# 0.18 and the epoch's labelling 0.582; recognised, 0.919). Below 10, the chance is over 0.03.
SHARED_PAIR_FROM = 10
# Weak gradients can pass that test under one k-means seed: the first epoch of the SimpleNet cut after
# block 7 (k-means on them 0.14 to 0.23 right) held nine of ten known samples apart under the attacker's
# seed and seven or eight under five others; recognised, they led the epoch's fit to 0.222, where the
# fit without them was 0.575. Gradients that follow the labels hold the pair rule under every seed
# (block 10's first epoch: nine or ten apart under six seeds). So with one pair shared, the view is
# recognised only when the natural clusters of this many further seeds hold the pair rule too; with
# every known sample apart, one seed suffices as before.
SHARED_PAIR_SEEDS = 2
# From this many classes on, newest gradients recognised as following the labels (as above) are the
# reference of their epoch: by chance that recognition happens with probability K!/K^K, under 0.01 from
# 7 classes on (0.094 at 4: noisy gradients of four classes, recognised by chance, outvoted the smashed
# data). The same epoch's smashed data and cross-channel view then count by their kinship with the
# gradients' partition, as NMI^2 (related = 1): in full only where they tell the same story. Smashed
# data 0.94 right shared 0.85 with gradients 1.00 right (weight 0.72); those of a fresh bottom model,
# 0.40 right, shared 0.52 (weight 0.27).
RECOGNISED_RELATED = 1.0
REFERENCE_FROM = 7
# There, at epoch ends, a gradient view's own clusters (natural_clusters) are the best of at least this
# many k-means++ restarts: with five, the first epoch's gradients of the SimpleNet cut after block 12
# (0.997 of their seeded clustering right) merged two classes and split a third, put two known samples
# together, and were not recognised. (With fewer classes, recognition is weaker evidence, and the
# better clusters of noisy gradients that still lean to the labels would be recognised more often.)
# The refits between epoch ends keep `restarts`: they recompute the growing epoch's clusters at every
# refit (20 restarts on 8,000 vectors took 3.1 s against 1.0 s for five), and their labelling is
# provisional; the epoch end, which every reported figure reads, has the full search.
NATURAL_RESTARTS = 20
# From REFERENCE_FROM classes on, an epoch-end fit whose views place at most this fraction of the known
# samples in their own class (leave-one-out) is renamed by them (named_by_known_samples). The criterion
# does not see class names, so only the known samples can name the clusters; where most of them sit in
# clusters of other names, the names are wrong. Under DP-SGD at epsilon 100 the fits of two epoch ends
# placed 1 and 0 of ten (0.159 and 0.071 right); with the rule the attacker holds 0.234 and 0.246 there.
# Renamed, fits that placed 4 to 7 of ten moved both ways (from 5.4 points worse to 6.1 better).
RENAME_BELOW = 1 / 3
# Reading randomised labels (CumulativeAttacker._read_randomised_labels), at the end of epoch 0: the
# gradients are checked as randomised labels where the newest gradient view's weight (view_trust) is at
# most this (tight clusters that the smashed data do not share; under label DP at epsilon <= 1 it was
# 0.02 or less, without a defense 1)...
RANDOMISED_WEIGHT = 0.3
# ...and their k-means clusters explain at least this share of the unit gradients' variance (0.028 to
# 0.030 under DP-SGD's noise, 0.99 to 1.00 under randomized response with the uniform prior, 0.78 to 0.87
# with the learnt prior's first stage, in the captures of docs/attacker-changes.md).
RANDOMISED_EXPLAINED = 0.5
# The attacker takes cross_kmeans's labelling where its cross-fitted version predicts the gradients'
# clusters better than the fit does by this many standard errors (McNemar's statistic, paired_z): by chance
# (two labellings that predict them equally well) that happens with probability 0.0013.
SWITCH_Z = 3.0
# Where the gradients look like randomised labels there (the first two conditions) and cross_kmeans does not
# read them better, the smashed data's clusters carry little of the classes: under label DP at epsilon 0.1
# with the uniform prior, k-means on them seeded by the known samples was at chance (0.104) at the end of
# epoch 0 and 0.20 at epoch 4, while the nearest known sample (the distance attack) read 0.20 and 0.36, and
# the fit, which clusters them, 0.10 and 0.26. From then on (epoch 0's fit is made again), each epoch-end
# fit also looks at the newest smashed data with every class's centre held at its known sample (an anchored
# view, the distance attack's reading as one more look), and starts from that reading too. It weighs four
# times one smashed geometry: weighted 0.5, as one geometry, the fits still drifted from it to the clusters
# and stayed up to 10 points below it at epoch 0 and 6 at the later epochs; weighted 1, the gaps on two
# captures at epsilon 0.5 were 27.3 and 14.6 points against 24.4 and 10.0 (docs/attacker-changes.md).
# Elsewhere it costs: under DP-SGD at epsilon 50 (gradients that are noise) the run ended at 0.480 instead
# of 0.718, and after the switch above, under label DP at epsilon 1, at 0.540 instead of 0.824, both
# weighted 0.5.
ANCHOR_WEIGHT = 2.0
# Reading the response (CumulativeAttacker._read_response), at every epoch end: where the attacker's labelling
# is the newest gradients' own clusters on at least this fraction of the rows (Hungarian-matched: under
# randomized response at epsilon 5 with the uniform prior, 1.000; where the labelling held the labels and the
# gradients drifted, 0.977 under momentum), the clusters are read as randomized response on the classes the
# smashed data predict (fit_response), and rows move where that reading repeats at two epoch ends in a row.
RESPONSE_AGREEMENT = 0.99


def _participation_ratio(covariance: torch.Tensor) -> float:
    """Returns (sum of the eigenvalues)^2 / (sum of their squares) of a covariance (or scatter) matrix,
    from its trace and Frobenius norm, between 1 and its width."""
    total = float(torch.trace(covariance))
    spread = float((covariance * covariance).sum())
    dims = total * total / spread if spread > 0 else 1.0
    return max(1.0, min(dims, float(covariance.shape[0])))


@dataclass(frozen=True)
class View:
    """One look at some samples: their rows in the attacker's sample index, and their unit vectors.

    dims is the view's effective dimension, the participation ratio (sum of the covariance's
    eigenvalues)^2 / (sum of their squares): the number of directions the vectors really vary in.
    """

    rows: torch.Tensor
    vectors: torch.Tensor
    dims: float
    # "grad", "smashed", "cross" (cross_channel) or "anchor" (anchors; empty when it does not matter).
    channel: str = ""
    # How far the fit trusts the view: its precision and its share of the criterion are scaled by this.
    weight: float = 1.0
    # The training epoch whose exchanges it holds (-1 when it does not matter).
    epoch: int = -1
    # What was computed from the vectors alone (view_trust's partitions), kept with them: shared by
    # the view's weighted copies, saved with it in a checkpoint.
    memo: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # An anchored view (channel "anchor"): (positions in vectors, classes) of the known samples, at which
    # each class's centre stays instead of the mean of its members (CumulativeAttacker.anchored).
    anchors: tuple[torch.Tensor, torch.Tensor] | None = dataclasses.field(default=None, compare=False, repr=False)

    def weighted(self, weight: float) -> "View":
        """Returns the same view with another weight."""
        return dataclasses.replace(self, weight=weight)

    @classmethod
    def of(
        cls, rows: torch.Tensor, vectors: torch.Tensor, channel: str = "", keep: int | None = None, epoch: int = -1
    ) -> "View":
        """Returns the view of these rows, with its effective dimension measured.

        With keep, vectors wider than that are first rotated onto their top `keep` principal axes
        (distances within the view are kept up to the discarded low-variance directions), which makes
        every fitting step cheaper.
        """
        centred = vectors - vectors.mean(dim=0, keepdim=True)
        covariance = centred.T @ centred
        if keep is not None and vectors.shape[1] > keep:
            _, axes = torch.linalg.eigh(covariance.double())
            top = axes[:, -keep:].to(vectors.dtype)
            vectors, centred = vectors @ top, centred @ top
            covariance = centred.T @ centred
        return cls(rows, vectors, _participation_ratio(covariance), channel, epoch=epoch)


@dataclass(frozen=True)
class ViewFit:
    """A labelling of the rows and how well it explains the views."""

    labels: torch.Tensor
    # (rows, classes): log-likelihood of each class up to a per-row constant (-inf: class absent).
    scores: torch.Tensor
    # The mean log within-class variance per coordinate, sum_b n_b d_b log(W_b / (n_b d_b)) / sum_b n_b d_b:
    # lower explains the views better (the negative log-likelihood, per coordinate and up to constants).
    criterion: float
    # Known samples the views place in their own class, class centres taken without the known samples.
    known_agreement: int
    iterations: int


def _view_scores(
    views: list[View], labels: torch.Tensor, num_rows: int, num_classes: int
) -> tuple[torch.Tensor, float]:
    """Returns (scores, criterion) of a labelling: each view's centres from it (an anchored view's at its
    known samples), weighted by its fit."""
    device = labels.device
    scores = torch.zeros(num_rows, num_classes, device=device)
    present_anywhere = torch.zeros(num_classes, dtype=torch.bool, device=device)
    criterion, total_scale = 0.0, 0
    for view in views:
        if view.weight <= 0:
            continue
        x = view.vectors
        lab = labels[view.rows]
        have = lab >= 0
        every = bool(have.all())
        if not every and not bool(have.any()):
            continue
        lab_have, x_have = (lab, x) if every else (lab[have], x[have])
        if view.anchors is not None:
            at, classes = view.anchors
            present = torch.zeros(num_classes, dtype=torch.bool, device=device)
            present[classes] = True
            centres = torch.zeros(num_classes, x.shape[1], device=device, dtype=x.dtype)
            centres[classes] = x[at]
        else:
            counts = torch.bincount(lab_have, minlength=num_classes)
            present = counts > 0
            sums = torch.zeros(num_classes, x.shape[1], device=device, dtype=x.dtype).index_add_(0, lab_have, x_have)
            centres = sums / counts.clamp_min(1)[:, None].to(x.dtype)
        present_anywhere |= present
        d2 = squared_distances(x, centres)
        # A class with no member in this view: as far as the farthest present class, for every row.
        if not bool(present.all()):
            worst = d2[:, present].max(dim=1, keepdim=True).values
            d2 = torch.where(present[None, :], d2, worst)
        n_have = len(lab_have)
        within = float((d2 if every else d2[have]).gather(1, lab_have[:, None]).sum())
        scale = n_have * view.dims
        within = max(within, 1e-12 * scale)
        criterion += view.weight * scale * math.log(within / scale)
        total_scale += view.weight * scale
        precision = view.weight * scale / (2.0 * within)
        scores.index_add_(0, view.rows, -precision * d2)
    scores[:, ~present_anywhere] = float("-inf")
    return scores, criterion / (total_scale if total_scale > 0 else 1.0)


def cross_channel(smashed: torch.Tensor, grad: torch.Tensor, *, ridge: float = CROSS_RIDGE) -> torch.Tensor | None:
    """Returns the gradients as the smashed data predict them: ridge regression of grad on smashed, both centred.

    The fitted values X B, B = (X'X / n + r I)^-1 X'G / n, with r = ridge times the mean variance per
    coordinate of X (ridge_fit; scikit-learn's Ridge with alpha = n r and an intercept gives the same).
    None when the smashed data do not vary (nothing to predict from).
    """
    fit = ridge_fit(smashed, grad, ridge=ridge)
    return None if fit is None else fit.centred(smashed).to(smashed.dtype)


def cross_directions(predicted: torch.Tensor) -> torch.Tensor:
    """Returns the cross-channel predictions as the fit compares them: each row a unit vector, unless
    they vary along one direction only, when all are scaled by one factor to unit root-mean-square norm.

    Predictions on one line, made unit vectors, collapse onto its two poles: two point-tight clusters
    (56% of the rows within cos 0.99 of a pole, on the Marvell s=10 run that inverted) whose tiny
    within-class variance outweighs every other view, wherever the line splits the samples. Scaled as a
    whole they keep their spread along the line, and with it their real precision.
    """
    centred = predicted - predicted.mean(dim=0, keepdim=True)
    if _participation_ratio(centred.T @ centred) < ONE_DIRECTION:
        rms = float(predicted.pow(2).sum(dim=1).mean().sqrt())
        return predicted / rms if rms > 0 else predicted
    return normalise(predicted)


def fit_views(
    views: list[View],
    *,
    num_rows: int,
    known_rows: torch.Tensor,
    known_labels: torch.Tensor,
    num_classes: int,
    init: torch.Tensor,
    max_iters: int = 100,
    settle: float = 0.0,
) -> ViewFit:
    """Returns the labelling reached from init by the weighted multi-view fit, known samples clamped.

    Rows that no view covers keep label -1. Rows labelled -1 in init join the fit at its first step
    (an init of all -1 starts from the known samples alone: each class's centre is its known samples).
    The fit stops when no label changes, when at most a fraction `settle` of the rows changed in a
    step, or after max_iters steps.
    """
    covered = torch.zeros(num_rows, dtype=torch.bool, device=init.device)
    for view in views:
        covered[view.rows] = True
    labels = init.clone()
    labels[known_rows] = known_labels
    iterations = 0
    scores = torch.full((num_rows, num_classes), float("-inf"), device=init.device)
    criterion = float("inf")
    for iterations in range(1, max_iters + 1):
        scores, criterion = _view_scores(views, labels, num_rows, num_classes)
        proposal = scores.argmax(dim=1)
        proposal[~covered] = -1
        proposal[known_rows] = known_labels
        moved = int((proposal != labels).sum())
        labels = proposal
        if moved <= settle * num_rows:
            break
    agreement = _known_agreement(views, labels, known_rows, known_labels, num_classes)
    return ViewFit(labels, scores, criterion, agreement, iterations)


def _unanchored(views: list[View]) -> list[View]:
    """Returns the views whose class centres are their members' means (all but the anchored one)."""
    return [view for view in views if view.anchors is None]


def _known_agreement(
    views: list[View], labels: torch.Tensor, known_rows: torch.Tensor, known_labels: torch.Tensor, num_classes: int
) -> int:
    """Returns how many known samples the views place in their own class, class centres taken without them.

    Left out, a known sample cannot pull its class towards itself: two known samples of different
    classes in one natural cluster (a partition that is not the classes, e.g. randomised labels, or
    clusters matched to the classes by a permutation) cannot both agree. Anchored views do not vote:
    there each known sample is its own class's centre, whatever the labelling.
    """
    if not len(known_rows):
        return 0
    without = labels.clone()
    without[known_rows] = -1
    scores, _ = _view_scores(_unanchored(views), without, len(labels), num_classes)
    return int((scores[known_rows].argmax(dim=1) == known_labels).sum())


def _support(fit: ViewFit, others: list[ViewFit]) -> float:
    """Returns the summed fraction of rows on which the other fits give fit's labels (rows fit covers)."""
    covered = fit.labels >= 0
    mine = fit.labels[covered]
    return sum(float((other.labels[covered] == mine).float().mean()) for other in others)


def _close(
    fits: list[tuple[str, ViewFit]], *, switch_margin: float, held: str | None, num_classes: int
) -> list[tuple[str, ViewFit]]:
    """Returns the fits within switch_margin of the lowest criterion; from DISTINCT_FROM classes on, the
    fit from the start named held (the attacker's own labelling) within HELD_MARGIN times it."""
    lowest = min(fit.criterion for _, fit in fits)

    def margin(name: str) -> float:
        return switch_margin * (HELD_MARGIN if name == held and num_classes >= DISTINCT_FROM else 1.0)

    return [(name, fit) for name, fit in fits if fit.criterion <= lowest + margin(name)]


def _consensus(
    close: list[tuple[str, ViewFit]],
    candidates: list[tuple[str, ViewFit]],
    *,
    num_classes: int,
    held: str | None,
) -> tuple[str, ViewFit]:
    """Returns the candidate the other close optima agree with most (rule 3 of best_fit); ties go to the
    start named held, then to the lower criterion. candidates are among close."""
    # Below DISTINCT_FROM classes every close fit counts and the criterion breaks ties, as before
    # SAME_OPTIMUM: on binary tasks two optima always agree both ways alike, and letting the attacker's
    # labelling hold between them kept worse ones (tests/test_cumulative.py, cross predictions on one line).
    grouped = num_classes >= DISTINCT_FROM
    held = held if grouped else None
    optima: list[list[ViewFit]] = []
    for _, fit in close:
        alike = next((o for o in optima if _support(fit, [o[0]]) >= SAME_OPTIMUM), None) if grouped else None
        if alike is not None:
            alike.append(fit)
        else:
            optima.append([fit])

    def support(item: tuple[str, ViewFit]) -> float:
        if not grouped:
            return _support(item[1], [fit for _, fit in close if fit is not item[1]])
        # An optimum has one support, that of its first fit: measured from each member's own labels,
        # the members (alike on SAME_OPTIMUM of the rows, not on all) got different ones, and a member
        # of one optimum could outvote the attacker's labelling where the two optima tie (digits, three
        # top layers, Adam, epoch 2: the fit from the nearest known sample, 0.914 right, against the
        # attacker's refitted labelling, 0.999, which the fit from the known samples, of the same
        # optimum as the former, agreed with less). Rounded: agreement between two optima is the same
        # both ways, up to the rows each covers.
        mine = next(optimum for optimum in optima if any(fit is item[1] for fit in optimum))
        others = [optimum[0] for optimum in optima if optimum is not mine]
        return round(_support(mine[0], others), 6)

    return max(candidates, key=lambda item: (support(item), item[0] == held, -item[1].criterion))


def best_fit(
    views: list[View],
    *,
    num_rows: int,
    known_rows: torch.Tensor,
    known_labels: torch.Tensor,
    num_classes: int,
    starts: list[tuple[str, torch.Tensor]],
    max_iters: int = 100,
    switch_margin: float = 0.005,
    known_slack: int = 0,
    held: str | None = None,
    leading: tuple[str, ...] = (),
) -> tuple[str, ViewFit]:
    """Returns (name of the start, fit) of the best fit from any start (name, initial labelling).

    The fits within switch_margin of the lowest criterion (the within-class variance larger by about
    that fraction at most; the fit from held within HELD_MARGIN times it, from DISTINCT_FROM classes on)
    are those the criterion cannot tell apart. Of them, those whose views place
    the most known samples in their own class, less known_slack, are candidates, and the candidate the
    other close optima agree with most (_support: the summed fraction of rows labelled alike, each
    optimum counted once: fits alike on SAME_OPTIMUM of their rows are one, with its first fit's
    support) is kept; where that cannot
    tell candidates apart (two optima agree with each other as much as the other way round), the
    start named held (the attacker's own labelling: what it knew holds), then the lower criterion.
    Optima and held apply from DISTINCT_FROM classes on; below, every close fit counts.
    Each start is a separate descent of the same criterion: a labelling that several optima come near
    is where the views lead; one that only its own start reaches is where that start was stuck (the
    attacker's previous labelling, or a single attack's, in a basin of its own).

    Agreement does not come first: a fit that grew its clusters around the known samples in a view
    without structure places every one of them in its own class. Nor does it decide alone: one known
    sample of ten is within chance (known_slack). Identical starts are fitted once (the first name is
    kept), so that a labelling two single attacks share counts once. The margin is half a percent: at
    one percent, fits grown around the known samples in the first epoch of a deep cut (SimpleNet,
    block 9) were within it of the gradient-led fits, placed more known samples, and won with half
    their accuracy (docs/attacks.md, "Deciding without labels").

    A fit from a start named in leading is kept wherever it is among the candidates, before the
    consensus: the attacker's readings of randomised labels (CumulativeAttacker.end_epoch), which
    evidence the criterion cannot see showed to be right more often.
    """
    fits: list[tuple[str, ViewFit]] = []
    seen: list[torch.Tensor] = []
    for name, init in starts:
        if any(torch.equal(init, other) for other in seen):
            continue
        seen.append(init)
        fit = fit_views(
            views,
            num_rows=num_rows,
            known_rows=known_rows,
            known_labels=known_labels,
            num_classes=num_classes,
            init=init,
            max_iters=max_iters,
            settle=SETTLE,
        )
        fits.append((name, fit))
    close = _close(fits, switch_margin=switch_margin, held=held, num_classes=num_classes)
    most = max(fit.known_agreement for _, fit in close)
    candidates = [item for item in close if item[1].known_agreement >= most - known_slack]

    lead = [item for item in candidates if item[0] in leading]
    if lead:
        return lead[0]
    return _consensus(close, candidates, num_classes=num_classes, held=held)


def named_by_known_samples(
    views: list[View], fit: ViewFit, *, known_rows: torch.Tensor, known_labels: torch.Tensor, num_classes: int
) -> ViewFit:
    """Returns the fit with its classes renamed so that the most known samples, left out, fall in a class
    of their own name (Hungarian matching, name_by_known; ties keep a name). The views' criterion does
    not change: only the known samples' clamp and the names move."""
    without = fit.labels.clone()
    without[known_rows] = -1
    scores, _ = _view_scores(_unanchored(views), without, len(fit.labels), num_classes)
    placed = scores[known_rows].argmax(dim=1)
    classes = torch.arange(num_classes)
    names = name_by_known(placed.cpu(), known_labels.cpu(), classes).to(fit.labels.device)
    labels = torch.where(fit.labels >= 0, names[fit.labels.clamp_min(0)], -1)
    labels[known_rows] = known_labels
    renamed = torch.empty_like(fit.scores)
    renamed[:, names] = fit.scores
    # Left out, the known samples see the same centres under the new names: each now sits in names[placed].
    agreement = int((names[placed] == known_labels).sum())
    return ViewFit(labels, renamed, fit.criterion, agreement, fit.iterations)


def natural_clusters(
    view: View, num_classes: int, *, seed: int, restarts: int = 5, max_iters: int = 100
) -> torch.Tensor:
    """Returns the view's own clusters, found without the known samples: the best of `restarts` k-means
    runs from k-means++ draws (one run can merge two tight clusters and split a third)."""
    generator = torch.Generator().manual_seed(seed)
    assign, _ = kmeans_restarted(view.vectors, num_classes, restarts=restarts, generator=generator, max_iters=max_iters)
    return assign


def matched_names(partition: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Returns each cluster's name, name[cluster], matched to the labels by the most agreement (Hungarian
    matching on the partition-by-labels counts)."""
    table = np.zeros((num_classes, num_classes))
    np.add.at(table, (partition, labels), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    name = np.arange(num_classes)
    name[rows] = cols
    return name


def paired_z(partition: np.ndarray, first: np.ndarray, second: np.ndarray, num_classes: int) -> float:
    """Returns McNemar's statistic, as a signed z, for "second predicts the partition better than first".

    Each labelling's names are matched to the partition's clusters by the most agreement (Hungarian
    matching); b counts the rows that second's matched name gets right and first's wrong, c the converse,
    and z = (b - c) / sqrt(b + c) (0 where they never differ)."""

    def hits(labels: np.ndarray) -> np.ndarray:
        return matched_names(partition, labels, num_classes)[partition] == labels

    a, b = hits(first), hits(second)
    better, worse = int((b & ~a).sum()), int((a & ~b).sum())
    return (better - worse) / math.sqrt(better + worse) if better + worse else 0.0


def explained_share(vectors: torch.Tensor, clusters: torch.Tensor) -> float:
    """Returns the share of the unit vectors' variance that their clusters' means explain (1 - within / total)."""
    unit = normalise(vectors.double())
    k = int(clusters.max()) + 1
    sums = torch.zeros(k, unit.shape[1], dtype=unit.dtype, device=unit.device).index_add_(0, clusters, unit)
    means = sums / torch.bincount(clusters, minlength=k).clamp_min(1)[:, None].to(unit.dtype)
    total = float(((unit - unit.mean(dim=0)) ** 2).sum())
    return 1.0 - float(((unit - means[clusters]) ** 2).sum()) / total if total > 0 else 0.0


def _known_shared(view: View, clusters: torch.Tensor, known_rows: torch.Tensor, num_classes: int) -> int | None:
    """Returns how many of the view's known samples share a cluster with another (the number held minus
    the clusters that hold them), or None where the view lacks a known sample of some class."""
    position = {int(r): i for i, r in enumerate(view.rows.tolist())}
    held = [position[int(r)] for r in known_rows.tolist() if int(r) in position]
    if len(held) < num_classes:
        return None
    return len(held) - len({int(clusters[i]) for i in held})


def _known_apart(view: View, clusters: torch.Tensor, known_rows: torch.Tensor, num_classes: int) -> bool:
    """Returns whether the view holds a known sample of every class, each in a cluster of its own (from
    SHARED_PAIR_FROM classes on, all but one pair)."""
    shared = _known_shared(view, clusters, known_rows, num_classes)
    return shared is not None and shared <= (1 if num_classes >= SHARED_PAIR_FROM else 0)


def view_trust(
    views: list[View],
    *,
    num_rows: int,
    known_rows: torch.Tensor,
    known_labels: torch.Tensor,
    num_classes: int,
    seed: int = 0,
    restarts: int = 5,
    natural_restarts: int | None = None,
    max_iters: int = 30,
) -> list[View]:
    """Returns the views weighted by how far their structure is that of the newest smashed data.

    The label party's defenses act on the gradients it returns (noise, randomised labels, Marvell's
    noise, compression); none acts on the smashed data, which the feature party computes itself, and
    which follow the labels more closely as the bottom model learns. So the smashed data of the newest
    epoch are the reference:

    - an older smashed view counts by its kinship with them: min(1, NMI / RELATED)^2, NMI the
      normalised mutual information (scikit-learn) of its own partition (seeded by the known samples,
      on that view alone) and the newest smashed views' joint partition. Epochs before the bottom model
      followed the labels (their clusters are the inputs' own) no longer dilute the later ones. It
      counts SMASHED_AGE_FACTOR less again for each epoch of its age: the older epochs repeat each
      other's errors, and together count less than the newest;
    - a gradient view counts by its kinship, in the same way, with the partition of all smashed views
      so weighted: near 0 for noise or randomised labels, however tight their clusters; 1 where the
      channels tell the same story (undefended training). A gradient view older than the newest
      smashed data needs more kinship to count in full (OLDER_RELATED instead of RELATED).

    The smashed data may not follow the labels yet (a randomly initialised bottom model in the first
    epoch) while the gradients do. So a gradient view also counts in full when its own clusters, found
    without the known samples (natural_clusters), hold one known sample each, with at least
    DISTINCT_FROM classes: clusters that follow randomised labels or noise put two known samples
    together with probability 1 - K!/K^K. From SHARED_PAIR_FROM classes on, one pair may share a
    cluster, where it does under the natural clusters of SHARED_PAIR_SEEDS further seeds too.

    The converse holds in the first epochs, where the gradients hold the labels and the smashed data
    of a fresh bottom model the inputs' own look (the authors' DP-SGD at epsilon 0.1: seeded k-means
    0.994 right on the gradients, 0.34 on the smashed data; the fit of both, 0.916). So where the
    newest gradient view is recognised as above, with at least REFERENCE_FROM classes, it is the
    reference of its own epoch instead: the newest smashed views, cross-channel and anchored views count
    by their kinship with its partition, with RECOGNISED_RELATED.

    natural_restarts: the k-means++ restarts of natural_clusters (default: restarts). Each view's own
    partition and natural clusters are kept in its memo.
    """
    smashed = [v for v in views if v.channel == "smashed"]
    if not smashed or not len(known_rows):
        return views
    start = torch.full((num_rows,), -1, dtype=torch.long, device=known_rows.device)

    def partition(subset: list[View]) -> np.ndarray:
        fit = fit_views(
            subset,
            num_rows=num_rows,
            known_rows=known_rows,
            known_labels=known_labels,
            num_classes=num_classes,
            init=start,
            max_iters=max_iters,
            settle=SETTLE,
        )
        return fit.labels.cpu().numpy()

    def own(view: View) -> np.ndarray:
        if "own" not in view.memo:
            view.memo["own"] = partition([view.weighted(1.0)])
        return view.memo["own"]

    def kinship(view: View, reference: np.ndarray, related: float = RELATED) -> float:
        rows = view.rows.cpu().numpy()
        mine = own(view)
        rows = rows[(reference[rows] >= 0) & (mine[rows] >= 0)]
        nmi = float(normalized_mutual_info_score(reference[rows], mine[rows])) if len(rows) else 0.0
        return min(1.0, nmi / related) ** 2

    tries = restarts if natural_restarts is None else natural_restarts

    def natural(view: View, draw: int) -> torch.Tensor:
        key = "natural" if draw == 0 else f"natural{draw}"
        if key not in view.memo:
            view.memo[key] = natural_clusters(view, num_classes, seed=seed + draw, restarts=tries)
        return view.memo[key]

    def recognised(view: View) -> bool:
        if num_classes < DISTINCT_FROM:
            return False
        if _known_shared(view, natural(view, 0), known_rows, num_classes) == 0:
            return True
        # One pair shared (from SHARED_PAIR_FROM classes on): it must repeat under the further seeds.
        draws = range(SHARED_PAIR_SEEDS + 1)
        return all(_known_apart(view, natural(view, draw), known_rows, num_classes) for draw in draws)

    newest_epoch = max(v.epoch for v in smashed)
    newest = [v for v in smashed if v.epoch == newest_epoch]
    weight = {id(v): v.weight for v in views}
    if len(newest) < len(smashed):
        reference = partition(newest)
        for v in smashed:
            if v.epoch != newest_epoch:
                age = SMASHED_AGE_FACTOR ** (newest_epoch - v.epoch)
                weight[id(v)] = v.weight * kinship(v, reference) * age
    newest_grad = [v for v in views if v.channel == "grad" and v.epoch == newest_epoch]
    if num_classes >= REFERENCE_FROM and newest_grad and recognised(newest_grad[0]):
        anchor = own(newest_grad[0])
        for v in views:
            if v.epoch == newest_epoch and v.channel in ("smashed", "cross", "anchor"):
                weight[id(v)] = v.weight * kinship(v, anchor, RECOGNISED_RELATED)
    smashed_reference = partition([v.weighted(weight[id(v)]) for v in smashed])
    weighted = []
    for view in views:
        if view.channel != "grad":
            weighted.append(view.weighted(weight[id(view)]))
            continue
        if recognised(view):
            weighted.append(view)
            continue
        related = RELATED if view.epoch >= newest_epoch else OLDER_RELATED
        weighted.append(view.weighted(view.weight * kinship(view, smashed_reference, related)))
    return weighted


def track_prototypes(
    prototypes: torch.Tensor, mass: torch.Tensor, vectors: torch.Tensor, labels: torch.Tensor, *, decay: float
) -> None:
    """Moves class prototypes towards one round's vectors, in place: the older rounds' weight decays.

    prototypes (classes, d) and mass (classes,) are the running weighted means and their weights;
    rows labelled -1 are skipped.
    """
    mass.mul_(decay)
    have = labels >= 0
    if not bool(have.any()):
        return
    k = prototypes.shape[0]
    counts = torch.bincount(labels[have], minlength=k).to(prototypes.dtype)
    sums = torch.zeros_like(prototypes).index_add_(0, labels[have], vectors[have])
    hit = counts > 0
    prototypes[hit] = (prototypes[hit] * mass[hit, None] + sums[hit]) / (mass[hit] + counts[hit])[:, None]
    mass += counts


def _normalised_scores(scores: torch.Tensor) -> torch.Tensor:
    """Returns scores shifted so that each row's log-sum-exp is 0 (log-posteriors); -inf stays -inf."""
    finite = torch.isfinite(scores).any(dim=1, keepdim=True)
    shifted = scores - torch.logsumexp(scores, dim=1, keepdim=True)
    return torch.where(finite, shifted, torch.zeros_like(scores))


@dataclass(frozen=True)
class RoundUpdate:
    """What one round changed: the batch's estimate and how many earlier estimates a refit revised."""

    batch_predictions: np.ndarray
    changed: int
    refit: bool


class CumulativeAttacker:
    """Holds one label estimate for every training sample seen, refined after every round and epoch.

    Fed vectors and the attacker's prior knowledge (known sample ids and labels) only. Rounds go
    through frame() (the batch in the attacker's unified space) and then update(); epoch ends
    through end_epoch(), which may also start from the labellings of the single attacks.
    """

    def __init__(
        self,
        *,
        known_label_of: dict[int, int],
        num_classes: int,
        seed: int,
        halflife_rounds: float = 8.0,
        refit_growth: float = 1.25,
        max_iters: int = 30,
        restarts: int = 5,
        kmeans_iters: int = 300,
        kmeans_tol: float = 1e-4,
        device: str | torch.device = "cpu",
    ) -> None:
        self.known_label_of = dict(known_label_of)
        self.num_classes = num_classes
        self.seed = seed
        self.decay = 0.5 ** (1.0 / halflife_rounds)
        self.refit_growth = refit_growth
        self.max_iters = max_iters
        self.restarts = restarts
        # k-means as the single attacks run it (the clusters of cross_kmeans, _read_randomised_labels).
        self.kmeans_iters = kmeans_iters
        self.kmeans_tol = kmeans_tol
        self.device = torch.device(device)
        self._row_of: dict[int, int] = {}
        self._ids: list[int] = []
        self.labels = torch.empty(0, dtype=torch.long, device=self.device)
        # Log-posterior from the last fit (rows seen since have none: zeros), and the latest
        # scores of every row (the prior plus the round that last saw it), for AUC.
        self._prior = torch.zeros(0, num_classes, device=self.device)
        self._latest = torch.zeros(0, num_classes, device=self.device)
        self._views: list[View] = []
        # This epoch's rounds: rows and projected (not yet normalised) vectors per channel.
        self._rounds: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self._smashed_sum: torch.Tensor | None = None
        self._smashed_count = 0
        self._smashed_centre: torch.Tensor | None = None
        self._prototypes: torch.Tensor | None = None  # (channels, classes, d)
        self._mass = torch.zeros(len(CHANNELS), num_classes, device=self.device)
        self._valid = torch.zeros(num_classes, dtype=torch.bool, device=self.device)
        self._mean_sq = torch.ones(len(CHANNELS), device=self.device)
        self._rows_at_last_fit = 0
        self.last_choice: str | None = None
        # Epochs ended so far: the epoch of the views being gathered.
        self._epochs_ended = 0
        # The weight view_trust gave the newest gradient view, which the rounds' gradient evidence takes.
        self.grad_weight = 1.0
        # Whether the epoch-0 gradients were read as randomised labels (_read_randomised_labels): from then on the
        # readings of end_epoch (cross_kmeans's labellings) are starts of every epoch-end fit.
        self.reads_randomised = False
        # The names of those starts, whose fits lead where the criterion allows (best_fit's leading).
        self._leading: tuple[str, ...] = ()
        # Whether the epoch-0 gradients looked like randomised labels that cross_kmeans did not read better
        # (_read_randomised_labels): from then on every epoch-end fit also has the anchored view (ANCHOR_WEIGHT).
        self.anchored = False
        # Each row's class as the last epoch end's response reading chose it (-1: none; _read_response).
        self._response_choice = torch.empty(0, dtype=torch.long, device=self.device)

    # -- sample index ------------------------------------------------------------------

    def _rows(self, ids: np.ndarray) -> torch.Tensor:
        added = 0
        for sid in ids.tolist():
            if sid not in self._row_of:
                self._row_of[sid] = len(self._ids)
                self._ids.append(sid)
                added += 1
        if added:
            self.labels = torch.cat([self.labels, torch.full((added,), -1, dtype=torch.long, device=self.device)])
            fresh = torch.zeros(added, self.num_classes, device=self.device)
            self._prior = torch.cat([self._prior, fresh])
            self._latest = torch.cat([self._latest, fresh])
            none = torch.full((added,), -1, dtype=torch.long, device=self.device)
            self._response_choice = torch.cat([self._response_choice, none])
        return torch.as_tensor([self._row_of[s] for s in ids.tolist()], dtype=torch.long, device=self.device)

    @property
    def seen_ids(self) -> np.ndarray:
        """Returns the ids of every training sample seen so far, in the order first seen."""
        return np.asarray(self._ids, dtype=np.int64)

    def labels_of(self, ids: np.ndarray) -> np.ndarray:
        """Returns the current estimate for ids (-1 where none is held)."""
        rows = [self._row_of.get(int(s)) for s in ids.tolist()]
        labels = self.labels.cpu().numpy()
        return np.asarray([-1 if r is None else labels[r] for r in rows], dtype=np.int64)

    def _known(self) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [(self._row_of[s], y) for s, y in self.known_label_of.items() if s in self._row_of]
        rows = torch.as_tensor([r for r, _ in pairs], dtype=torch.long, device=self.device)
        labels = torch.as_tensor([y for _, y in pairs], dtype=torch.long, device=self.device)
        return rows, labels

    # -- the attacker's frame -------------------------------------------------------------

    def frame(self, ids: np.ndarray, grad: torch.Tensor, smashed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Records one round and returns its vectors in the unified space: unit gradients, unit centred smashed.

        grad and smashed are (batch, d) rows, already in the engine's frame for this epoch.
        """
        rows = self._rows(ids)
        raw = {"grad": grad.to(self.device, torch.float32), "smashed": smashed.to(self.device, torch.float32)}
        self._rounds.append((rows, raw))
        batch_sum = raw["smashed"].sum(dim=0)
        self._smashed_sum = batch_sum if self._smashed_sum is None else self._smashed_sum + batch_sum
        self._smashed_count += len(rows)
        self._smashed_centre = self._smashed_sum / self._smashed_count
        return self._unit(raw, self._smashed_centre)

    @staticmethod
    def _unit(raw: dict[str, torch.Tensor], centre: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"grad": normalise(raw["grad"]), "smashed": normalise(raw["smashed"] - centre)}

    def tracked_prototypes(self, channel: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Returns (prototypes, classes) of the classes tracked so far in a channel, or None."""
        if self._prototypes is None or not bool(self._valid.any()):
            return None
        classes = self._valid.nonzero().squeeze(1)
        return self._prototypes[CHANNELS.index(channel)][classes], classes

    # -- rounds ------------------------------------------------------------------------

    def _evidence(self, unit: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns (batch, classes) scores of one round against the tracked prototypes (-inf: untracked class)."""
        n = len(unit["grad"])
        scores = torch.zeros(n, self.num_classes, device=self.device)
        if self._prototypes is None:
            return scores
        for c, channel in enumerate(CHANNELS):
            x = unit[channel]
            precision = x.shape[1] / (2.0 * float(self._mean_sq[c]))
            if channel == "grad":
                precision *= self.grad_weight
            scores -= precision * squared_distances(x, self._prototypes[c])
        scores[:, ~self._valid] = float("-inf")
        return scores

    def _track(self, rows: torch.Tensor, unit: dict[str, torch.Tensor]) -> None:
        labels = self.labels[rows]
        d = unit["grad"].shape[1]
        if self._prototypes is None:
            self._prototypes = torch.zeros(len(CHANNELS), self.num_classes, d, device=self.device)
        fresh = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        have = labels >= 0
        fresh[labels[have]] = True
        fresh &= ~self._valid
        tracked = have.clone()
        tracked[have] = self._valid[labels[have]]
        for c, channel in enumerate(CHANNELS):
            x = unit[channel]
            if bool(tracked.any()):
                residual = ((x[tracked] - self._prototypes[c][labels[tracked]]) ** 2).sum(dim=1).mean()
                self._mean_sq[c] = self.decay * self._mean_sq[c] + (1 - self.decay) * residual.clamp_min(1e-6)
            track_prototypes(self._prototypes[c], self._mass[c], x, labels, decay=self.decay)
        self._valid |= fresh

    def update(self, ids: np.ndarray, unit: dict[str, torch.Tensor]) -> RoundUpdate:
        """Returns the estimate for the batch after folding in one round (framed by frame() just before)."""
        rows = self._rows(ids)
        scores = self._prior[rows] + self._evidence(unit)
        predictions = torch.where(torch.isfinite(scores).any(dim=1), scores.argmax(dim=1), -1)
        known_here = [i for i, s in enumerate(ids.tolist()) if s in self.known_label_of]
        new_class = False
        for i in known_here:
            label = self.known_label_of[int(ids[i])]
            predictions[i] = label
            new_class |= not bool(self._valid[label])
        self.labels[rows] = predictions
        self._latest[rows] = _normalised_scores(scores)
        self._track(rows, unit)
        refit = new_class or len(self._ids) >= self._rows_at_last_fit * self.refit_growth
        changed = 0
        if refit and int(self._valid.sum()) >= 2:
            before = self.labels.clone()
            views = self._views + self._epoch_views()
            starts = [("current", self.labels), ("known samples", torch.full_like(self.labels, -1))]
            self._fit(starts, views=views, epoch_end=False)
            changed = int(((before >= 0) & (before != self.labels)).sum())
        else:
            refit = False
        return RoundUpdate(self.labels[rows].cpu().numpy().astype(np.int64), changed, refit)

    def binary_scores(self, ids: np.ndarray | None = None) -> np.ndarray | None:
        """Returns class-1-minus-class-0 scores of ids (default: every sample seen), for AUC on binary tasks."""
        if self.num_classes != 2:
            return None
        latest = self._latest if ids is None else self._latest[self._rows(ids)]
        return (latest[:, 1] - latest[:, 0]).nan_to_num(0.0, 0.0, 0.0).cpu().numpy()

    # -- fits ----------------------------------------------------------------------------

    def _reframe(self, rows: torch.Tensor, epoch_vectors: dict[str, torch.Tensor]) -> None:
        """Replaces this epoch's round vectors by the same samples' vectors in a new frame, round by round."""
        position = torch.full((len(self._ids),), -1, dtype=torch.long, device=self.device)
        position[rows] = torch.arange(len(rows), device=self.device)
        if any(bool((position[r] < 0).any()) for r, _ in self._rounds):
            raise ValueError("the epoch's vectors lack samples its rounds carried")
        vectors = {ch: epoch_vectors[ch].to(self.device, torch.float32) for ch in CHANNELS}
        # An epoch handed over whole (no rounds seen, as offline) counts as one round.
        rounds = [r for r, _ in self._rounds] or [rows]
        self._rounds = [(r, {ch: vectors[ch][position[r]] for ch in CHANNELS}) for r in rounds]
        smashed = torch.cat([v["smashed"] for _, v in self._rounds])
        self._smashed_sum, self._smashed_count = smashed.sum(dim=0), len(smashed)
        self._smashed_centre = self._smashed_sum / self._smashed_count

    def _epoch_views(self) -> list[View]:
        """Returns this epoch's views so far: its unit gradients, its smashed data in two geometries, and
        the smashed data seen through the gradients (cross_channel).

        The smashed data are looked at centred on the epoch's mean (the unified space) and as the engine
        framed them (the single attacks' geometry: not centred again). Which of the two separates the
        classes better depends on the bottom model and cannot be told without labels (ReLU outputs lie in
        one orthant, where centring spreads their directions; on breast_cancer under Marvell the
        uncentred directions separate better), so each counts half: together one look at the channel.
        """
        if not self._rounds:
            return []
        rows = torch.cat([r for r, _ in self._rounds])
        raw = {ch: torch.cat([v[ch] for _, v in self._rounds]) for ch in CHANNELS}
        unit = self._unit(raw, raw["smashed"].mean(dim=0))
        keep = max(16, 4 * self.num_classes)
        epoch = self._epochs_ended
        views = [
            View.of(rows, unit["grad"], "grad", keep=keep, epoch=epoch),
            View.of(rows, unit["smashed"], "smashed", keep=keep, epoch=epoch).weighted(0.5),
            View.of(rows, normalise(raw["smashed"]), "smashed", keep=keep, epoch=epoch).weighted(0.5),
        ]
        predicted = cross_channel(unit["smashed"], unit["grad"])
        if predicted is not None:
            cross = View.of(rows, cross_directions(predicted), "cross", keep=keep, epoch=epoch)
            views.append(cross.weighted(CROSS_WEIGHT))
        return views

    def _anchored_view(self, epoch_views: list[View]) -> View | None:
        """Returns the epoch's smashed data (centred, unit) with each class's centre held at its known sample
        (ANCHOR_WEIGHT), or None where the epoch holds no known sample."""
        smashed = next((view for view in epoch_views if view.channel == "smashed"), None)
        if smashed is None:
            return None
        known_rows, known_labels = self._known()
        position = torch.full((len(self._ids),), -1, dtype=torch.long, device=self.device)
        position[smashed.rows] = torch.arange(len(smashed.rows), device=self.device)
        inside = position[known_rows] >= 0
        if not bool(inside.any()):
            return None
        anchors = (position[known_rows[inside]], known_labels[inside])
        return dataclasses.replace(smashed, channel="anchor", weight=ANCHOR_WEIGHT, memo={}, anchors=anchors)

    def _fit_epoch_end(self, starts: list[tuple[str, torch.Tensor]], epoch_views: list[View]) -> list[View]:
        """Fits every view so far from the starts; in an anchored run with the anchored view of this epoch
        too, and from its own reading (the nearest known sample) as one more start."""
        views = self._views
        anchored = self._anchored_view(epoch_views) if self.anchored else None
        if anchored is not None:
            scores, _ = _view_scores([anchored], self.labels, len(self._ids), self.num_classes)
            nearest = self.labels.clone()
            nearest[anchored.rows] = scores[anchored.rows].argmax(dim=1)
            views = views + [anchored]
            starts = starts + [("the nearest known sample", nearest)]
        return self._fit(starts, views=views, epoch_end=True)

    def _fit(self, starts: list[tuple[str, torch.Tensor]], *, views: list[View], epoch_end: bool) -> list[View]:
        """Fits the views from the starts and holds the best fit's labelling; returns the views as view_trust
        weighted them."""
        known_rows, known_labels = self._known()
        wide_search = epoch_end and self.num_classes >= REFERENCE_FROM
        views = view_trust(
            views,
            num_rows=len(self._ids),
            known_rows=known_rows,
            known_labels=known_labels,
            num_classes=self.num_classes,
            seed=self.seed,
            restarts=self.restarts,
            natural_restarts=max(self.restarts, NATURAL_RESTARTS) if wide_search else self.restarts,
            max_iters=self.max_iters,
        )
        grads = [v for v in views if v.channel == "grad"]
        if grads:
            self.grad_weight = grads[-1].weight
        name, fit = best_fit(
            views,
            num_rows=len(self._ids),
            known_rows=known_rows,
            known_labels=known_labels,
            num_classes=self.num_classes,
            starts=starts,
            max_iters=self.max_iters,
            # One known sample of DISTINCT_FROM or more is within chance.
            known_slack=1 if self.num_classes >= DISTINCT_FROM else 0,
            # The first start is always the attacker's own labelling ("current" or "cumulative").
            held=starts[0][0],
            leading=self._leading,
        )
        choice = f"fit started from {name}"
        if any(view.anchors is not None for view in views):
            choice += ", with the newest smashed data anchored at the known samples"
        few = fit.known_agreement <= RENAME_BELOW * len(known_rows)
        if epoch_end and self.num_classes >= REFERENCE_FROM and len(known_rows) and few:
            renamed = named_by_known_samples(
                views, fit, known_rows=known_rows, known_labels=known_labels, num_classes=self.num_classes
            )
            if renamed.known_agreement > fit.known_agreement:
                choice += (
                    f", renamed by the known samples (they placed {fit.known_agreement}, "
                    f"now {renamed.known_agreement} of {len(known_rows)})"
                )
                fit = renamed
        covered = fit.labels >= 0
        self.labels = torch.where(covered, fit.labels, self.labels)
        self._prior = torch.where(covered[:, None], _normalised_scores(fit.scores), self._prior)
        self._latest = torch.where(covered[:, None], self._prior, self._latest)
        self._rows_at_last_fit = len(self._ids)
        self.last_choice = choice
        self._retrack()
        if self._prototypes is not None:
            self._valid |= self._mass.sum(dim=0) > 0
        return views

    def _retrack(self) -> None:
        """Rebuilds the tracked prototypes from this epoch's rounds under the current labels."""
        if self._prototypes is None or not self._rounds:
            return
        d = self._rounds[0][1]["grad"].shape[1]
        self._prototypes = torch.zeros(len(CHANNELS), self.num_classes, d, device=self.device)
        self._mass.zero_()
        centre = self._smashed_centre
        residuals = torch.zeros(len(CHANNELS), device=self.device)
        count = 0
        for rows, raw in self._rounds:
            unit = self._unit(raw, centre)
            labels = self.labels[rows]
            for c, channel in enumerate(CHANNELS):
                track_prototypes(self._prototypes[c], self._mass[c], unit[channel], labels, decay=self.decay)
        for rows, raw in self._rounds:
            unit = self._unit(raw, centre)
            labels = self.labels[rows]
            have = labels >= 0
            for c, channel in enumerate(CHANNELS):
                residuals[c] += ((unit[channel][have] - self._prototypes[c][labels[have]]) ** 2).sum()
            count += int(have.sum())
        if count:
            self._mean_sq = (residuals / count).clamp_min(1e-6)

    def _read_randomised_labels(self, rows: torch.Tensor, views: list[View]) -> None:
        """At the end of epoch 0, takes cross_kmeans's labelling of the epoch where the gradients follow
        randomised labels and the smashed data read them better than the fit does.

        The fit is a clustering of the views; cross_kmeans learns from the gradients' clusters as from
        labels (a ridge map from the smashed data), which is what reads randomised labels: a randomised
        label is the true one more often than any other, whatever the input. Which of the two labellings is
        right more often is told from the gradients' clusters themselves. Under randomized response the
        randomised label depends on the input only through the true one, so of two labellings made
        without it, the one that predicts it better is right more often. In epoch 0 the smashed data are
        made without it: each sample's vector is computed before its first gradient step, while in later
        epochs the bottom model has learnt the training samples' randomised labels (on the captures of
        docs/attacker-changes.md the fit then predicted the clusters better than cross_kmeans while right
        less often). So the two are compared in epoch 0 only, each made without the rows' own cluster:
        cross_kmeans read out of fold (cross_fitted_labels), and the fit's labelling as every view but the
        gradients scores it (the cross-channel view, a ridge prediction of the gradients, still carries a
        little of the row's own; that favours the fit, so the test errs towards keeping it).

        The check applies from DISTINCT_FROM classes on, where the newest gradient view weighs at most
        RANDOMISED_WEIGHT (tight clusters the smashed data do not share) and its clusters explain at least
        RANDOMISED_EXPLAINED of its variance (DP-SGD's noise explains 0.03), and the labelling switches
        where cross_kmeans predicts the clusters better by more than SWITCH_Z (paired_z); where it does not,
        the epoch-end fits are anchored instead, this epoch's made again (anchored, ANCHOR_WEIGHT). The
        clusters are those of the single attacks (same seed, restarts and tolerance), so the labelling taken
        is the cross_kmeans attack's of the same epoch.

        Only the labelling held changes. The views' posterior, to which the next epoch's rounds add their
        evidence, stays the fit's: made from the views' scores under the new labelling instead, it moved
        the later epochs both ways (label DP at epsilon 1, epoch 2: 0.646 to 0.529), while kept, the later
        epochs came out as without the switch on every capture replayed.
        """
        if self.num_classes < DISTINCT_FROM or self.grad_weight > RANDOMISED_WEIGHT or not self._rounds:
            return
        order = torch.cat([r for r, _ in self._rounds])
        position = torch.full((len(self._ids),), -1, dtype=torch.long, device=self.device)
        position[order] = torch.arange(len(order), device=self.device)
        at = position[rows]
        if bool((at < 0).any()):
            return
        grad = torch.cat([v["grad"] for _, v in self._rounds])[at]
        smashed = torch.cat([v["smashed"] for _, v in self._rounds])[at]
        seed = attack_seed(self.seed, self._epochs_ended)
        ctx = AttackContext(
            num_classes=self.num_classes,
            measure="cosine",
            kmeans_iters=self.kmeans_iters,
            seed=seed,
            kmeans_restarts=self.restarts,
            kmeans_tol=self.kmeans_tol,
        )
        clusters, _ = KMeansHungarianAttack.clusters(grad, ctx)
        explained = explained_share(grad, clusters)
        if explained < RANDOMISED_EXPLAINED:
            return
        index = {int(r): i for i, r in enumerate(rows.tolist())}
        known = [(index[self._row_of[s]], y) for s, y in self.known_label_of.items() if self._row_of.get(s) in index]
        if len({y for _, y in known}) < 2:
            return
        known_at = torch.as_tensor([i for i, _ in known], dtype=torch.long, device=self.device)
        known_labels = torch.as_tensor([y for _, y in known], dtype=torch.long, device=self.device)
        k = min(self.num_classes, len(clusters))
        held_out = cross_fitted_labels(
            smashed,
            clusters,
            k,
            known_rows=known_at,
            known_labels=known_labels,
            generator=torch.Generator().manual_seed(seed),
        )
        others = [v for v in views if v.channel != "grad"]
        scores, _ = _view_scores(others, self.labels, len(self._ids), self.num_classes)
        seen = scores.argmax(dim=1)[rows]
        seen[known_at] = known_labels
        z = paired_z(clusters.cpu().numpy(), seen.cpu().numpy(), held_out.cpu().numpy(), k)
        if z <= SWITCH_Z:
            self.anchored = True
            self.last_choice = (
                f"{self.last_choice}; the gradients' clusters (explaining {explained:.2f} of their variance) are "
                f"read no better by cross_kmeans, out of fold, than by the fit (z = {z:.1f}): the fits are "
                "anchored at the known samples from now on"
            )
            return
        reference = Reference(smashed[known_at], known_labels, "known samples")
        labels = CrossKMeansAttack.read(clusters, smashed, reference, self.num_classes).labels.to(self.device)
        labels[known_at] = known_labels
        self.labels[rows] = labels
        self.reads_randomised = True
        self.last_choice = (
            f"cross_kmeans's labelling: the gradients' clusters (explaining {explained:.2f} of their variance, "
            f"weighted {self.grad_weight:.3g}) are read better by it, out of fold, than by the fit (z = {z:.1f})"
        )

    def _read_response(self, views: list[View]) -> None:
        """Where the attacker's labelling is the newest gradients' own clusters, corrects the rows whose cluster
        the smashed data overrule, at this epoch end and the one before.

        Under randomized response the gradients cluster by the randomised labels, and where the smashed
        data do not yet tell the classes apart better, the fit follows those clusters (label DP at epsilon 5
        with the uniform prior: 0.945 right at every epoch end, the randomised labels themselves, while
        cross_kmeans, which reads the classes from the smashed data alone, reached 0.964). fit_response
        weighs both: each row's class as the smashed data predict it (cross_kmeans's rises, read out of
        fold) and its own cluster, by log-odds fitted to how often the two agree; under randomized response
        with the uniform prior those log-odds are epsilon (4.4 to 5.1 on the captures at epsilon 5, 0.96 to
        1.04 at epsilon 1). Where the gradients hold the labels, the fitted log-odds are large and the
        reading is the clusters.

        A row changes class only where the reading gives the same other class at this epoch end and the
        one before: randomised labels are drawn once per run, so their flips recur, while a reading's
        errors (a fresh bottom model in epoch 0: without a defense, the reading put 2.5% of the rows in
        another class than their cluster, which held the labels) come from a bottom model that changes
        between epochs. Only the labelling held changes, as in _read_randomised_labels.
        """
        choice = torch.full_like(self._response_choice, -1)
        newest = [v for v in views if v.channel == "grad" and v.epoch == self._epochs_ended]
        clusters = newest[0].memo.get("natural") if newest and self.num_classes >= DISTINCT_FROM else None
        if clusters is None or not self._rounds:
            self._response_choice = choice
            return
        view = newest[0]
        k = self.num_classes
        held = self.labels[view.rows]
        partition = clusters.cpu().numpy()
        matched = matched_names(partition, held.cpu().numpy(), k)
        if float(np.mean(matched[partition] == held.cpu().numpy())) < RESPONSE_AGREEMENT:
            self._response_choice = choice
            return
        name = torch.as_tensor(matched, device=self.device)
        # The smashed data as the engine framed them, in the view's row order (both follow the epoch's rounds).
        smashed = torch.cat([v["smashed"] for _, v in self._rounds])
        generator = torch.Generator().manual_seed(attack_seed(self.seed, self._epochs_ended))
        rises = cross_fitted_rises(smashed, clusters, k, generator=generator)
        response = fit_response(rises, clusters, k)
        read = name[response.scores.argmax(dim=1).to(self.device)]
        choice[view.rows] = read
        previous, self._response_choice = self._response_choice, choice
        switch = (read != held) & (previous[view.rows] == read)
        known_rows, _ = self._known()
        is_known = torch.zeros(len(self._ids), dtype=torch.bool, device=self.device)
        is_known[known_rows] = True
        switch &= ~is_known[view.rows]
        self.labels[view.rows[switch]] = read[switch]
        self.last_choice = (
            f"{self.last_choice}; the gradients' clusters read as randomized response (log-odds "
            f"{response.log_odds:.2f}, {response.keep(k):.3f} kept): {int(switch.sum())} rows moved"
        )

    def end_epoch(
        self,
        ids: np.ndarray,
        candidates: dict[str, np.ndarray],
        epoch_vectors: dict[str, torch.Tensor] | None = None,
        readings: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Returns the estimate for ids after fitting every view so far, from the best starting labelling.

        candidates: labellings of ids (one per single attack on one channel of this epoch); the attacker's
        own current labelling is always a candidate too. epoch_vectors: the epoch's vectors of ids per
        channel in the frame the next epoch's rounds will come in (the engine's new PCA axes); they
        make this epoch's views and the prototypes the next epoch starts from. Without them the
        rounds' own vectors are used. readings: labellings of ids by the attacks on both channels
        (cross_kmeans). From the epoch after the one whose gradients were read as randomised labels
        (reads_randomised) they are starts too, and their fits are kept wherever they are among
        best_fit's candidates (leading). There cross_kmeans is the attack that reads the randomised
        labels, and epoch 0, before the bottom model learnt them, showed it right more often than the fit;
        later the criterion cannot tell the two apart (under label DP at epsilon 1 the fit from
        cross_kmeans, 0.788 right, was 0.00002 from the fit the consensus kept, 0.646). Elsewhere they
        are no start: as one more, cross_kmeans moved the consensus among the close fits near chance
        under DP-SGD (docs/attacker-changes.md).
        """
        rows = self._rows(ids)
        if epoch_vectors is not None:
            self._reframe(rows, epoch_vectors)
        epoch_views = self._epoch_views()
        self._views += epoch_views
        initial = {"cumulative": self.labels.clone(), "known samples": torch.full_like(self.labels, -1)}
        labellings = {**candidates, **(readings or {})} if self.reads_randomised else candidates
        self._leading = tuple(readings or ()) if self.reads_randomised else ()
        for name, predictions in labellings.items():
            init = self.labels.clone()
            init[rows] = torch.as_tensor(predictions, dtype=torch.long, device=self.device)
            initial[name] = init
        # Every start on all views, weighted by view_trust: a labelling that only
        # the gradients carry (randomised labels, noise) no longer outweighs the smashed data.
        starts = list(initial.items())
        if self._known()[0].numel():
            trusted = self._fit_epoch_end(starts, epoch_views)
            if self._epochs_ended == 0:
                self._read_randomised_labels(rows, trusted)
                if self.anchored:
                    # The check decides at this epoch's end, from its fit; the epoch's fit is made again, anchored.
                    check = self.last_choice
                    starts[0] = ("cumulative", self.labels.clone())
                    trusted = self._fit_epoch_end(starts, epoch_views)
                    self.last_choice = f"{check}; this epoch's {self.last_choice}"
            self._read_response(trusted)
        # The next epoch starts from this epoch's frame: its smashed centre and the prototypes just rebuilt.
        self._rounds = []
        self._smashed_sum, self._smashed_count = None, 0
        self._epochs_ended += 1
        return self.labels[rows].cpu().numpy().astype(np.int64)
