"""The serial loop: the reference the engine is tested and benchmarked against."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from fastloss.core import Subspace
from fastloss.engine.inputs import Data, batches, has_batch_norm
from fastloss.ops.losses import Loss, PerSample, resolve_loss


@torch.no_grad()
def evaluate_serial(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    data: Data,
    bn: str = "recompute",
    bn_data: Data | None = None,
    batch_size: int = 512,
    loss: str | PerSample | Loss = "cross_entropy",
) -> tuple[np.ndarray, np.ndarray | None]:
    """What loss-landscape does: per point, load the weights into the model, recompute BN
    statistics (``update_bn``), then run the data through it, in float64. Returns
    (mean loss [K], accuracy in % [K]; None for a regression ``loss``)."""
    spec = resolve_loss(loss)
    net = copy.deepcopy(model)
    losses, accs = [], []
    for c in coords:
        state = dict(subspace.point(c))
        if bn == "fixed":
            state.update(subspace.reference_buffers)
        net.load_state_dict(state, strict=False)
        if has_batch_norm(net) and bn == "recompute":
            torch.optim.swa_utils.update_bn(batches(*(bn_data or data), batch_size), net)
        net.eval()
        total, correct = 0.0, 0
        for xb, yb in batches(*data, batch_size):
            outputs = net(xb)
            if spec.per_sample is None:
                total += float(nn.functional.cross_entropy(outputs.double(), yb, reduction="sum"))
            else:
                target = yb.double() if yb.is_floating_point() else yb
                total += float(spec.per_sample(outputs.double(), target).sum())
            if spec.classification:
                correct += int((outputs.argmax(1) == yb).sum())
        losses.append(total / data[0].shape[0])
        accs.append(100.0 * correct / data[0].shape[0])
    return np.array(losses), (np.array(accs) if spec.classification else None)
