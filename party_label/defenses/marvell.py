"""Marvell (Li et al., ICLR 2022): per-batch Gaussian noise on the returned
gradients, shaped per class to make positive and negative gradients hard to
tell apart, under the power constraint P = s * ||mean_pos - mean_neg||^2."""

from __future__ import annotations

import torch

from party_label.defenses.base import DEFENSES, Defense
from party_label.defenses.mechanisms import marvell_solve


@DEFENSES.register("marvell")
class Marvell(Defense):
    name = "marvell"

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        if ctx.num_classes != 2:
            raise ValueError(
                f"marvell protects binary tasks only; this run has {ctx.num_classes} classes "
                "(use dp_sgd, label_dp or grad_compression)"
            )
        self._generator = torch.Generator().manual_seed(ctx.seed + 86028121)
        # Class statistics of the last batch that held the class, for batches that lack one.
        self._stats: dict[int, tuple[torch.Tensor, float]] = {}
        self.last_solution: tuple[float, float, float, float] | None = None

    def protect(self, cut_grad, labels):
        batch, dim = cut_grad.shape
        grads = cut_grad.double() * batch  # per-sample gradients
        for cls in (0, 1):
            members = grads[labels == cls]
            if len(members):
                mean = members.mean(dim=0)
                spread = float(((members - mean) ** 2).sum(dim=1).mean() / dim) if len(members) > 1 else 0.0
                self._stats[cls] = (mean, spread)
        if len(self._stats) < 2:
            return cut_grad
        (mean0, u), (mean1, v) = self._stats[0], self._stats[1]
        delta = mean1 - mean0
        g = float(delta.norm())
        if g == 0:
            return cut_grad
        p = float((labels == 1).double().mean())
        lams = marvell_solve(g=g, p=p, power=self.cfg.scale * g * g, d=dim, u=u, v=v)
        self.last_solution = lams
        direction = delta / g
        noise = torch.zeros_like(grads)
        for cls, (par, perp) in ((0, lams[:2]), (1, lams[2:])):
            rows = labels == cls
            n = int(rows.sum())
            if n == 0:
                continue
            along = torch.randn(n, 1, generator=self._generator, dtype=grads.dtype) * par**0.5 * direction
            iso = torch.randn(n, dim, generator=self._generator, dtype=grads.dtype) * perp**0.5
            iso -= (iso @ direction)[:, None] * direction  # keep only the part orthogonal to the mean difference
            noise[rows] = along + iso
        return ((grads + noise) / batch).to(cut_grad.dtype)

    def state_dict(self) -> dict:
        return super().state_dict() | {
            "noise": self._generator.get_state(),
            "stats": dict(self._stats),
            "last_solution": self.last_solution,
        }

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["noise"])
        self._stats = dict(state["stats"])
        self.last_solution = state["last_solution"]

    def metrics(self, *, steps: int) -> dict[str, float]:
        figures = {"scale": self.cfg.scale}
        if self.last_solution is not None:
            names = ("neg_parallel", "neg_perp", "pos_parallel", "pos_perp")
            figures |= {f"last_batch_{n}_variance": v for n, v in zip(names, self.last_solution)}
        return figures
