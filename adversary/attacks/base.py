"""The attack interface, its registry, and the result every attack returns.

An attack sees vectors (gradients or smashed data) and the attacker's prior
knowledge (a Reference of labelled vectors) and nothing else: there is no
argument through which ground truth could reach it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splitleak.registry import Registry

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "Prediction", "Reference", "attack_seed"]

ATTACKS: Registry[type["Attack"]] = Registry("attack")


@dataclass(frozen=True)
class Reference:
    """Labelled vectors in the same space as the attacked ones: the attacker's prior knowledge."""

    vectors: torch.Tensor
    labels: torch.Tensor
    source: str


@dataclass(frozen=True)
class AttackContext:
    num_classes: int
    # "cosine" for gradients, "euclidean" for smashed data.
    measure: str
    kmeans_iters: int
    seed: int
    kmeans_restarts: int = 1
    kmeans_tol: float = 1e-4


def attack_seed(seed: int, draw: int) -> int:
    """Returns the seed of one attack's draws (k-means++) in one round or epoch (draw), from the run's seed."""
    return seed * 100003 + draw


@dataclass(frozen=True)
class Prediction:
    labels: torch.Tensor
    # For binary tasks: a score that grows with the odds of class 1 (for AUC).
    scores: torch.Tensor | None = None


@dataclass
class AttackResult:
    attack: str
    data: str
    phase: str
    sample_ids: np.ndarray
    predictions: np.ndarray
    seconds: float
    scores: np.ndarray | None = None
    reference: str | None = None
    note: str | None = None
    # Set when sample_ids reach beyond the round's batch (the cumulative attacker labels every
    # sample seen): the batch's own predictions, which are what a round record logs.
    batch_predictions: np.ndarray | None = None
    # Further figures for the log (JSON-ready).
    extra: dict | None = None

    def log_entry(self) -> dict:
        entry = {
            "attack": self.attack,
            "data": self.data,
            "phase": self.phase,
            "n": int(len(self.sample_ids)),
            "seconds": round(self.seconds, 6),
        }
        if self.reference:
            entry["reference"] = self.reference
        if self.note:
            entry["note"] = self.note
        if self.extra:
            entry.update(self.extra)
        return entry


class Attack:
    """One label-inference attack. Subclasses set name and what data they apply to."""

    name = "attack"
    data_kinds: tuple[str, ...] = ("grad", "smashed")
    binary_only = False
    # "known": the attacker's known samples; "train_labelled": training vectors labelled by an attack;
    # "tracked": class prototypes that follow the moving model (kept by the cumulative attacker).
    reference_kind = "known"

    def predict(self, vectors: torch.Tensor, reference: Reference, ctx: AttackContext) -> Prediction:
        raise NotImplementedError
