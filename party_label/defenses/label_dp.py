"""Label differential privacy: the top model trains on labels randomised once per run by RRWithPrior
(Ghazi et al., "Deep Learning with Label Differential Privacy", NeurIPS 2021).

With `prior: uniform` every training label is randomised at the start, within all K classes (K-ary
randomized response). With `prior: learned` the training set is split into `stages` parts: the first
part's labels are randomised at the start with a uniform prior; stage s starts at epoch
floor(s * epochs / stages), and its labels are randomised then, each within the top-k classes of the
top model's prediction for that sample, recorded during the epoch before (the model has been trained
only on the earlier stages' randomised labels). Until its stage starts a sample does not train: its
rows get a zero loss, and a zero gradient goes back for them.
"""

from __future__ import annotations

import math

import torch

from party_label.defenses.base import DEFENSES, Defense
from party_label.defenses.mechanisms import rr_with_prior

# Offsets of the per-stage randomisation generators from the run seed.
_STAGE_SEED = 15485863


@DEFENSES.register("label_dp")
class LabelDP(Defense):
    name = "label_dp"

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.learned = cfg.prior == "learned"
        self.stages = cfg.stages if self.learned else 1
        self.stage = 0  # the last stage whose labels are randomised
        self.stage_figures: list[dict[str, float]] = []

    def stage_start(self, stage: int) -> int:
        """Returns the epoch at which a stage's labels are randomised and start to train."""
        return stage * self.ctx.epochs // self.stages

    def train_labels(self, labels: torch.Tensor, train_ids: torch.Tensor) -> torch.Tensor:
        self._labels = labels
        self._train_ids = train_ids
        self.table = torch.full_like(labels, -1)  # -1: not randomised yet (never trained on)
        self.stage_of = torch.full((len(labels),), -1, dtype=torch.long)
        # The stages are a seeded partition of the training set into equal parts.
        shuffle = torch.Generator().manual_seed(self.ctx.seed + 104729)
        order = train_ids[torch.randperm(len(train_ids), generator=shuffle)]
        self.stage_of[order] = torch.arange(len(order)) * self.stages // len(order)
        self.priors = torch.zeros(len(labels), self.ctx.num_classes)
        self.prior_seen = torch.zeros(len(labels), dtype=torch.bool)
        self.stage_figures = []
        self._randomise(0)
        return self.table

    def _randomise(self, stage: int) -> None:
        ids = self._train_ids[self.stage_of[self._train_ids] == stage]
        k = self.ctx.num_classes
        prior = torch.full((len(ids), k), 1.0 / k)
        if stage > 0:
            seen = self.prior_seen[ids]
            prior[seen] = self.priors[ids[seen]]
        # The prior of a sample comes from the model trained on other samples' randomised labels only,
        # never from its own label: each output stays epsilon-label-DP whatever the prior.
        generator = torch.Generator().manual_seed(self.ctx.seed + _STAGE_SEED + stage)
        randomised = rr_with_prior(self._labels[ids], prior, epsilon=self.cfg.epsilon, generator=generator)
        self.table[ids] = randomised
        chosen_k = _chosen_k(prior, self.cfg.epsilon)
        self.stage_figures.append(
            {
                "samples": float(len(ids)),
                "kept_fraction": float((randomised == self._labels[ids]).double().mean()),
                "mean_k": float(chosen_k.double().mean()),
                "prior_recorded_fraction": 1.0 if stage == 0 else float(self.prior_seen[ids].double().mean()),
            }
        )
        self.stage = stage

    def targets(self, train_labels, sample_ids, epoch):
        while self.stage + 1 < self.stages and epoch >= self.stage_start(self.stage + 1):
            self._randomise(self.stage + 1)
        labels = self.table[sample_ids]
        active = labels >= 0
        return labels.clamp(min=0), (None if bool(active.all()) else active)

    def wants_prior(self, sample_ids, epoch):
        # The next stage's samples, in the epoch just before it starts: the latest model's prediction.
        nxt = self.stage + 1
        if nxt >= self.stages or epoch != self.stage_start(nxt) - 1:
            return None
        rows = self.stage_of[sample_ids] == nxt
        return rows if bool(rows.any()) else None

    def record_prior(self, sample_ids, probabilities):
        self.priors[sample_ids] = probabilities.float()
        self.prior_seen[sample_ids] = True

    def privacy_spent(self, *, steps: int):
        # Each training label is released once, through randomized response with a prior that does not
        # depend on it.
        return self.cfg.epsilon, 0.0

    def metrics(self, *, steps: int) -> dict[str, float]:
        randomised = self.table >= 0
        figures = {
            "flipped_fraction": float((self.table[randomised] != self._labels[randomised]).double().mean()),
            "stages_randomised": float(len(self.stage_figures)),
        }
        for stage, stage_figures in enumerate(self.stage_figures):
            figures |= {f"stage{stage}_{key}": value for key, value in stage_figures.items()}
        return figures

    def state_dict(self) -> dict:
        return super().state_dict() | {
            "table": self.table.clone(),
            "priors": self.priors.clone(),
            "prior_seen": self.prior_seen.clone(),
            "stage": self.stage,
            "stage_figures": list(self.stage_figures),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "table" in state:
            self.table.copy_(state["table"])
            self.priors.copy_(state["priors"])
            self.prior_seen.copy_(state["prior_seen"])
            self.stage = state["stage"]
            self.stage_figures = list(state["stage_figures"])


def _chosen_k(prior: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Returns RRWithPrior's k for each row of a prior (the same choice rr_with_prior makes)."""
    mass = prior.sort(dim=1, descending=True, stable=True).values.cumsum(dim=1)
    ks = torch.arange(1, prior.shape[1] + 1, dtype=prior.dtype)
    keep = math.exp(epsilon) / (math.exp(epsilon) + ks - 1)
    return (keep * mass).argmax(dim=1) + 1
