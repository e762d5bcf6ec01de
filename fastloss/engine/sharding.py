"""The engine on several processes (``torchrun``; gloo on the CPU, NCCL on GPUs).

Every process evaluates a share of the pending points (`run` cuts them into chunks and rank
r takes every size-th chunk) and writes each finished chunk to a shard file of its own,
``rank<r>-<first point>.npz`` in a folder beside the output, renamed into place when
complete. Rank 0 writes its chunks to the output and merges the complete shards into it as
it goes, and all that are left at the end; only rank 0 ever opens the output. A run killed
part-way leaves its finished chunks in the shards: the rerun's rank 0 merges them first, so
only the missing points are evaluated again. A point's values do not depend on which process
evaluated it, and its chunk is the one a one-process run would form, so the merged file
equals a one-process run's bit for bit (for the same dtype, device kind and threads per
process: torchrun sets OMP_NUM_THREADS=1 unless told otherwise).
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fastloss.engine.sinks import Sink

TIMEOUT_ENV = "FASTLOSS_DIST_TIMEOUT"  # seconds a collective waits for a stalled process


def world() -> tuple[int, int]:
    """(rank, number of processes) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_environment() -> bool:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE >
    1), NCCL where CUDA is available and gloo otherwise, with a timeout of
    ``$FASTLOSS_DIST_TIMEOUT`` seconds (default 1800) after which a stalled process fails
    the others' collectives instead of hanging them. Returns whether there is a group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return True


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every process."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_folder(out: str | os.PathLike) -> Path:
    """Where the processes' shards of ``out`` live until merged."""
    return Path(f"{os.fspath(out)}.shards")


class ShardedSink:
    """A `Sink` over the processes of the group: ``sink`` is the output's (rank 0's; None on
    the others), ``folder`` the shards' (`shard_folder`), ``key`` names the run's settings
    (shards left by a run with other settings are discarded, never merged). `pending` deals
    out the points not done yet (all of them, on every process; ``share`` = (rank, size)
    tells `run` which chunks are this process's), `write` stores a chunk in this process's
    shard, `finish` merges every shard into ``sink``."""

    def __init__(self, sink: Sink | None, folder: str | os.PathLike, key: str):
        self.rank, self.size = world()
        if (sink is None) != (self.rank != 0):
            raise ValueError("rank 0, and only rank 0, holds the output's sink")
        self.sink, self.folder, self.key = sink, Path(folder), key
        self.share = (self.rank, self.size)

    def _merge(self) -> None:
        """Rank 0: every complete shard into the sink, then removed (a rerun after a crash
        part-way through merging writes the same values again)."""
        assert self.sink is not None
        if not self.folder.is_dir():
            return
        stamp = self.folder / "settings.key"
        if not stamp.is_file() or stamp.read_text() != self.key:
            shutil.rmtree(self.folder)  # another run's points
            return
        for path in sorted(self.folder.glob("rank*.npz")):
            with np.load(path) as shard:
                values = {k[len("value_") :]: shard[k] for k in shard.files if k != "indices"}
                self.sink.write(shard["indices"], values)
            path.unlink()

    def pending(self) -> np.ndarray:
        todo = None
        if self.rank == 0:
            self._merge()
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "settings.key").write_text(self.key)
            todo = self.sink.pending()  # type: ignore[union-attr]
        return np.asarray(from_rank0(todo))

    def write(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Rank 0: into the output, with the other processes' complete shards so far (the
        output shows the progress); the others: into a shard."""
        indices = np.asarray(indices)
        if self.sink is not None:
            self.sink.write(indices, values)
            self._merge()
            return
        final = self.folder / f"rank{self.rank}-{int(indices[0]):010d}.npz"
        partial = final.with_suffix(".partial")
        with open(partial, "wb") as f:
            arrays: dict[str, Any] = {f"value_{k}": np.asarray(v) for k, v in values.items()}
            np.savez(f, **{"indices": indices, **arrays})
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, final)

    def finish(self) -> None:
        """Once every process is done: rank 0 merges the shards and removes their folder."""
        barrier()
        if self.rank == 0:
            self._merge()
            shutil.rmtree(self.folder, ignore_errors=True)
        barrier()
