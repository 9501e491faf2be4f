"""Label differential privacy: the top model trains on labels randomised once per run by RRWithPrior."""

from __future__ import annotations

import torch

from party_label.defenses.base import DEFENSES, Defense
from party_label.defenses.mechanisms import rr_with_prior


@DEFENSES.register("label_dp")
class LabelDP(Defense):
    name = "label_dp"

    def train_labels(self, labels: torch.Tensor, train_ids: torch.Tensor) -> torch.Tensor:
        # The prior must not depend on any sample's own label: uniform over the public classes.
        prior = torch.full((self.ctx.num_classes,), 1.0 / self.ctx.num_classes)
        generator = torch.Generator().manual_seed(self.ctx.seed + 15485863)
        randomised = labels.clone()
        randomised[train_ids] = rr_with_prior(labels[train_ids], prior, epsilon=self.cfg.epsilon, generator=generator)
        self.flipped_fraction = float((randomised[train_ids] != labels[train_ids]).double().mean())
        return randomised

    def privacy_spent(self, *, steps: int):
        # Each training label is released once through randomized response.
        return self.cfg.epsilon, 0.0

    def metrics(self, *, steps: int) -> dict[str, float]:
        return {"flipped_fraction": self.flipped_fraction}
