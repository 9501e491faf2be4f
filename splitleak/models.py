"""Model zoo: bottom models (feature party) and top models (label party).

The bottom model's output, after its last ReLU, is the smashed data; its
width model.cut_dim is the cut layer. The number of top layers decides how
deep the cut sits below the loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from splitleak.registry import Registry

__all__ = ["BOTTOM_MODELS", "build_bottom", "build_optimizer", "build_top"]

BOTTOM_MODELS: Registry[type[nn.Module]] = Registry("bottom model")


@BOTTOM_MODELS.register("mlp")
class MlpBottom(nn.Sequential):
    def __init__(self, input_shape: tuple[int, ...], model_cfg) -> None:
        widths = [math.prod(input_shape), *model_cfg.bottom_hidden, model_cfg.cut_dim]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        super().__init__(*layers)


@BOTTOM_MODELS.register("cnn")
class CnnBottom(nn.Sequential):
    def __init__(self, input_shape: tuple[int, ...], model_cfg) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"the cnn bottom model needs image input (C, H, W), got shape {input_shape}")
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for c_out in model_cfg.cnn_channels:
            layers += [nn.Conv2d(channels, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, width = c_out, height // 2, width // 2
        layers += [nn.Flatten(), nn.Linear(channels * height * width, model_cfg.cut_dim), nn.ReLU()]
        super().__init__(*layers)


def build_bottom(input_shape: tuple[int, ...], model_cfg, *, seed: int) -> nn.Module:
    """Returns the feature party's bottom model, initialised from the seed."""
    torch.manual_seed(seed)
    return BOTTOM_MODELS.get(model_cfg.bottom)(tuple(input_shape), model_cfg)


def build_top(num_classes: int, model_cfg, *, seed: int) -> nn.Module:
    """Returns the label party's top model (model_cfg.top_layers linear layers), initialised from the seed."""
    torch.manual_seed(seed + 1)
    widths = [model_cfg.cut_dim] + [model_cfg.top_hidden] * (model_cfg.top_layers - 1) + [num_classes]
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(w_in, w_out))
    return nn.Sequential(*layers)


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    """Returns the optimizer both parties use for their half of the model."""
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum)
