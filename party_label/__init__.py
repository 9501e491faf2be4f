"""The label party: top model, loss, optimizer, defenses and the label store (gRPC server)."""

from party_label.party import LabelParty, StepResult

__all__ = ["LabelParty", "StepResult"]
