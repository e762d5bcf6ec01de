"""Input layouts and the 1-D / 2-D layer types the conv models are built from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from fastloss.errors import ArgumentError


@dataclass(frozen=True)
class Layout:
    """How a conv model sees one sample: ``nd`` spatial dims, ``channels``, ``size``."""

    nd: int
    channels: int
    size: tuple[int, ...]
    # [N, L] vectors (MNIST-1D) become [N, 1, L] signals; empty for [C, L] and [C, H, W].
    prefix: tuple[nn.Module, ...]

    @property
    def conv(self) -> type[nn.Conv1d] | type[nn.Conv2d]:
        return nn.Conv1d if self.nd == 1 else nn.Conv2d

    @property
    def batch_norm(self) -> type[nn.BatchNorm1d] | type[nn.BatchNorm2d]:
        return nn.BatchNorm1d if self.nd == 1 else nn.BatchNorm2d

    @property
    def max_pool(self) -> type[nn.MaxPool1d] | type[nn.MaxPool2d]:
        return nn.MaxPool1d if self.nd == 1 else nn.MaxPool2d

    @property
    def adaptive_avg_pool(self) -> type[nn.AdaptiveAvgPool1d] | type[nn.AdaptiveAvgPool2d]:
        return nn.AdaptiveAvgPool1d if self.nd == 1 else nn.AdaptiveAvgPool2d


def conv_layout(model: str, in_shape: Sequence[int]) -> Layout:
    """The layout of ``in_shape``: ``[L]`` and ``[C, L]`` are signals (Conv1d), ``[C, H, W]``
    images (Conv2d)."""
    shape = tuple(int(s) for s in in_shape)
    if len(shape) == 1:
        return Layout(1, 1, shape, (nn.Unflatten(1, (1, shape[0])),))
    if len(shape) == 2:
        return Layout(1, shape[0], shape[1:], ())
    if len(shape) == 3:
        return Layout(2, shape[0], shape[1:], ())
    raise ArgumentError(
        f"{model} takes signals [L] or [C, L] or images [C, H, W]; got in_shape {list(shape)}"
    )


def conv_size(size: tuple[int, ...], kernel: int, padding: int = 0, stride: int = 1):
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in size)


def he_init(model: nn.Module) -> nn.Module:
    """He-normal conv weights, zero biases, unit BN scales: what deep plain nets such as VGG
    need to train from scratch (PyTorch's default init shrinks the signal layer by layer)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
