"""Gradient compression: top-k magnitude sparsification of each returned gradient row."""

from __future__ import annotations

from party_label.defenses.base import DEFENSES, Defense
from party_label.defenses.mechanisms import topk_sparsify


@DEFENSES.register("grad_compression")
class GradCompression(Defense):
    name = "grad_compression"

    def protect(self, cut_grad, labels):
        return topk_sparsify(cut_grad, self.cfg.fraction)

    def metrics(self, *, steps: int) -> dict[str, float]:
        return {"fraction": self.cfg.fraction}
