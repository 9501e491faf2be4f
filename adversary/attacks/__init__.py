"""Label inference attacks (Liu et al., IEEE TIFS 2024) and baselines, by name."""

from adversary.attacks.base import ATTACKS, Attack, AttackContext, AttackResult, Prediction, Reference
from adversary.attacks import baselines as _baselines  # noqa: F401  (registers)
from adversary.attacks import cross_attacks as _cross_attacks  # noqa: F401  (registers)
from adversary.attacks import similarity_attacks as _similarity_attacks  # noqa: F401  (registers)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "Prediction", "Reference"]
