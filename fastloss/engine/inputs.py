"""What an evaluation takes in, checked once: data splits, the device, batch sizes, whether the
model has BatchNorm, and whether the data fit the model."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fastloss.errors import ArgumentError, ArgumentTypeError, DataError
from fastloss.ops.losses import Loss

Data = tuple[Tensor, Tensor]
CPU_BATCH_SIZE = 512
GPU_BATCH_SIZE = 4096
BN_MODES = ("recompute", "fixed")


def default_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when a GPU is visible, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ArgumentError(
            f"batch_size={batch_size}: a batch holds at least 1 sample; give a batch size >= 1, "
            "or leave it out for the default"
        )


def default_batch_size(batch_size: int | None, device: torch.device) -> int:
    if batch_size is None:
        return CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE
    check_batch_size(batch_size)
    return batch_size


def as_tensors(data: Any, name: str, loss: Loss) -> Data:
    """``(x, y)`` tensors from a tuple or a DataLoader / iterable of batches. Classification
    targets become int64 class indices ``[N]``; regression targets keep their shape."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
    elif isinstance(data, Iterable):
        xs, ys = zip(*((b[0], b[1]) for b in data), strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise ArgumentTypeError(
            f"{name} must be (x, y) tensors or a DataLoader, got {type(data).__name__}"
        )
    if x.shape[0] != y.shape[0] or (loss.classification and y.dim() != 1) or y.dim() == 0:
        raise DataError(
            f"{name}: x has {x.shape[0]} samples and y has shape {list(y.shape)}; "
            f"expected y [N] {'class indices' if loss.classification else 'targets'} for "
            "the N samples"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty")
    return (x, y.long()) if loss.classification else (x, y)


def collect_splits(loss: Loss, **splits: Any) -> dict[str, Data]:
    """The given splits (``train=..., test=...``; None left out) as tensors."""
    found = {name: as_tensors(d, name, loss) for name, d in splits.items() if d is not None}
    if not found:
        raise ArgumentError(
            f"nothing to evaluate: give {' and/or '.join(f'{s}=(x, y)' for s in splits)}"
        )
    return found


def batches(x: Tensor, y: Tensor, size: int) -> Iterator[Data]:
    check_batch_size(size)
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], y[start : start + size]


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check_bn(bn: str, model: nn.Module, splits: Mapping[str, Data]) -> str:
    """The BN mode that applies: ``bn`` if the model has BatchNorm, else ``"none"``."""
    if bn not in BN_MODES:
        raise ArgumentError(f"bn must be 'recompute' or 'fixed', got {bn!r}")
    if not has_batch_norm(model):
        return "none"
    if bn == "recompute" and "train" not in splits:
        raise ArgumentError("bn='recompute' needs train data to compute BatchNorm statistics")
    return bn


def check_data_fits(model: nn.Module, data: Mapping[str, Data], loss: Loss) -> None:
    """A clear `DataError` when samples do not fit the model's input, or (classification)
    labels exceed its outputs, instead of a shape error from deep inside the batched pass."""
    probe = copy.deepcopy(model).cpu().float().eval()
    for split, (x, y) in data.items():
        try:
            with torch.no_grad():
                outputs = probe(x[:2].cpu().float())
        except (RuntimeError, ValueError) as e:
            raise DataError(
                f"the {split} data (samples of shape {list(x.shape[1:])}) do not fit the model "
                f"{type(model).__name__}: {str(e).splitlines()[0]}; use the data it was "
                "trained on"
            ) from None
        if not loss.classification:
            continue
        if outputs.dim() != 2:
            raise DataError(f"the model gives outputs {list(outputs.shape)}; expected [B, C]")
        if int(y.max()) >= outputs.shape[1] or int(y.min()) < 0:
            raise DataError(
                f"the {split} labels run from {int(y.min())} to {int(y.max())}, but the model "
                f"has {outputs.shape[1]} outputs; use the data it was trained on"
            )
