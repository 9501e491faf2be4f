"""Runs the configured attacks on what the tap collected: per round, per epoch, at inference.

It holds the attacker's prior knowledge (known sample ids and labels) and
what it learnt during the run (the latest vectors of the known samples, the
last epoch's labelled training smashed data, the cumulative attacker's state).
It never sees ground truth.

Vectors wider than adversary.attacks.pca_above are reduced to pca_dim: at each
epoch end one PCA per data kind (gradients, smashed data) is fitted on the
epoch's vectors and every attack of that epoch works in it; rounds of the next
epoch (and the inference pass) are projected on those axes. Before the first
fit, rounds use a seeded random projection.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from adversary.attacks import ATTACKS, AttackContext, AttackResult, Reference
from adversary.attacks.base import attack_seed
from adversary.attacks.cumulative import CumulativeAttacker
from adversary.attacks.similarity import Frame, fit_pca, random_frame

log = logging.getLogger(__name__)

__all__ = ["AttackEngine", "cumulative_starts"]

MEASURES = {"grad": "cosine", "smashed": "euclidean", "none": "euclidean"}
KINDS = ("grad", "smashed")


def _flat(vectors: torch.Tensor) -> torch.Tensor:
    """Returns one row per sample: attacks see a convolutional cut's feature maps as flat vectors."""
    return vectors.reshape(len(vectors), -1)


def cumulative_starts(results: list[AttackResult]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Returns the epoch's single-attack labellings that the cumulative attacker's end_epoch takes: the
    candidates (attacks on one channel) and the readings (attacks on both channels: cross_kmeans), each
    named attack.data, of the attacks that labelled every sample.

    Those on both channels are starts only where the attacker read the gradients as randomised labels:
    elsewhere, as one more start, cross_kmeans moved the consensus among the close fits near chance, and
    the attacker gave up labellings it held (the tables made with it, docs/attacker-changes.md: DP-SGD at
    epsilon 50 ended at 0.565 instead of 0.718).
    """
    complete = [r for r in results if r.note is None and r.data != "none" and bool((r.predictions >= 0).all())]
    candidates = {f"{r.attack}.{r.data}": r.predictions for r in complete if r.data != "both"}
    readings = {f"{r.attack}.{r.data}": r.predictions for r in complete if r.data == "both"}
    return candidates, readings


class AttackEngine:
    def __init__(
        self,
        attack_cfg,
        *,
        known_ids: np.ndarray,
        known_labels: np.ndarray,
        num_classes: int,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.cfg = attack_cfg
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.seed = seed
        self._prior = (np.asarray(known_ids), np.asarray(known_labels))
        self.known_label_of = {int(i): int(y) for i, y in zip(known_ids, known_labels)}
        # Latest (flat, full-width) vector of each known sample, per data kind, updated as rounds arrive.
        self._latest: dict[str, dict[int, torch.Tensor]] = {"grad": {}, "smashed": {}}
        # The frame of each data kind: fitted at the last epoch end, or random before the first (None: narrow).
        self._frames: dict[str, Frame | None] = {"grad": None, "smashed": None}
        self._last_epoch_known_smashed: Reference | None = None
        # Training smashed data of the last epoch, in the smashed frame, labelled by the labeller.
        self._train_labelled: Reference | None = None
        self._previous_cumulative: tuple[np.ndarray, np.ndarray] | None = None
        # Seconds the last epoch's frame (fit and projection) of each data kind took.
        self.frame_seconds: dict[str, float] = {}
        self.cumulative = (
            CumulativeAttacker(
                known_label_of=self.known_label_of,
                num_classes=num_classes,
                seed=seed,
                halflife_rounds=attack_cfg.tracking_halflife,
                refit_growth=attack_cfg.refit_growth,
                restarts=attack_cfg.kmeans_restarts,
                kmeans_iters=attack_cfg.kmeans_iters,
                kmeans_tol=attack_cfg.kmeans_tol,
                device=self.device,
            )
            if attack_cfg.cumulative
            else None
        )

    def fresh(self) -> "AttackEngine":
        """Returns an engine with the same prior knowledge and nothing learnt yet."""
        known_ids, known_labels = self._prior
        return AttackEngine(
            self.cfg,
            known_ids=known_ids,
            known_labels=known_labels,
            num_classes=self.num_classes,
            device=str(self.device),
            seed=self.seed,
        )

    # -- frames ----------------------------------------------------------------------

    def _round_frame(self, data: str, width: int) -> Frame | None:
        """Returns the frame rounds of this data kind are projected on (None: narrow enough as they are)."""
        if width <= self.cfg.pca_above:
            return None
        frame = self._frames[data]
        if frame is None or frame.width != width:
            frame = random_frame(width, self.cfg.pca_dim, seed=self.seed + KINDS.index(data), device=self.device)
            self._frames[data] = frame
        return frame

    def _fit_frame(self, data: str, vectors: torch.Tensor, epoch: int) -> Frame | None:
        """Fits the frame of one data kind on an epoch's vectors (once, for every attack of the epoch)."""
        if vectors.shape[1] <= self.cfg.pca_above:
            return None
        frame = fit_pca(
            vectors,
            dim=self.cfg.pca_dim,
            seed=self.seed * 1_000 + epoch * 2 + KINDS.index(data),
            max_rows=self.cfg.pca_fit_samples,
        )
        self._frames[data] = frame
        return frame

    @staticmethod
    def _in(frame: Frame | None, vectors: torch.Tensor) -> torch.Tensor:
        return vectors if frame is None else frame.project(vectors)

    def _reference_in(self, frame: Frame | None, reference: Reference | None) -> Reference | None:
        if reference is None:
            return None
        vectors = self._in(frame, reference.vectors.to(self.device))
        return Reference(vectors, reference.labels.to(self.device), reference.source)

    # -- helpers ---------------------------------------------------------------------

    def _known_in(self, ids: np.ndarray, vectors: torch.Tensor, source: str) -> Reference | None:
        """Returns the known samples among ids as a Reference, or None if there are none."""
        rows = [r for r, sid in enumerate(ids.tolist()) if sid in self.known_label_of]
        if not rows:
            return None
        labels = torch.tensor([self.known_label_of[int(ids[r])] for r in rows])
        return Reference(vectors[rows], labels, source)

    def _run(
        self,
        names: list[str],
        data: str,
        phase: str,
        ids: np.ndarray,
        x: torch.Tensor,
        references: dict[str, Reference | None],
        round_seed: int,
        with_baselines: bool,
    ) -> list[AttackResult]:
        """Returns the results of the named attacks that apply to this data kind and task.

        x and the references are already in one frame; the random guess needs no vectors at all.
        """
        x = x.to(self.device)
        references = {
            kind: None
            if ref is None
            else Reference(ref.vectors.to(self.device), ref.labels.to(self.device), ref.source)
            for kind, ref in references.items()
        }
        references["none"] = Reference(x[:0], torch.empty(0, dtype=torch.long, device=self.device), "none")
        results = []
        for name in names:
            attack = ATTACKS.get(name)()
            guess = attack.data_kinds == ("none",)
            if (guess and not with_baselines) or (not guess and data not in attack.data_kinds):
                continue
            if attack.binary_only and self.num_classes != 2:
                continue
            kind = "none" if guess else data
            ref_kind = "none" if guess else attack.reference_kind
            reference = references.get(ref_kind)
            if reference is None:
                results.append(
                    AttackResult(
                        name, kind, phase, ids, np.full(len(ids), -1), 0.0, note=f"no {ref_kind} reference yet"
                    )
                )
                continue
            start = time.perf_counter()
            ctx = AttackContext(
                num_classes=self.num_classes,
                measure=MEASURES[kind],
                kmeans_iters=self.cfg.kmeans_iters,
                kmeans_restarts=self.cfg.kmeans_restarts,
                kmeans_tol=self.cfg.kmeans_tol,
                seed=attack_seed(self.seed, round_seed),
            )
            prediction = attack.predict(x, reference, ctx)
            results.append(
                AttackResult(
                    name,
                    kind,
                    phase,
                    ids,
                    prediction.labels.cpu().numpy().astype(np.int64),
                    time.perf_counter() - start,
                    scores=None if prediction.scores is None else prediction.scores.cpu().numpy(),
                    reference=None if guess else reference.source,
                )
            )
        return results

    # -- training --------------------------------------------------------------------

    def train_round(self, ids: np.ndarray, smashed: torch.Tensor, grad: torch.Tensor) -> list[AttackResult]:
        """Returns the per-round attacks on one batch (against the latest known vectors seen so far, or
        against the tracked prototypes), then the cumulative attacker's estimate after this round."""
        batch = {"grad": _flat(grad).to(self.device), "smashed": _flat(smashed).to(self.device)}
        frames = {data: self._round_frame(data, v.shape[1]) for data, v in batch.items()}
        framed = {data: self._in(frames[data], v) for data, v in batch.items()}
        tracked = [n for n in self.cfg.per_round if ATTACKS.get(n).reference_kind == "tracked"]
        known = [n for n in self.cfg.per_round if n not in tracked]
        results = []
        for data in KINDS:
            latest = self._latest[data]
            for row, sid in enumerate(ids.tolist()):
                if sid in self.known_label_of:
                    latest[sid] = batch[data][row]
            reference = None
            if latest:
                order = sorted(latest)
                reference = Reference(
                    torch.stack([latest[i] for i in order]),
                    torch.tensor([self.known_label_of[i] for i in order]),
                    f"latest vectors of {len(order)} known samples",
                )
            results += self._run(
                known,
                data,
                "train",
                ids,
                framed[data],
                {"known": self._reference_in(frames[data], reference)},
                round_seed=int(ids[0]),
                with_baselines=data == "grad",
            )
        if self.cumulative is None:
            for data in KINDS:
                results += self._run(tracked, data, "train", ids, framed[data], {"tracked": None}, int(ids[0]), False)
            return results
        start = time.perf_counter()
        unit = self.cumulative.frame(ids, framed["grad"], framed["smashed"])
        for data in KINDS:
            prototypes = self.cumulative.tracked_prototypes(data)
            reference = None
            if prototypes is not None:
                reference = Reference(
                    *prototypes, f"prototypes of {len(prototypes[1])} classes tracked over recent rounds"
                )
            results += self._run(tracked, data, "train", ids, unit[data], {"tracked": reference}, int(ids[0]), False)
        update = self.cumulative.update(ids, unit)
        seen = self.cumulative.seen_ids
        results.append(
            AttackResult(
                "cumulative",
                "both",
                "train",
                seen,
                self.cumulative.labels.cpu().numpy().astype(np.int64),
                time.perf_counter() - start,
                scores=self.cumulative.binary_scores(),
                reference="every round so far, both channels, prototypes tracked over recent rounds",
                batch_predictions=update.batch_predictions,
                extra={"changed": update.changed, "refit": update.refit},
            )
        )
        return results

    def epoch_attacks(
        self, data: str, epoch: int, ids: np.ndarray, vectors: torch.Tensor, names: list[str] | None = None
    ) -> tuple[list[AttackResult], torch.Tensor]:
        """Returns the epoch-end single attacks on one data kind (all of per_epoch, or names) and the
        epoch's vectors in the frame fitted on them (frame_seconds[data]: what fitting and projecting cost)."""
        start = time.perf_counter()
        frame = self._fit_frame(data, vectors, epoch)
        reduced = self._in(frame, vectors)
        if reduced.is_cuda:
            torch.cuda.synchronize(reduced.device)
        self.frame_seconds[data] = time.perf_counter() - start
        reference = self._known_in(ids, reduced, f"epoch {epoch} vectors of the known samples")
        results = self._run(
            self.cfg.per_epoch if names is None else names,
            data,
            "train",
            ids,
            reduced,
            {"known": reference},
            round_seed=epoch,
            with_baselines=data == "grad",
        )
        return results, reduced

    def pair_attacks(self, epoch: int, ids: np.ndarray, reduced: dict[str, torch.Tensor]) -> list[AttackResult]:
        """Returns the epoch-end attacks on both channels at once (data "both"), on the epoch's vectors in
        their frames, with the known samples' smashed vectors of the same epoch as the reference."""
        names = [n for n in self.cfg.per_epoch if ATTACKS.get(n).data_kinds == ("both",)]
        if not names:
            return []
        reference = self._known_in(ids, reduced["smashed"], f"epoch {epoch} smashed vectors of the known samples")
        if reference is not None:
            reference = Reference(reference.vectors.to(self.device), reference.labels.to(self.device), reference.source)
        results = []
        for name in names:
            if reference is None:
                results.append(
                    AttackResult(name, "both", "train", ids, np.full(len(ids), -1), 0.0, note="no known reference yet")
                )
                continue
            start = time.perf_counter()
            ctx = AttackContext(
                num_classes=self.num_classes,
                measure="cosine",
                kmeans_iters=self.cfg.kmeans_iters,
                kmeans_restarts=self.cfg.kmeans_restarts,
                kmeans_tol=self.cfg.kmeans_tol,
                seed=attack_seed(self.seed, epoch),
            )
            prediction = ATTACKS.get(name)().predict_pair(
                reduced["grad"].to(self.device), reduced["smashed"].to(self.device), reference, ctx
            )
            results.append(
                AttackResult(
                    name,
                    "both",
                    "train",
                    ids,
                    prediction.labels.cpu().numpy().astype(np.int64),
                    time.perf_counter() - start,
                    scores=None if prediction.scores is None else prediction.scores.cpu().numpy(),
                    reference=reference.source,
                )
            )
        return results

    def train_epoch(self, epoch: int, ids: np.ndarray, smashed: torch.Tensor, grad: torch.Tensor) -> list[AttackResult]:
        """Returns the full-epoch attacks, with the known samples' vectors from the same epoch."""
        raw = {"grad": _flat(grad).to(self.device), "smashed": _flat(smashed).to(self.device)}
        reduced = {}
        results = []
        for data in KINDS:
            found, reduced[data] = self.epoch_attacks(data, epoch, ids, raw[data])
            results += found
        results += self.pair_attacks(epoch, ids, reduced)
        if self.cumulative is not None:
            start = time.perf_counter()
            # Every single attack's labelling is a place the cumulative fit may start from (cumulative_starts).
            candidates, readings = cumulative_starts(results)
            predictions = self.cumulative.end_epoch(ids, candidates, epoch_vectors=reduced, readings=readings)
            previous, self._previous_cumulative = self._previous_cumulative, (ids, predictions)
            agreement = None
            if previous is not None:
                same = np.isin(ids, previous[0])
                before = dict(zip(previous[0].tolist(), previous[1].tolist()))
                now = predictions[same]
                agreement = round(float(np.mean([before[i] == p for i, p in zip(ids[same].tolist(), now)])), 6)
            results.append(
                AttackResult(
                    "cumulative",
                    "both",
                    "train",
                    ids,
                    predictions,
                    time.perf_counter() - start,
                    scores=self.cumulative.binary_scores(ids),
                    reference=(
                        f"epochs 0-{epoch}, both channels (newest gradient view weighted "
                        f"{self.cumulative.grad_weight:.3g}); {self.cumulative.last_choice}"
                    ),
                    extra={
                        "agreement_with_previous_epoch": agreement,
                        "grad_weight": round(self.cumulative.grad_weight, 6),
                    },
                )
            )
        self._last_epoch_known_smashed = self._known_in(
            ids, raw["smashed"], f"smashed data of the known samples in training epoch {epoch}"
        )
        labeller = next((r for r in results if f"{r.attack}.{r.data}" == self.cfg.labeller and r.note is None), None)
        if labeller is not None:
            self._train_labelled = Reference(
                reduced["smashed"],
                torch.as_tensor(labeller.predictions, device=self.device),
                f"epoch {epoch} training smashed data labelled by {self.cfg.labeller}",
            )
        return results

    # -- inference -------------------------------------------------------------------

    def _inference_reference(self, side_channel) -> Reference | None:
        if side_channel is not None:
            ids, smashed = side_channel
            reference = self._known_in(
                np.asarray(ids),
                _flat(smashed).to(self.device),
                "known samples embedded in eval mode by the feature party (side channel)",
            )
            if reference is not None:
                return reference
        return self._last_epoch_known_smashed

    def _infer_inputs(self, smashed: torch.Tensor, known: Reference | None) -> tuple[torch.Tensor, dict]:
        """Returns the inference smashed data and references in the last training epoch's smashed frame."""
        flat = _flat(smashed).to(self.device)
        frame = self._round_frame("smashed", flat.shape[1])
        return self._in(frame, flat), {
            "known": self._reference_in(frame, known),
            "train_labelled": self._train_labelled,
        }

    def infer_round(self, ids: np.ndarray, smashed: torch.Tensor) -> list[AttackResult]:
        """Returns the per-round inference attacks (known samples from the last training epoch)."""
        x, references = self._infer_inputs(smashed, self._last_epoch_known_smashed)
        return self._run(
            self.cfg.per_round, "smashed", "infer", ids, x, references, round_seed=int(ids[0]), with_baselines=True
        )

    def infer_end(self, ids: np.ndarray, smashed: torch.Tensor, *, side_channel=None) -> list[AttackResult]:
        """Returns the inference-phase attacks on the whole inference pass."""
        x, references = self._infer_inputs(smashed, self._inference_reference(side_channel))
        results = self._run(
            self.cfg.inference, "smashed", "infer", ids, x, references, round_seed=0, with_baselines=True
        )
        # Label-free: how much each inference attack agrees with the others (what a run without
        # ground truth can say about them).
        labellings = [r for r in results if r.note is None and r.data != "none"]
        for r in labellings:
            others = [o.predictions for o in labellings if o is not r]
            if others:
                r.extra = {"agreement": round(float(np.mean([np.mean(r.predictions == o) for o in others])), 6)}
        return results
