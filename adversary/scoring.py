"""Evaluation only: joins attack predictions with a ground-truth source by sample id.

Kept apart from the attacks: the engine never imports this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from splitleak.data import load_dataset, read_known_samples

__all__ = ["Scorer"]


class Scorer:
    def __init__(self, labels: dict[int, int] | np.ndarray, num_classes: int) -> None:
        self._labels = labels
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, config) -> "Scorer":
        """Returns the scorer for adversary.ground_truth: "dataset" or a sample_id,label CSV."""
        source = config.adversary.ground_truth
        dataset = load_dataset(config.data, config.run.seed)
        if source == "dataset":
            return cls(dataset.labels(), dataset.num_classes)
        ids, labels = read_known_samples(Path(source))
        return cls(dict(zip(ids.tolist(), labels.tolist())), dataset.num_classes)

    def truth(self, sample_ids: np.ndarray) -> np.ndarray:
        """Returns the true labels of sample_ids (-1 where the source has none)."""
        if isinstance(self._labels, np.ndarray):
            inside = (sample_ids >= 0) & (sample_ids < len(self._labels))
            return np.where(inside, self._labels[np.clip(sample_ids, 0, len(self._labels) - 1)], -1)
        return np.asarray([self._labels.get(int(i), -1) for i in sample_ids])

    def score(self, sample_ids: np.ndarray, predictions: np.ndarray, scores: np.ndarray | None = None) -> dict:
        """Returns accuracy, per-class recall and (binary, with scores) AUC over the samples with a known label."""
        truth = self.truth(sample_ids)
        have = truth >= 0
        if not have.any() or (predictions < 0).all():
            return {"accuracy": None}
        t, p = truth[have], predictions[have]
        result = {
            "accuracy": round(float((t == p).mean()), 6),
            "scored": int(have.sum()),
            "recall": {
                str(c): round(float((p[t == c] == c).mean()), 6) for c in range(self.num_classes) if (t == c).any()
            },
        }
        if self.num_classes == 2 and scores is not None and len(np.unique(t)) == 2:
            result["auc"] = round(float(roc_auc_score(t, scores[have])), 6)
        return result
