"""CIFAR ResNets (He et al. 2016): ResNet-20 with and without skips, and PreResNet.

Depth ``6n + 2``: a 3×3 stem, three stages of ``n`` basic blocks with ``width``, ``2·width``,
``4·width`` channels (16/32/64), strides 1, 2, 2, global average pooling, one Linear.
Shortcuts are option B: identity where the shape is kept, 1×1 conv + BN where it changes.
``norm="group"`` puts GroupNorm (Wu & He 2018; 8 groups) wherever BatchNorm would be.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from fastloss.errors import ArgumentError
from fastloss.models.layout import Layout, conv_layout, he_init

NORMS = ("batch", "group")
GROUPS = 8  # GroupNorm's groups: divides every stage width of the default ResNets


def norm_layer(lay: Layout, norm: str, channels: int) -> nn.Module:
    if norm == "group":
        return nn.GroupNorm(GROUPS, channels)
    return lay.batch_norm(channels)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut when ``skip``, then ReLU."""

    def __init__(
        self, lay: Layout, c_in: int, c_out: int, stride: int, skip: bool, norm: str = "batch"
    ):
        super().__init__()
        self.skip = skip
        self.conv1 = lay.conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(lay, norm, c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = lay.conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm_layer(lay, norm, c_out)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if skip and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(
                lay.conv(c_in, c_out, 1, stride=stride, bias=False), norm_layer(lay, norm, c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.skip:  # fixed at construction, not data-dependent
            out = out + self.shortcut(x)
        return self.relu2(out)


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus the shortcut (He et al., identity mappings)."""

    def __init__(
        self,
        lay: Layout,
        c_in: int,
        c_out: int,
        stride: int,
        skip: bool = True,
        norm: str = "batch",
    ):
        super().__init__()
        self.bn1 = norm_layer(lay, norm, c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = lay.conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm_layer(lay, norm, c_out)
        self.relu2 = nn.ReLU()
        self.conv2 = lay.conv(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = lay.conv(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + self.shortcut(x)


class CifarResNet(nn.Module):
    """ResNet for small images (and, with Conv1d, signals). ``skip=False`` drops every
    shortcut (the "ResNet-20 without skip connections" of the mode-connectivity videos);
    ``preact=True`` gives PreResNet; ``norm="group"`` GroupNorm in place of BatchNorm."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        depth: int = 20,
        width: int = 16,
        skip: bool = True,
        preact: bool = False,
        norm: str = "batch",
    ):
        super().__init__()
        name = "preresnet" if preact else "resnet"
        if depth < 8 or (depth - 2) % 6:
            raise ArgumentError(f"{name}: depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}")
        if norm not in NORMS:
            raise ArgumentError(f"{name}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if norm == "group" and width % GROUPS:
            raise ArgumentError(
                f"{name}: norm='group' needs a width divisible by {GROUPS}, got {width}"
            )
        lay = conv_layout(name, in_shape)
        n = (depth - 2) // 6
        self.prefix = nn.Sequential(*lay.prefix) if lay.prefix else nn.Identity()
        stem: list[nn.Module] = [lay.conv(lay.channels, width, 3, padding=1, bias=False)]
        if not preact:
            stem += [norm_layer(lay, norm, width), nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        block = PreActBlock if preact else BasicBlock
        blocks: list[nn.Module] = []
        c_in = width
        for stage, c in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(lay, c_in, c, stride, skip, norm))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        head: list[nn.Module] = [norm_layer(lay, norm, c_in), nn.ReLU()] if preact else []
        head += [lay.adaptive_avg_pool(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
        self.head = nn.Sequential(*head)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(self.prefix(x))))
