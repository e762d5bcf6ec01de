"""The engine on several processes (``torchrun``; gloo on the CPU, NCCL on GPUs).

Every process runs the same command on the same inputs; `run` cuts the pending points into
the chunks a one-process run would form and gives every size-th chunk to each process. A
point's values do not depend on which process evaluated it, so the result equals a
one-process run's bit for bit (for the same dtype, device kind and threads per process:
torchrun sets OMP_NUM_THREADS=1 unless told otherwise).

In memory (`GatheredSink`, what `run` uses for a `MemorySink` in a group) every process then
receives the others' values, so all hold the whole result. Into a file (`ShardedSink`) each
process writes each finished chunk to a shard file of its own, ``rank<r>-<first point>.npz``
in a folder beside the output, renamed into place when complete; rank 0 writes its chunks to
the output and merges the complete shards into it as it goes, and all that are left at the
end; only rank 0 ever opens the output, and on several machines the output's folder must be
on a filesystem they share. A run killed part-way leaves its finished chunks in the shards:
the rerun's rank 0 merges them first, so only the missing points are evaluated again. A
process that stalls fails the others' next collective after ``$FASTLOSS_DIST_TIMEOUT``
seconds (`collective`), and one that dies fails it at once.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from fastloss.engine.sinks import MemorySink, Sink
from fastloss.errors import ArgumentError, FastlossError, ProcessGroupError

T = TypeVar("T")

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
        with collective():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return True


def leave() -> None:
    """Leave the process group, if in one. Called before the process exits: a gloo group
    left to the interpreter's shutdown can abort the process (SIGABRT) when its worker
    threads free tensors after Python is gone, which fails the job in torchrun."""
    if dist.is_available() and dist.is_initialized():
        # a group broken by a lost process raises here: exiting is all that is left to do
        with suppress(RuntimeError):
            dist.destroy_process_group()


@contextmanager
def collective() -> Iterator[None]:
    """Turn a failed collective (a process stalled past ``$FASTLOSS_DIST_TIMEOUT`` or gone)
    into a `ProcessGroupError` that says what to do."""
    try:
        yield
    except RuntimeError as error:  # torch.distributed's errors are RuntimeErrors
        if isinstance(error, FastlossError):
            raise
        timeout = os.environ.get(TIMEOUT_ENV, "1800")
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise ProcessGroupError(
            f"process {os.environ.get('RANK', world()[0])} of "
            f"{os.environ.get('WORLD_SIZE', world()[1])}: another process did not answer within "
            f"{timeout} s (${TIMEOUT_ENV}) or left the group ({type(error).__name__}: "
            f"{reason}); finished points are kept: rerun the same command to evaluate the rest"
        ) from error


def barrier() -> None:
    if world()[1] > 1:
        with collective():
            dist.barrier()


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every process."""
    if world()[1] == 1:
        return value
    box = [value]
    with collective():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every process's ``value`` (any picklable object), by rank, on every process."""
    if world()[1] == 1:
        return [value]
    values: list[Any] = [None] * world()[1]
    with collective():
        dist.all_gather_object(values, value)
    return values


def open_on_rank0(open_output: Callable[[], T], out: str | os.PathLike) -> T | None:
    """``open_output()`` on rank 0 (None on the others) once every process is past its
    checks; a refusal there (an existing or locked ``out``) is raised on every process."""
    if world()[1] == 1:
        return open_output()
    barrier()
    opened, refusal = None, None
    if world()[0] == 0:
        try:
            opened = open_output()
        except Exception as error:  # raised here, and named on the other processes
            refusal = error
    message = from_rank0(None if refusal is None else f"{type(refusal).__name__}: {refusal}")
    if refusal is not None:
        raise refusal
    if message is not None:
        raise ArgumentError(f"rank 0 could not open {out}: {message}")
    return opened


class GatheredSink:
    """A `MemorySink` shared by the processes of the group: each writes its own chunks,
    `gather` then gives every process every other's, so all hold the whole result."""

    def __init__(self, sink: MemorySink):
        self.sink, self.share = sink, world()
        self.written: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []

    def pending(self) -> np.ndarray:
        return self.sink.pending()

    def write(self, indices: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        self.sink.write(indices, values)
        self.written.append((np.asarray(indices), dict(values)))

    def gather(self) -> None:
        for rank, chunks in enumerate(gather(self.written)):
            if rank != self.share[0]:
                for indices, values in chunks:
                    self.sink.write(indices, values)
        self.written = []


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
        stamp = self.folder / "settings.key"
        if self.rank == 0:
            self._merge()
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp.write_text(self.key)
            todo = self.sink.pending()  # type: ignore[union-attr]
        todo = from_rank0(todo)
        sees = gather(stamp.is_file() and stamp.read_text() == self.key)
        if not all(sees):  # on several machines: rank 0 must read every process's shards
            blind = [r for r, seen in enumerate(sees) if not seen]
            raise ArgumentError(
                f"process(es) {blind} cannot see {self.folder}, which rank 0 made: on "
                "several machines the output must be on a filesystem that all of them share"
            )
        return np.asarray(todo)

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
