"""Plain conv nets: LeNet-5, the multi-point-optimization paper's CNN, a scaled VGG-16.

All accept signals ``[L]`` / ``[C, L]`` (built with Conv1d) and images ``[C, H, W]``
(Conv2d), and size their dense layers from ``in_shape``, so one definition serves MNIST-1D,
8×8 digits, 28×28 MNIST and 32×32 CIFAR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from fastloss.errors import ArgumentError
from fastloss.models.layout import conv_layout, conv_size


class LeNet5(nn.Sequential):
    """LeNet-5 with ReLU and max pooling: conv 5 (6) → pool → conv 5 (16) → pool → 120 → 84;
    with ``bn``, BatchNorm after every conv and hidden Linear (as the variance networks of
    Neklyudov et al. 2018 are built).

    Inputs smaller than 32 get the first conv padded by 2 (the classic way to feed 28×28 MNIST
    to a net designed for 32×32); the second conv is padded too where the map is smaller than
    the kernel, and a pool is skipped where the map is already 1 wide.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (6, 16),
        widths: Sequence[int] = (120, 84),
        bn: bool = False,
    ):
        lay = conv_layout("lenet5", in_shape)
        c1, c2 = (int(c) for c in channels)
        layers: list[nn.Module] = list(lay.prefix)
        size = lay.size
        for c_in, c_out, pad in ((lay.channels, c1, 2 if min(size) < 32 else 0), (c1, c2, None)):
            if pad is None:
                pad = 0 if min(size) >= 5 else 2
            norm = [lay.batch_norm(c_out)] if bn else []
            layers += [lay.conv(c_in, c_out, 5, padding=pad), *norm, nn.ReLU()]
            size = conv_size(size, 5, pad)
            if min(size) >= 2:
                layers.append(lay.max_pool(2))
                size = tuple(s // 2 for s in size)
        dense = [c2 * math.prod(size), *(int(w) for w in widths)]
        layers.append(nn.Flatten())
        for a, b in zip(dense[:-1], dense[1:], strict=True):
            layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if bn else []), nn.ReLU()]
        layers.append(nn.Linear(dense[-1], num_classes))
        super().__init__(*layers)


class MPOConvNet(nn.Sequential):
    """The conv net of Skorokhodov & Burtsev 2019 (multi-point optimization, appendix B):
    3×3 convs (padding 1) with ``channels`` (8, 32, 64), ReLU after each (BatchNorm before
    the ReLU when ``bn``), adaptive average pooling to ``pool`` × ``pool`` (4×4), flatten, a
    ``hidden`` (128) unit dense layer with ReLU, and the output layer.

    The paper's batch-norm smoothing experiment uses ``channels=(8, 8, 32, 32, 64, 64)``
    (registered as ``mpo-cnn6`` / ``mpo-cnn6-bn``).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (8, 32, 64),
        hidden: int = 128,
        pool: int = 4,
        bn: bool = False,
    ):
        lay = conv_layout("mpo-cnn", in_shape)
        layers: list[nn.Module] = list(lay.prefix)
        c_in = lay.channels
        for c in (int(c) for c in channels):
            layers.append(lay.conv(c_in, c, 3, padding=1, bias=not bn))
            if bn:
                layers.append(lay.batch_norm(c))
            layers.append(nn.ReLU())
            c_in = c
        layers += [
            lay.adaptive_avg_pool(pool),
            nn.Flatten(),
            nn.Linear(c_in * pool**lay.nd, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        ]
        super().__init__(*layers)


VGG16_LAYOUT = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG16(nn.Sequential):
    """VGG-16 as in the mode-connectivity code: 13 3×3 convs in 5 stages with max pooling,
    then 512 → 512 → classes dense layers; every width scaled by ``width`` (default 1/4:
    16 ... 128 channels, 128-unit dense layers). ``bn`` adds BatchNorm after each conv.

    Pools that would shrink the map below 1 are skipped, so 8×8 and 28×28 inputs work; with
    32×32 the map ends at 1×1 as in the original. Conv and hidden dense weights get He
    initialisation, counted over the kernel taps that fall inside the map, which the BN-free
    variant needs to train on small inputs.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        width: float = 0.25,
        bn: bool = False,
        layout: Sequence[int | str] = VGG16_LAYOUT,
    ):
        lay = conv_layout("vgg16", in_shape)
        if width <= 0:
            raise ArgumentError(f"vgg16: width must be > 0, got {width}")
        layers: list[nn.Module] = list(lay.prefix)
        c_in, size = lay.channels, lay.size
        for item in layout:
            if item == "M":
                if min(size) >= 2:
                    layers.append(lay.max_pool(2))
                    size = tuple(s // 2 for s in size)
                continue
            c = max(1, round(int(item) * width))
            conv = lay.conv(c_in, c, 3, padding=1, bias=not bn)
            # He init over the taps that see the map: on a 1×1 or 2×2 map most of a padded 3×3
            # kernel sees zeros, and the usual 9·C fan-in would shrink the signal 9× a layer.
            nn.init.normal_(
                conv.weight, 0.0, math.sqrt(2 / (c_in * math.prod(min(3, s) for s in size)))
            )
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if bn:
                layers.append(lay.batch_norm(c))
            layers.append(nn.ReLU())
            c_in = c
        hidden = max(1, round(512 * width))
        dense = [nn.Linear(c_in * math.prod(size), hidden), nn.Linear(hidden, hidden)]
        for linear in dense:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
        layers += [nn.Flatten(), dense[0], nn.ReLU(), dense[1], nn.ReLU()]
        layers.append(nn.Linear(hidden, num_classes))
        super().__init__(*layers)
