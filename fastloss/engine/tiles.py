"""How many points and samples go through the batched model at once.

On the CPU, cache-sized tiles of points × samples beat large batches (docs/design.md, "CPU
facts"); on the GPU, large chunks pay.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastloss.core import BatchedModel

CPU_TILE_BYTES = 8 << 20
CPU_MAX_POINTS = 32
CPU_MAX_BATCH = 2048


@torch.no_grad()
def largest_activation_bytes(batched: BatchedModel, coords: Tensor, x: Tensor) -> int:
    """Bytes per point and sample of the largest per-point layer output, from a probe pass
    at two points and two samples. Outputs shared by all points (``[B, ...]``, before the
    first parametrised layer) do not grow with the points and are left out."""
    largest = 0
    K = B = 2

    def record(_module, _inputs, output):
        nonlocal largest
        if isinstance(output, Tensor) and output.dim() > 0 and output.shape[0] == K * B:
            largest = max(largest, output[0].numel() * output.element_size())

    leaves = [m for m in batched.net.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    probe = x[:B] if x.shape[0] >= B else x[:1].expand(B, *x.shape[1:])
    try:
        batched.set_bn_statistics(K, "recompute", coords.device)
        batched(probe, coords[:1].expand(K, -1))
    finally:
        for h in handles:
            h.remove()
    return max(1, largest)


def plan_tiles(
    batched: BatchedModel,
    coords: Tensor,
    x: Tensor,
    batch_size: int,
    points: int | None = None,
    largest: int | None = None,
) -> tuple[int, int]:
    """(points per chunk, samples per evaluation batch).

    On the GPU large chunks pay: as many points as half the free memory holds (without
    autograd a few layer outputs are alive at once; four is the allowance), in batches of
    ``batch_size``. On the CPU a tile of points × samples is sized so that its largest
    layer output stays within `CPU_TILE_BYTES` (docs/design.md, "CPU facts"): larger tiles
    fall out of cache and pay page faults for fresh memory, which cost more than the work
    on conv nets.
    Within the tile, samples come first (fewer, larger calls), then points.
    The BN-recompute pass always uses ``batch_size`` samples, since its statistics depend
    on it; evaluation results do not depend on the tile. ``largest``: the probe's result,
    when known already.
    """
    largest = largest or largest_activation_bytes(batched, coords, x)
    K, N = coords.shape[0], x.shape[0]
    if coords.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(coords.device)
        fit = free // 2 // (4 * largest * batch_size)
        return int(points or max(1, min(1024, fit, K))), batch_size
    tile = max(1, CPU_TILE_BYTES // largest)
    eval_batch = max(1, min(N, CPU_MAX_BATCH, tile))
    fit = tile // eval_batch
    return int(points or max(1, min(CPU_MAX_POINTS, fit, K))), eval_batch
