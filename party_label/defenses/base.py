"""The defense interface and its registry."""

from __future__ import annotations

from dataclasses import dataclass

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

    def train_labels(self, labels: torch.Tensor, train_ids: torch.Tensor) -> torch.Tensor:
        """Returns the labels the top model trains on (label DP randomises them once per run)."""
        return labels

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
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores what state_dict returned."""


def build_defense(cfg, ctx: DefenseContext) -> Defense:
    """Returns the configured defense; unknown names fail with the known ones."""
    return DEFENSES.get(cfg.name)(cfg, ctx)
