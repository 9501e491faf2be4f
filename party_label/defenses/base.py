"""The defense interface and its registry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from splitleak.registry import Registry

__all__ = ["DEFENSES", "Defense", "DefenseContext", "build_defense"]

DEFENSES: Registry[type["Defense"]] = Registry("defense")


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may know about the run."""

    num_classes: int
    train_size: int
    batch_size: int
    epochs: int
    seed: int
    # Where the top model lives (DP-SGD's noise generator must live there too).
    device: str = "cpu"


class Defense:
    """A label-party defense. The default methods leave everything unchanged.

    The config has already checked that the defense's strength key is set.
    """

    name = "base"

    def __init__(self, cfg, ctx: DefenseContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        # Mixup's draws (lambda and the pairing of each batch); numpy's generator, whose state a
        # checkpoint keeps.
        self._mixup_rng = np.random.default_rng([ctx.seed, 7919])

    def train_labels(self, labels: torch.Tensor, train_ids: torch.Tensor) -> torch.Tensor:
        """Returns the labels the top model trains on (label DP randomises them once per run)."""
        return labels

    def targets(
        self, train_labels: torch.Tensor, sample_ids: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (the labels one training step trains on, which of its rows train: None for all).
        Label DP with a learnt prior trains only on the samples whose labels it has randomised so far."""
        return train_labels[sample_ids], None

    def wants_prior(self, sample_ids: torch.Tensor, epoch: int) -> torch.Tensor | None:
        """Returns which rows of a training step need the top model's prediction recorded (see
        record_prior), or None for none."""
        return None

    def record_prior(self, sample_ids: torch.Tensor, probabilities: torch.Tensor) -> None:
        """Records the top model's class probabilities for samples whose labels are not yet randomised."""

    def mixup(self, n: int) -> tuple[float, np.ndarray] | None:
        """Returns (lambda, pairing) to mix a batch of n rows with (row i with row pairing[i]), or None
        when mixup is off."""
        alpha = getattr(self.cfg, "mixup_alpha", 0.0)
        if alpha <= 0:
            return None
        return float(self._mixup_rng.beta(alpha, alpha)), self._mixup_rng.permutation(n)

    def wrap_training(self, top: nn.Module, optimizer: torch.optim.Optimizer):
        """Returns (top, optimizer) to train with (DP-SGD makes them private)."""
        return top, optimizer

    def protect(self, cut_grad: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Returns the cut-layer gradient to send back to the feature party."""
        return cut_grad

    def privacy_spent(self, *, steps: int) -> tuple[float, float] | None:
        """Returns (epsilon, delta) spent after `steps` training steps, or None for defenses without a budget."""
        return None

    def metrics(self, *, steps: int) -> dict[str, float]:
        """Returns the defense's own figures for the run report (noise multiplier, ...)."""
        return {}

    def state_dict(self) -> dict:
        """Returns what a checkpoint must keep for the defense to continue as if never stopped (random
        generators, running statistics)."""
        return {"mixup": self._mixup_rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restores what state_dict returned."""
        if "mixup" in state:
            self._mixup_rng.bit_generator.state = state["mixup"]


def build_defense(cfg, ctx: DefenseContext) -> Defense:
    """Returns the configured defense; unknown names fail with the known ones."""
    return DEFENSES.get(cfg.name)(cfg, ctx)
