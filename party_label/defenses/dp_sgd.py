"""DP-SGD: Opacus on the top model, and a per-sample clipped Gaussian mechanism
on the cut-layer gradients returned to the feature party.

Accounting (docs/defenses.md): the feature party chooses the batches, so it
knows which samples are in each one and no privacy is gained from sampling.
Each sample's returned gradient row is released once per epoch, so the
cut-gradient mechanism is accounted as `epochs` full-batch (sample rate 1)
Gaussian mechanisms. A label change moves a clipped row by up to 2C, so the
noise is 2 * z * C with z the multiplier the accountant gives for the target
epsilon at sensitivity C. The top model's Opacus DP-SGD uses the same z and is
accounted with sample rate batch/train_size (the usual Poisson assumption,
which fixed shuffled batches only approximate); both epsilons are reported.
"""

from __future__ import annotations

import torch

from party_label.defenses.base import DEFENSES, Defense
from party_label.defenses.mechanisms import clip_and_noise, epsilon_spent, noise_multiplier_for
from splitleak.config import ConfigError


@DEFENSES.register("dp_sgd")
class DpSgd(Defense):
    name = "dp_sgd"

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.steps_per_epoch = -(-ctx.train_size // ctx.batch_size)
        self.top_sample_rate = ctx.batch_size / ctx.train_size
        if cfg.cut_grad_noise:
            self.noise_multiplier = noise_multiplier_for(
                epsilon=cfg.epsilon, delta=cfg.delta, sample_rate=1.0, steps=ctx.epochs
            )
        else:
            self.noise_multiplier = noise_multiplier_for(
                epsilon=cfg.epsilon,
                delta=cfg.delta,
                sample_rate=self.top_sample_rate,
                steps=ctx.epochs * self.steps_per_epoch,
            )
        self._generator = torch.Generator().manual_seed(ctx.seed + 32452843)

    def wrap_training(self, top, optimizer):
        # Opacus takes a second to import: the label party loads it only when a run uses DP-SGD.
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        problems = ModuleValidator.validate(top, strict=False)
        if problems:
            raise ConfigError(
                "dp_sgd cannot compute per-sample gradients of this top model: "
                + "; ".join(str(p) for p in problems)
                + " (cut after the last BatchNorm, or use a model with GroupNorm)"
            )
        private_top = GradSampleModule(top, loss_reduction="mean")
        self._optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.cfg.max_grad_norm,
            expected_batch_size=self.ctx.batch_size,
            loss_reduction="mean",
            generator=torch.Generator(device=self.ctx.device).manual_seed(self.ctx.seed + 49979687),
        )
        return private_top, self._optimizer

    def protect(self, cut_grad, labels):
        if not self.cfg.cut_grad_noise:
            return cut_grad
        batch = cut_grad.shape[0]
        # Rows of a mean-reduced loss's gradient are per-sample gradients divided by the batch size.
        noisy = clip_and_noise(
            cut_grad * batch,
            max_norm=self.cfg.max_grad_norm,
            noise_std=2 * self.noise_multiplier * self.cfg.max_grad_norm,
            generator=self._generator,
        )
        return noisy / batch

    def privacy_spent(self, *, steps: int):
        if not self.cfg.cut_grad_noise:
            return self._top_epsilon(steps), self.cfg.delta
        epochs_released = -(-steps // self.steps_per_epoch)
        if epochs_released == 0:
            return 0.0, self.cfg.delta
        epsilon = epsilon_spent(
            noise_multiplier=self.noise_multiplier, sample_rate=1.0, steps=epochs_released, delta=self.cfg.delta
        )
        return epsilon, self.cfg.delta

    def _top_epsilon(self, steps: int) -> float:
        if steps == 0:
            return 0.0
        return epsilon_spent(
            noise_multiplier=self.noise_multiplier, sample_rate=self.top_sample_rate, steps=steps, delta=self.cfg.delta
        )

    def metrics(self, *, steps: int) -> dict[str, float]:
        return {"noise_multiplier": self.noise_multiplier, "top_model_epsilon": self._top_epsilon(steps)}

    def state_dict(self) -> dict:
        return super().state_dict() | {
            "cut_grad_noise": self._generator.get_state(),
            "top_noise": self._optimizer.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["cut_grad_noise"])
        self._optimizer.generator.set_state(state["top_noise"])
