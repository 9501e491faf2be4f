"""Runs the configured attacks on what the tap collected: per round, per epoch, at inference.

It holds the attacker's prior knowledge (known sample ids and labels) and
what it learnt during the run (the latest vectors of the known samples, the
last epoch's labelled training smashed data). It never sees ground truth.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from adversary.attacks import ATTACKS, AttackContext, AttackResult, Reference
from adversary.attacks.cumulative import CumulativeAttacker
from adversary.attacks.similarity import reduce_dim

log = logging.getLogger(__name__)

__all__ = ["AttackEngine"]

MEASURES = {"grad": "cosine", "smashed": "euclidean", "none": "euclidean"}


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
        self.known_label_of = {int(i): int(y) for i, y in zip(known_ids, known_labels)}
        # Latest vector of each known sample, per data kind, updated as rounds arrive.
        self._latest: dict[str, dict[int, torch.Tensor]] = {"grad": {}, "smashed": {}}
        self._last_epoch_known_smashed: Reference | None = None
        self._train_labelled: Reference | None = None
        self._previous_cumulative: tuple[np.ndarray, np.ndarray] | None = None
        self.cumulative = (
            CumulativeAttacker(
                known_label_of=self.known_label_of,
                num_classes=num_classes,
                width_limit=attack_cfg.pca_above,
                projected_dim=attack_cfg.pca_dim,
                seed=seed,
                halflife_rounds=attack_cfg.tracking_halflife,
                refit_growth=attack_cfg.refit_growth,
                device=self.device,
            )
            if attack_cfg.cumulative
            else None
        )

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
        vectors: torch.Tensor,
        references: dict[str, Reference | None],
        round_seed: int,
        with_baselines: bool,
    ) -> list[AttackResult]:
        """Returns the results of the named attacks that apply to this data kind and task."""
        references = {**references, "none": Reference(vectors[:0], torch.empty(0, dtype=torch.long), "none")}
        reduced: dict[str, tuple[torch.Tensor, Reference]] = {}
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
            if ref_kind not in reduced:
                x, (ref_vectors,) = reduce_dim(
                    vectors.to(self.device),
                    [reference.vectors.to(self.device)],
                    above=self.cfg.pca_above,
                    dim=self.cfg.pca_dim,
                )
                reduced[ref_kind] = x, Reference(ref_vectors, reference.labels.to(self.device), reference.source)
            x, ref = reduced[ref_kind]
            ctx = AttackContext(
                num_classes=self.num_classes,
                measure=MEASURES[kind],
                kmeans_iters=self.cfg.kmeans_iters,
                kmeans_restarts=self.cfg.kmeans_restarts,
                kmeans_tol=self.cfg.kmeans_tol,
                seed=self.seed * 100003 + round_seed,
            )
            prediction = attack.predict(x, ref, ctx)
            results.append(
                AttackResult(
                    name,
                    kind,
                    phase,
                    ids,
                    prediction.labels.cpu().numpy().astype(np.int64),
                    time.perf_counter() - start,
                    scores=None if prediction.scores is None else prediction.scores.cpu().numpy(),
                    reference=None if guess else ref.source,
                )
            )
        return results

    # -- training --------------------------------------------------------------------

    def train_round(self, ids: np.ndarray, smashed: torch.Tensor, grad: torch.Tensor) -> list[AttackResult]:
        """Returns the per-round attacks on one batch (against the latest known vectors seen so far, or
        against the tracked prototypes), then the cumulative attacker's estimate after this round."""
        tracked = [n for n in self.cfg.per_round if ATTACKS.get(n).reference_kind == "tracked"]
        results = self._known_round(ids, smashed, grad, [n for n in self.cfg.per_round if n not in tracked])
        if self.cumulative is None:
            for data in ("grad", "smashed"):
                vectors = grad if data == "grad" else smashed
                results += self._run(tracked, data, "train", ids, vectors, {"tracked": None}, int(ids[0]), False)
            return results
        start = time.perf_counter()
        unit = self.cumulative.frame(ids, grad, smashed)
        for data in ("grad", "smashed"):
            prototypes = self.cumulative.tracked_prototypes(data)
            reference = None
            if prototypes is not None:
                reference = Reference(*prototypes, f"prototypes of {len(prototypes[1])} classes tracked over recent rounds")
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

    def _known_round(self, ids: np.ndarray, smashed: torch.Tensor, grad: torch.Tensor, names: list[str]):
        results = []
        for data, vectors in (("grad", grad), ("smashed", smashed)):
            latest = self._latest[data]
            for row, sid in enumerate(ids.tolist()):
                if sid in self.known_label_of:
                    latest[sid] = vectors[row]
            reference = None
            if latest:
                known = sorted(latest)
                reference = Reference(
                    torch.stack([latest[i] for i in known]),
                    torch.tensor([self.known_label_of[i] for i in known]),
                    f"latest vectors of {len(known)} known samples",
                )
            results += self._run(
                names,
                data,
                "train",
                ids,
                vectors,
                {"known": reference},
                round_seed=int(ids[0]),
                with_baselines=data == "grad",
            )
        return results

    def train_epoch(self, epoch: int, ids: np.ndarray, smashed: torch.Tensor, grad: torch.Tensor) -> list[AttackResult]:
        """Returns the full-epoch attacks, with the known samples' vectors from the same epoch."""
        results = []
        for data, vectors in (("grad", grad), ("smashed", smashed)):
            reference = self._known_in(ids, vectors, f"epoch {epoch} vectors of the known samples")
            results += self._run(
                self.cfg.per_epoch,
                data,
                "train",
                ids,
                vectors,
                {"known": reference},
                round_seed=epoch,
                with_baselines=data == "grad",
            )
        if self.cumulative is not None:
            start = time.perf_counter()
            # Every single attack's labelling is a place the cumulative fit may start from.
            candidates = {
                f"{r.attack}.{r.data}": r.predictions
                for r in results
                if r.note is None and r.data != "none" and bool((r.predictions >= 0).all())
            }
            predictions = self.cumulative.end_epoch(ids, candidates)
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
                    reference=f"epochs 0-{epoch}, both channels; fit started from {self.cumulative.last_choice}",
                    extra={"agreement_with_previous_epoch": agreement},
                )
            )
        self._last_epoch_known_smashed = self._known_in(
            ids, smashed, f"smashed data of the known samples in training epoch {epoch}"
        )
        labeller = next((r for r in results if f"{r.attack}.{r.data}" == self.cfg.labeller and r.note is None), None)
        if labeller is not None:
            self._train_labelled = Reference(
                smashed,
                torch.as_tensor(labeller.predictions),
                f"epoch {epoch} training smashed data labelled by {self.cfg.labeller}",
            )
        return results

    # -- inference -------------------------------------------------------------------

    def _inference_reference(self, side_channel) -> Reference | None:
        if side_channel is not None:
            ids, smashed = side_channel
            reference = self._known_in(
                np.asarray(ids), smashed, "known samples embedded in eval mode by the feature party (side channel)"
            )
            if reference is not None:
                return reference
        return self._last_epoch_known_smashed

    def infer_round(self, ids: np.ndarray, smashed: torch.Tensor) -> list[AttackResult]:
        """Returns the per-round inference attacks (known samples from the last training epoch)."""
        references = {"known": self._last_epoch_known_smashed, "train_labelled": self._train_labelled}
        return self._run(
            self.cfg.per_round,
            "smashed",
            "infer",
            ids,
            smashed,
            references,
            round_seed=int(ids[0]),
            with_baselines=True,
        )

    def infer_end(self, ids: np.ndarray, smashed: torch.Tensor, *, side_channel=None) -> list[AttackResult]:
        """Returns the inference-phase attacks on the whole inference pass."""
        references = {"known": self._inference_reference(side_channel), "train_labelled": self._train_labelled}
        results = self._run(
            self.cfg.inference, "smashed", "infer", ids, smashed, references, round_seed=0, with_baselines=True
        )
        # Label-free: how much each inference attack agrees with the others (what a run without
        # ground truth can say about them).
        labellings = [r for r in results if r.note is None and r.data != "none"]
        for r in labellings:
            others = [o.predictions for o in labellings if o is not r]
            if others:
                r.extra = {"agreement": round(float(np.mean([np.mean(r.predictions == o) for o in others])), 6)}
        return results
