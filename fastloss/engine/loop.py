"""The evaluation engine: one model at many points of a subspace, chunk by chunk.

`prepare` checks the inputs once and builds the batched model with the data on the device;
`run` evaluates a list of points: for each chunk (sized by `plan_tiles`), with BatchNorm and
``bn="recompute"`` one train-mode pass over the training data computes every point's BN
statistics (cumulative average, as ``torch.optim.swa_utils.update_bn``), then one eval pass
per split feeds the outputs to the reducers (what is computed per point), and the chunk's
values go to the sink (where results go) at once, so an interrupted run resumes at the
first unfinished chunk. On CUDA out-of-memory the chunk is halved and retried.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fastloss.core import BatchedModel, GridPoints, SharedProducts, Subspace, batch, used_rows
from fastloss.engine.inputs import (
    Data,
    batches,
    check_bn,
    check_data_fits,
    default_batch_size,
    default_device,
)
from fastloss.engine.progress import progress_bar
from fastloss.engine.reducers import Reducer
from fastloss.engine.sharding import GatheredSink, world
from fastloss.engine.sinks import MemorySink, Sink
from fastloss.engine.tiles import largest_activation_bytes, plan_tiles
from fastloss.io.hashing import data_hash
from fastloss.ops.losses import Loss, PerSample, resolve_loss
from fastloss.ops.reference import opmath
from fastloss.version import __version__


@dataclass
class Evaluation:
    """A model ready to run at points of a subspace: the batched model (eval mode), the data
    on the device in the working dtype, and the settings that shape every result."""

    model: nn.Module
    batched: BatchedModel
    data: dict[str, Data]
    loss: Loss
    bn: str  # "recompute", "fixed" or "none" (no BatchNorm in the model)
    batch_size: int
    device: torch.device
    dtype: torch.dtype | None
    data_settings: dict[str, Any]
    products: SharedProducts = field(default_factory=SharedProducts)
    largest_activation: int | None = None

    def settings(self) -> dict[str, Any]:
        """What a result made with this evaluation must match to be resumed."""
        return {
            "bn": self.bn,
            "batch_size": self.batch_size,
            "dtype": str(self.dtype or torch.float32),
            "loss": self.loss.name,
            "data": self.data_settings,
            "model": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def provenance(self) -> dict[str, Any]:
        """Where and with what a result was made (not compared on resume)."""
        return {
            "fastloss_version": __version__,
            "torch_version": str(torch.__version__),
            "device": str(self.device),
            "model_repr": repr(self.model),
        }

    def load_subspace(self, subspace: Subspace) -> None:
        """Evaluate another subspace of the same shapes from now on (a video's next plane)."""
        self.batched.load_subspace(subspace.to(self.device, self.dtype or torch.float32))
        self.products.clear()  # the first layer's products belong to the old basis


def prepare(
    model: nn.Module,
    subspace: Subspace,
    splits: Mapping[str, Data],
    *,
    loss: str | PerSample | Loss = "cross_entropy",
    bn: str = "recompute",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Evaluation:
    """Check the inputs and build the `Evaluation`. ``splits`` are ``(x, y)`` tensors by name
    (``"train"`` is the BN-recompute data). ``dtype`` is the working dtype (float32 by
    default; bf16 evaluates with float32 accumulation and loss). ``batch_size`` is the batch
    of the BN-recompute pass (its statistics depend on it) and, on the GPU, of the evaluation
    passes; on the CPU those run in cache-sized tiles (`plan_tiles`), which do not change
    results."""
    spec = resolve_loss(loss)
    device = default_device(device)
    bn_mode = check_bn(bn, model, splits)
    check_data_fits(model, splits, spec)
    work_dtype = dtype or torch.float32
    if device.type == "cpu" and work_dtype == torch.bfloat16:
        warn_if_no_native_bf16()
    batched = batch(model, subspace.to(device, work_dtype)).to(device)
    batched.eval()
    target_dtype = opmath(work_dtype)  # regression targets keep float32 beside bf16 outputs
    data = {
        s: (x.to(device, work_dtype), y.to(device, target_dtype if y.is_floating_point() else None))
        for s, (x, y) in splits.items()
    }
    return Evaluation(
        model=model,
        batched=batched,
        data=data,
        loss=spec,
        bn=bn_mode,
        batch_size=default_batch_size(batch_size, device),
        device=device,
        dtype=dtype,
        data_settings={
            s: {"n": int(x.shape[0]), "hash": data_hash(x, y)} for s, (x, y) in splits.items()
        },
    )


_warned_bf16 = False


def native_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (what oneDNN's bf16 kernels need)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private PyTorch check: assume native if absent
        return True


def warn_if_no_native_bf16() -> None:
    """Once per process: bf16 on a CPU without native bf16 instructions (AVX-512 BF16, AMX)
    is slower than float32, because PyTorch has no fast bf16 convolution or GEMM there."""
    global _warned_bf16
    if not native_bf16() and not _warned_bf16:
        _warned_bf16 = True
        warnings.warn(
            "fastloss: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so bfloat16 "
            "runs slower than float32 here; `fastloss profile` compares the two",
            stacklevel=3,
        )


@dataclass
class RunInfo:
    """What a `run` did: points evaluated now (by all processes of a group), the tile it
    used, its wall time."""

    evaluated: int = 0
    points_per_chunk: int | None = None
    eval_batch_size: int | None = None
    seconds: float = 0.0


def run(
    evaluation: Evaluation,
    coords: Tensor | GridPoints,
    reducers: Reducer | Sequence[Reducer],
    sink: Sink,
    *,
    progress: bool | Any = True,
    points_per_chunk: int | None = None,
) -> RunInfo:
    """Evaluate the points ``coords [K, J]`` (a tensor, or `GridPoints`, made per chunk) that
    ``sink`` has pending, chunk by chunk, and
    write each chunk's reducer values to ``sink``. ``progress``: show a bar (True), none
    (False), or an existing bar to advance. In a process group (`fastloss.engine.sharding`)
    every process calls `run` alike and evaluates its share of the chunks; a `MemorySink`
    then holds every process's values on every process."""
    ev = evaluation
    reducers = [reducers] if isinstance(reducers, Reducer) else list(reducers)
    if isinstance(sink, MemorySink) and world()[1] > 1:
        shared = GatheredSink(sink)
        info = run(
            ev, coords, reducers, shared, progress=progress, points_per_chunk=points_per_chunk
        )
        shared.gather()
        return info
    pending = sink.pending()
    info = RunInfo()
    if not len(pending):
        return info
    work_dtype = ev.dtype or torch.float32
    # Coordinates stay float32 for bf16/fp16 work, so they keep 24 bits.
    coord_dtype = torch.float64 if work_dtype == torch.float64 else torch.float32

    def points(idx) -> Tensor:  # a chunk's coordinates, made or cut from coords on the CPU
        return coords[torch.as_tensor(idx)].to("cpu", coord_dtype)

    K = len(coords)
    like = points([0]).to(ev.device).expand(K, -1)  # [K, J] without K rows in memory
    probe = next(iter(ev.data.values()))[0]
    if ev.largest_activation is None:
        ev.largest_activation = largest_activation_bytes(ev.batched, like, probe)
    chunk, eval_batch = plan_tiles(
        ev.batched, like, probe, ev.batch_size, points_per_chunk, ev.largest_activation
    )
    info.points_per_chunk, info.eval_batch_size = chunk, eval_batch
    # The chunks are cut from all pending points; under a process group (`ShardedSink`)
    # each process takes every size-th one, so a point sits in the same chunk as in a
    # one-process run and gets the same bits.
    rank, size = getattr(sink, "share", (0, 1))
    mine = [pending[i : i + chunk] for i in range(0, len(pending), chunk)][rank::size]
    own = sum(len(block) for block in mine)
    own_bar = isinstance(progress, bool)
    done = K - len(pending)
    bar: Any = progress_bar(done + own, done, progress) if own_bar else progress
    start = time.perf_counter()
    try:
        with ev.batched.caching_products(ev.products):  # first-layer products shared by chunks
            for block in mine:
                i = 0
                while i < len(block):
                    idx = block[i : i + chunk]
                    chunk_coords, rows = used_rows(points(idx))
                    try:
                        values = evaluate_chunk(
                            ev,
                            chunk_coords.to(ev.device),
                            reducers,
                            eval_batch,
                            rows=None if rows is None else rows.to(ev.device),
                        )
                    except torch.cuda.OutOfMemoryError:
                        if chunk == 1:
                            raise
                        chunk = max(1, chunk // 2)  # retry the same points in smaller chunks
                        torch.cuda.empty_cache()
                        continue
                    sink.write(idx, values)
                    i += len(idx)
                    bar.update(len(idx))
    finally:
        if own_bar:
            bar.close()
    info.evaluated, info.seconds = len(pending), time.perf_counter() - start
    return info


def run_in_memory(
    evaluation: Evaluation,
    coords: Tensor,
    reducers: Reducer | Sequence[Reducer],
    progress: bool | Any = False,
) -> dict[str, np.ndarray]:
    """`run` into a `MemorySink`; returns its values ``{name: [K, ...]}``."""
    sink = MemorySink(coords.shape[0])
    run(evaluation, coords, reducers, sink, progress=progress)
    return sink.values


@torch.no_grad()
def evaluate_chunk(
    ev: Evaluation,
    coords: Tensor,
    reducers: Sequence[Reducer],
    eval_batch: int,
    rows: Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Every reducer's values at the points ``coords [k, J]`` (BN statistics set first);
    ``rows``: the basis points ``coords`` refer to, if not all (`core.used_rows`)."""
    k = coords.shape[0]
    if ev.bn == "recompute":
        recompute_bn(ev.batched, coords, ev.data["train"], ev.batch_size, rows)
    elif ev.bn == "fixed":
        ev.batched.set_bn_statistics(k, "fixed", coords.device)
    for r in reducers:
        r.begin(k, coords.device)
    for split, (x, y) in ev.data.items():
        readers = [r for r in reducers if r.reads(split)]
        offset = 0
        for xb, yb in batches(x, y, eval_batch) if readers else ():
            outputs = ev.batched(xb, coords, rows)
            for r in readers:
                r.update(split, outputs, yb, offset)
            offset += xb.shape[0]
    sizes = {split: int(x.shape[0]) for split, (x, _) in ev.data.items()}
    values: dict[str, np.ndarray] = {}
    for r in reducers:
        values.update({n: v.cpu().numpy() for n, v in r.finish(sizes).items()})
    return values


@torch.no_grad()
def recompute_bn(
    batched: BatchedModel, coords: Tensor, data: Data, batch_size: int, rows: Tensor | None = None
) -> None:
    """Per-point BN statistics over ``data``: the cumulative average of batch statistics."""
    batched.set_bn_statistics(coords.shape[0], "recompute", coords.device)
    batched.train()
    for xb, _ in batches(*data, batch_size):
        batched(xb, coords, rows)
    batched.eval()
