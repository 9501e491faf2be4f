"""Defenses the label party applies to its training and to the cut-layer gradients it returns."""

from __future__ import annotations

from party_label.defenses.base import DEFENSES, Defense, DefenseContext, build_defense
from party_label.defenses import compression as _compression  # noqa: F401  (registers)
from party_label.defenses import dp_sgd as _dp_sgd  # noqa: F401  (registers)
from party_label.defenses import label_dp as _label_dp  # noqa: F401  (registers)
from party_label.defenses import marvell as _marvell  # noqa: F401  (registers)
from party_label.defenses import none as _none  # noqa: F401  (registers)

__all__ = ["DEFENSES", "Defense", "DefenseContext", "build_defense"]
