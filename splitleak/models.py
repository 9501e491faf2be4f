"""Model zoo and the cut: one model definition, split into the feature party's bottom and the
label party's top.

Two ways to name a model (docs/models.md):

- model.arch: a whole model, built-in (resnet18, simplenet) or a user's
  "package.module:callable", whose top-level children run in order; model.cut
  names the child after which it is cut. Both parties build the whole model
  from the same definition and seed and keep their own part, so a split run
  trains exactly the model one process would.
- unset (the original built-ins): model.bottom (mlp or cnn) ends in a ReLU of
  width model.cut_dim, the cut; the top is model.top_layers linear layers.
"""

from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from splitleak.config import ConfigError
from splitleak.registry import Registry

__all__ = [
    "ARCHS",
    "BOTTOM_MODELS",
    "ModelError",
    "build_bottom",
    "build_optimizer",
    "build_split",
    "build_top",
    "cut_shape",
    "list_cuts",
]

BOTTOM_MODELS: Registry[type[nn.Module]] = Registry("bottom model")
ARCHS: Registry[Callable[..., nn.Module]] = Registry("model")


class ModelError(ConfigError):
    """A model that cannot be built or cut as configured; the message says what to change."""


# -- the original built-ins: bottom + linear top ---------------------------------------------


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
            raise ModelError(f"the cnn bottom model needs image input (C, H, W), got shape {input_shape}")
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for c_out in model_cfg.cnn_channels:
            layers += [nn.Conv2d(channels, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, width = c_out, height // 2, width // 2
        layers += [nn.Flatten(), nn.Linear(channels * height * width, model_cfg.cut_dim), nn.ReLU()]
        super().__init__(*layers)


def _linear_top(num_classes: int, model_cfg) -> nn.Sequential:
    widths = [model_cfg.cut_dim] + [model_cfg.top_hidden] * (model_cfg.top_layers - 1) + [num_classes]
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(w_in, w_out))
    return nn.Sequential(*layers)


# -- the paper's architectures ----------------------------------------------------------------


class _BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): two 3x3 convolutions and a shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _image_shape(name: str, input_shape: tuple[int, ...], smallest: int) -> tuple[int, int, int]:
    if len(input_shape) != 3 or min(input_shape[1:]) < smallest:
        raise ModelError(
            f"{name} needs images (C, H, W) of at least {smallest}x{smallest}, got shape {tuple(input_shape)} "
            f"(data.image_size resizes images)"
        )
    return input_shape  # type: ignore[return-value]


@ARCHS.register("resnet18")
def resnet18(*, input_shape, num_classes: int, width: float = 1.0, stem: str = "cifar") -> nn.Sequential:
    """Returns ResNet-18 (He et al. 2016) as named blocks: conv1, bn1, relu, [maxpool], layer1-4, avgpool, flatten, fc.

    stem "cifar" (3x3 convolution, stride 1, no max pool) is the usual form for 32x32 images;
    "imagenet" is the original 7x7, stride 2, with max pool. width scales every channel count.
    Initialised as torchvision's: Kaiming-normal convolutions (fan out), BatchNorm weight 1, bias 0.
    """
    channels, _, _ = _image_shape("resnet18", tuple(input_shape), 8)
    if stem not in ("cifar", "imagenet"):
        raise ModelError(f"resnet18 stem must be 'cifar' or 'imagenet', got {stem!r}")
    planes = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    if stem == "cifar":
        blocks["conv1"] = nn.Conv2d(channels, planes[0], 3, padding=1, bias=False)
    else:
        blocks["conv1"] = nn.Conv2d(channels, planes[0], 7, stride=2, padding=3, bias=False)
    blocks["bn1"] = nn.BatchNorm2d(planes[0])
    blocks["relu"] = nn.ReLU()
    if stem == "imagenet":
        blocks["maxpool"] = nn.MaxPool2d(3, stride=2, padding=1)
    c_in = planes[0]
    for i, c_out in enumerate(planes, start=1):
        stride = 1 if i == 1 else 2
        blocks[f"layer{i}"] = nn.Sequential(_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1))
        c_in = c_out
    blocks["avgpool"] = nn.AdaptiveAvgPool2d(1)
    blocks["flatten"] = nn.Flatten()
    blocks["fc"] = nn.Linear(c_in, num_classes)
    model = nn.Sequential(blocks)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


# SimpleNet's 13 convolutions: (output channels, kernel size, max pool after).
_SIMPLENET = (
    (64, 3, False),
    (128, 3, False),
    (128, 3, False),
    (128, 3, True),
    (128, 3, False),
    (128, 3, False),
    (256, 3, True),
    (256, 3, False),
    (256, 3, True),
    (512, 3, True),
    (2048, 1, False),
    (256, 1, True),
    (256, 3, False),
)


@ARCHS.register("simplenet")
def simplenet(*, input_shape, num_classes: int, width: float = 1.0, dropout: float = 0.1) -> nn.Sequential:
    """Returns SimpleNet (Hasanpour et al. 2016, "Lets keep it simple"), the 13-convolution network
    the paper's authors used, as named blocks block1..block13, pool, flatten, dropout, classifier.

    Each block is convolution, BatchNorm (momentum 0.05), ReLU; five blocks end with a 2x2 max pool
    and spatial dropout. Global max pooling feeds the linear classifier. Convolutions are Xavier-uniform
    initialised with ReLU gain. width scales every channel count (width 0.25 runs on a laptop CPU).
    """
    channels, _, _ = _image_shape("simplenet", tuple(input_shape), 32)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = channels
    for i, (c_out, kernel, pool) in enumerate(_SIMPLENET, start=1):
        c_out = max(1, round(c_out * width))
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2),
            nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.05),
            nn.ReLU(),
        ]
        if pool:
            layers += [nn.MaxPool2d(2), nn.Dropout2d(dropout)]
        blocks[f"block{i}"] = nn.Sequential(*layers)
        c_in = c_out
    blocks["pool"] = nn.AdaptiveMaxPool2d(1)
    blocks["flatten"] = nn.Flatten()
    blocks["dropout"] = nn.Dropout(dropout)
    blocks["classifier"] = nn.Linear(c_in, num_classes)
    model = nn.Sequential(blocks)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("relu"))
    return model


# -- building and cutting -----------------------------------------------------------------------


def _resolve(arch: str) -> Callable[..., nn.Module]:
    if ":" not in arch:
        return ARCHS.get(arch)
    module_name, _, attribute = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(f"model.arch {arch!r}: cannot import {module_name} ({err}); is it on PYTHONPATH?") from None
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise ModelError(f"model.arch {arch!r}: {module_name} has no callable {attribute!r}")
    return builder


def _children(model: nn.Module, arch: str, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module]]:
    """Returns the model's top-level children, after checking that they are what its forward runs, in order."""
    children = list(model.named_children())
    if not children:
        raise ModelError(f"model.arch {arch!r} returned a module with no children to cut between")
    if isinstance(model, nn.Sequential):
        return children
    probe = torch.zeros(2, *input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            whole = model(probe)
            chained = probe
            for _, child in children:
                chained = child(chained)
    except Exception as err:
        raise ModelError(
            f"model.arch {arch!r}: running its top-level children in order fails ({type(err).__name__}: {err}); "
            "return an nn.Sequential whose children run in order (functional steps such as flatten as "
            "modules, e.g. nn.Flatten)"
        ) from None
    finally:
        model.train(was_training)
    if whole.shape != chained.shape or not torch.allclose(whole, chained, atol=1e-5):
        raise ModelError(
            f"model.arch {arch!r}: its forward is not its top-level children run in order; return an "
            "nn.Sequential (functional steps such as flatten as modules, e.g. nn.Flatten)"
        )
    return children


def _whole(model_cfg, input_shape: tuple[int, ...], num_classes: int, seed: int) -> list[tuple[str, nn.Module]]:
    torch.manual_seed(seed)
    builder = _resolve(model_cfg.arch)
    try:
        model = builder(input_shape=tuple(input_shape), num_classes=num_classes, **model_cfg.options)
    except TypeError as err:
        raise ModelError(
            f"model.arch {model_cfg.arch!r} could not be called as "
            f"callable(input_shape=..., num_classes=..., **model.options): {err}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"model.arch {model_cfg.arch!r} returned {type(model).__name__}, not a torch nn.Module")
    return _children(model, model_cfg.arch, tuple(input_shape))


def build_split(model_cfg, *, input_shape: tuple[int, ...], num_classes: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """Returns (bottom, top): the model cut as configured, the same on every host for a seed."""
    if model_cfg.arch is None:
        return build_bottom(input_shape, model_cfg, seed=seed), build_top(num_classes, model_cfg, seed=seed)
    children = _whole(model_cfg, input_shape, num_classes, seed)
    names = [name for name, _ in children]
    if model_cfg.cut not in names[:-1]:
        raise ModelError(
            f"model.cut {model_cfg.cut!r} is not a child of {model_cfg.arch} with layers after it; "
            f"cuts: {', '.join(names[:-1])}"
        )
    at = names.index(model_cfg.cut) + 1
    return nn.Sequential(OrderedDict(children[:at])), nn.Sequential(OrderedDict(children[at:]))


def build_bottom(input_shape: tuple[int, ...], model_cfg, *, seed: int) -> nn.Module:
    """Returns the bottom model of the original built-ins (model.bottom), initialised from the seed."""
    torch.manual_seed(seed)
    return BOTTOM_MODELS.get(model_cfg.bottom)(tuple(input_shape), model_cfg)


def build_top(num_classes: int, model_cfg, *, seed: int) -> nn.Module:
    """Returns the label party's top model of the original built-ins (model.top_layers linear layers)."""
    torch.manual_seed(seed + 1)
    return _linear_top(num_classes, model_cfg)


def cut_shape(bottom: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Returns the shape of one sample's smashed data (what crosses the wire per sample)."""
    was_training = bottom.training
    bottom.eval()
    with torch.no_grad():
        shape = tuple(bottom(torch.zeros(1, *input_shape)).shape[1:])
    bottom.train(was_training)
    return shape


def list_cuts(model_cfg, *, input_shape: tuple[int, ...], num_classes: int) -> list[dict]:
    """Returns every possible cut of the configured model: the child's name, its output shape and size per sample."""
    if model_cfg.arch is None:
        bottom = build_bottom(input_shape, model_cfg, seed=0)
        shape = cut_shape(bottom, input_shape)
        return [{"cut": "(model.bottom)", "shape": list(shape), "size": math.prod(shape)}]
    children = _whole(model_cfg, input_shape, num_classes, seed=0)
    rows = []
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for name, child in children[:-1]:
            child.eval()
            x = child(x)
            rows.append({"cut": name, "shape": list(x.shape[1:]), "size": math.prod(x.shape[1:])})
    return rows


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    """Returns the optimizer both parties use for their half of the model."""
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum)
