"""Gradient compression: top-k magnitude sparsification of each returned gradient row."""

from __future__ import annotations

from party_label.defenses.base import DEFENSES, Defense
from party_label.defenses.mechanisms import topk_sparsify


@DEFENSES.register("grad_compression")
class GradCompression(Defense):
    name = "grad_compression"

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if cfg.fraction is None:
            raise ValueError("grad_compression needs label_party.defense.fraction (the fraction of entries zeroed)")

    def protect(self, cut_grad, labels):
        return topk_sparsify(cut_grad, self.cfg.fraction)
