"""The evaluation engine: loss and accuracy of one model at many points of a subspace.

For each chunk of points (DESIGN.md §4): with BatchNorm and ``bn="recompute"``, one
train-mode pass over the training data computes every point's BN statistics (cumulative
average, as ``torch.optim.swa_utils.update_bn``); then one eval pass per split accumulates
per-point loss sums and correct counts through the fused ``point_loss``. Finished chunks
go to the HDF5 file at once, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

import fastloss
from fastloss import ops
from fastloss.batched import BatchedModel, batch
from fastloss.data import data_hash
from fastloss.subspace import Grid, Subspace, affine_coords

Data = tuple[Tensor, Tensor]
# On the CPU, cache-sized tiles of points × samples beat large batches (DESIGN.md §8).
CPU_TILE_BYTES = 8 << 20
CPU_MAX_POINTS = 32
CPU_MAX_BATCH = 2048
CPU_BATCH_SIZE = 512
GPU_BATCH_SIZE = 4096


def as_tensors(data, name: str) -> Data:
    """``(x, y)`` tensors from a tuple or a DataLoader / iterable of batches."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
    elif isinstance(data, Iterable):
        xs, ys = zip(*((b[0], b[1]) for b in data), strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise TypeError(f"{name} must be (x, y) tensors or a DataLoader, got {type(data).__name__}")
    if x.shape[0] != y.shape[0] or y.dim() != 1:
        raise ValueError(
            f"{name}: x has {x.shape[0]} samples and y has shape {list(y.shape)}; "
            "expected y [N] class indices for the N samples"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return x, y.long()


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _batches(x: Tensor, y: Tensor, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], y[start : start + size]


@torch.no_grad()
def recompute_bn(batched: BatchedModel, coords: Tensor, data: Data, batch_size: int) -> None:
    """Per-point BN statistics over ``data``: the cumulative average of batch statistics."""
    batched.set_bn_statistics(coords.shape[0], "recompute", coords.device)
    batched.train()
    for xb, _ in _batches(*data, batch_size):
        batched(xb, coords)
    batched.eval()


@torch.no_grad()
def point_metrics(
    batched: BatchedModel, coords: Tensor, data: Data, batch_size: int
) -> tuple[Tensor, Tensor]:
    """(mean loss [K], accuracy in percent [K]) over ``data``."""
    K = coords.shape[0]
    loss = torch.zeros(K, dtype=torch.float64, device=coords.device)
    correct = torch.zeros(K, dtype=torch.int64, device=coords.device)
    for xb, yb in _batches(*data, batch_size):
        logits = batched(xb, coords)
        batch_loss, batch_correct = ops.point_loss(logits.reshape(K, xb.shape[0], -1), yb)
        loss += batch_loss.double()
        correct += batch_correct
    n = data[0].shape[0]
    return loss / n, correct.double() * (100.0 / n)


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
    batched: BatchedModel, coords: Tensor, x: Tensor, batch_size: int, points: int | None = None
) -> tuple[int, int]:
    """(points per chunk, samples per evaluation batch).

    On the GPU large chunks pay: as many points as half the free memory holds (without
    autograd a few layer outputs are alive at once; four is the allowance), in batches of
    ``batch_size``. On the CPU a tile of points × samples is sized so that its largest
    layer output stays within `CPU_TILE_BYTES` (DESIGN.md §8): larger tiles fall out of
    cache and pay page faults for fresh memory, which cost more than the work on conv nets.
    Within the tile, samples come first (fewer, larger calls), then points.
    The BN-recompute pass always uses ``batch_size`` samples, since its statistics depend
    on it; evaluation results do not depend on the tile.
    """
    largest = largest_activation_bytes(batched, coords, x)
    K, N = coords.shape[0], x.shape[0]
    if coords.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(coords.device)
        fit = free // 2 // (4 * largest * batch_size)
        return int(points or max(1, min(1024, fit, K))), batch_size
    tile = max(1, CPU_TILE_BYTES // largest)
    eval_batch = max(1, min(N, CPU_MAX_BATCH, tile))
    fit = tile // eval_batch
    return int(points or max(1, min(CPU_MAX_POINTS, fit, K))), eval_batch


def prepare(
    model: nn.Module,
    subspace: Subspace,
    splits: dict[str, Data],
    coords: Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[BatchedModel, dict[str, Data], Tensor]:
    """The batched model (eval mode), the data and the coordinates on ``device``, in the
    working dtype (float32 by default); coordinates stay float32 for bf16/fp16 work, so
    they keep 24 bits."""
    work_dtype = dtype or torch.float32
    coord_dtype = torch.float64 if work_dtype == torch.float64 else torch.float32
    batched = batch(model, subspace.to(device, work_dtype)).to(device)
    batched.eval()
    data = {s: (x.to(device, work_dtype), y.to(device)) for s, (x, y) in splits.items()}
    return batched, data, coords.to(device, coord_dtype)


def _grid_points(
    subspace: Subspace, grid: Grid | Tensor
) -> tuple[Tensor, np.ndarray, np.ndarray | None, Tensor]:
    """(coords [K, J], x axis, y axis or None, plane coordinates [K, d])."""
    if isinstance(grid, Grid):
        xs, ys = grid.axes()
        plane = grid.coords()
        coords = affine_coords(plane)
        if coords.shape[1] != subspace.J:
            raise ValueError(
                f"a {plane.shape[1]}-D grid needs a subspace with J = "
                f"{coords.shape[1]} basis points; this one has J = {subspace.J}"
            )
        return coords, xs.numpy(), None if ys is None else ys.numpy(), plane
    coords = torch.as_tensor(grid, dtype=torch.float64)
    if coords.dim() != 2 or coords.shape[1] != subspace.J:
        raise ValueError(
            f"explicit coordinates must be [K, J] with J = {subspace.J}, got {list(coords.shape)}"
        )
    return coords, np.arange(coords.shape[0], dtype=np.float64), None, coords


class _MemoryResult:
    """The in-memory twin of io.SurfaceWriter, for runs without an output file."""

    def __init__(self, x, y, metrics, settings, attrs, markers):
        from fastloss.io import Surface

        shape = (len(x),) if y is None else (len(y), len(x))
        self._surface = Surface(
            x=x,
            y=y,
            values={m: np.full(shape, np.nan) for m in metrics},
            done=np.zeros(shape, dtype=bool),
            attrs=dict(attrs),
            markers=dict(markers),
            settings=dict(settings),
        )

    def surface(self):
        return self._surface

    def pending(self) -> np.ndarray:
        return np.flatnonzero(~self._surface.done.reshape(-1))

    def write(self, flat, values) -> None:
        for name, v in values.items():
            self._surface.values[name].reshape(-1)[flat] = v
        self._surface.done.reshape(-1)[flat] = True

    def update_attrs(self, **kv) -> None:
        self._surface.attrs.update(kv)

    def close(self) -> None:
        pass


def evaluate(
    model: nn.Module,
    subspace: Subspace,
    grid: Grid | Tensor,
    train=None,
    test=None,
    metrics: Sequence[str] = ("loss", "acc"),
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    out: str | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    points_per_chunk: int | None = None,
):
    """Loss and accuracy of ``model`` at every grid point of ``subspace`` -> `io.Surface`.

    ``train``/``test`` are ``(x, y)`` tensors or DataLoaders. ``bn="recompute"`` recomputes
    BatchNorm statistics at each point over the train data; ``"fixed"`` uses those of the
    subspace's reference network. ``out`` writes an HDF5 file after every chunk; with
    ``resume`` a rerun with the same settings continues an interrupted file, and a file made
    with other settings is refused unless ``overwrite``. ``dtype=torch.bfloat16`` evaluates in
    bf16 with float32 accumulation and loss. ``batch_size`` is the batch of the BN-recompute
    pass (the statistics depend on it) and, on the GPU, of the evaluation passes; on the CPU
    the evaluation passes run in cache-sized tiles (`plan_tiles`), which do not change results.
    """
    from fastloss.io import SurfaceWriter

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = {
        name: as_tensors(d, name) for name, d in (("train", train), ("test", test)) if d is not None
    }
    if not splits:
        raise ValueError("nothing to evaluate: give train=(x, y) and/or test=(x, y)")
    unknown = set(metrics) - {"loss", "acc"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; available: 'loss', 'acc'")
    if bn not in ("recompute", "fixed"):
        raise ValueError(f"bn must be 'recompute' or 'fixed', got {bn!r}")
    uses_bn = _has_batch_norm(model)
    if uses_bn and bn == "recompute" and "train" not in splits:
        raise ValueError("bn='recompute' needs train data to compute BatchNorm statistics")
    batch_size = batch_size or (CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE)

    coords, xs, ys, _ = _grid_points(subspace, grid)
    value_names = [f"{split}_{m}" for split in splits for m in metrics]
    settings = {
        "grid": [list(map(float, xs)), None if ys is None else list(map(float, ys))],
        "coords_hash": hashlib.sha256(coords.numpy().tobytes()).hexdigest()[:16],
        "metrics": value_names,
        "bn": bn if uses_bn else "none",
        "batch_size": batch_size,
        "dtype": str(dtype or torch.float32),
        "subspace": subspace.kind,
        "J": subspace.J,
        "basis_norms": [round(n, 6) for n in subspace.norms()],
        "data": {s: {"n": int(d[0].shape[0]), "hash": data_hash(*d)} for s, d in splits.items()},
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    attrs = {
        "layout": "values[i, j] is at (xcoordinates[j], ycoordinates[i])",
        "fastloss_version": fastloss.__version__,
        "torch_version": str(torch.__version__),
        "device": str(device),
        "model_repr": repr(model),
    }
    markers: dict[str, tuple[float, float]] = dict(subspace.info.get("markers", {}))  # type: ignore[call-overload]
    result: SurfaceWriter | _MemoryResult
    if out is not None:
        if not resume and not overwrite and os.path.exists(out):
            raise FileExistsError(
                f"{out} exists; pass resume=True to continue it or overwrite=True to start afresh"
            )
        result = SurfaceWriter(
            out, xs, ys, value_names, settings, attrs, markers, overwrite=overwrite
        )
    else:
        result = _MemoryResult(xs, ys, value_names, settings, attrs, markers)

    batched, data, coords_dev = prepare(model, subspace, splits, coords, device, dtype)
    pending = result.pending()
    if len(pending):
        probe = next(iter(data.values()))[0]
        chunk, eval_batch = plan_tiles(batched, coords_dev, probe, batch_size, points_per_chunk)
        result.update_attrs(points_per_chunk=chunk, eval_batch_size=eval_batch)
    bar = _progress(len(coords), len(coords) - len(pending), progress)
    start = time.perf_counter()
    try:
        with batched.caching_products():  # first-layer products shared by chunks
            i = 0
            while i < len(pending):
                idx = pending[i : i + chunk]
                c = coords_dev[torch.as_tensor(idx, device=device)]
                try:
                    values = _evaluate_chunk(
                        batched, c, data, metrics, uses_bn, bn, batch_size, eval_batch
                    )
                except torch.cuda.OutOfMemoryError:
                    if chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)  # retry the same points in smaller chunks
                    torch.cuda.empty_cache()
                    continue
                result.write(idx, values)
                i += len(idx)
                bar.update(len(idx))
        seconds = time.perf_counter() - start
        result.update_attrs(
            seconds=round(seconds, 3), points_per_second=round(len(pending) / max(seconds, 1e-9), 2)
        )
        return result.surface()
    finally:
        bar.close()
        result.close()


def _evaluate_chunk(
    batched, coords, data, metrics, uses_bn, bn, batch_size, eval_batch
) -> dict[str, np.ndarray]:
    if uses_bn:
        if bn == "recompute":
            recompute_bn(batched, coords, data["train"], batch_size)
        else:
            batched.set_bn_statistics(coords.shape[0], "fixed", coords.device)
    values = {}
    for split, d in data.items():
        loss, acc = point_metrics(batched, coords, d, eval_batch)
        if "loss" in metrics:
            values[f"{split}_loss"] = loss.cpu().numpy()
        if "acc" in metrics:
            values[f"{split}_acc"] = acc.cpu().numpy()
    return values


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=done,
        unit="pt",
        disable=not enabled,
        smoothing=0.1,
        desc="fastloss",
        dynamic_ncols=True,
    )


# ---- the serial loop, the reference the engine is tested and benchmarked against ----------


@torch.no_grad()
def evaluate_serial(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    data: Data,
    bn: str = "recompute",
    bn_data: Data | None = None,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """What loss-landscape does: per point, load the weights into the model, recompute BN
    statistics (``update_bn``), then run the data through it. Returns (mean loss, acc %)."""
    import copy

    net = copy.deepcopy(model)
    losses, accs = [], []
    for c in coords:
        state = dict(subspace.point(c))
        if bn == "fixed":
            state.update(subspace.reference_buffers)
        net.load_state_dict(state, strict=False)
        if _has_batch_norm(net) and bn == "recompute":
            torch.optim.swa_utils.update_bn(_batches(*(bn_data or data), batch_size), net)
        net.eval()
        total, correct = 0.0, 0
        for xb, yb in _batches(*data, batch_size):
            logits = net(xb)
            total += float(nn.functional.cross_entropy(logits.double(), yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        losses.append(total / data[0].shape[0])
        accs.append(100.0 * correct / data[0].shape[0])
    return np.array(losses), np.array(accs)
