"""No defense: the baseline."""

from party_label.defenses.base import DEFENSES, Defense


@DEFENSES.register("none")
class NoDefense(Defense):
    name = "none"
