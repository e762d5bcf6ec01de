"""Where the engine's time goes: one run under ``torch.profiler``, summarised per op.

`profile_run` evaluates points as `run` does and reports the points per second and the ops
that took the most time, each as its share of the run's wall time and its milliseconds per
point: what ``fastloss profile`` prints, and what the grid benchmark lists per workload.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from fastloss.engine.loop import Evaluation, run_in_memory
from fastloss.engine.reducers import Reducer


@dataclass(frozen=True)
class OpTime:
    """One op's own time (children excluded) over a profiled run."""

    name: str
    share: float  # of the run's wall time
    ms_per_point: float


@dataclass(frozen=True)
class RunProfile:
    """A profiled run: its speed, its top ops and the values it computed."""

    points: int
    seconds: float
    ops: list[OpTime]
    values: dict[str, np.ndarray]

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds

    @property
    def ms_per_point(self) -> float:
        return 1e3 * self.seconds / self.points


def profile_run(
    evaluation: Evaluation,
    coords: Tensor,
    reducers: Reducer | Sequence[Reducer],
    top: int = 5,
    warmup_points: int = 2,
) -> RunProfile:
    """Evaluate ``coords [K, J]`` under the profiler, after a short unprofiled run on the first
    ``warmup_points`` (first-call allocations and tile planning are not what a long run
    sees). Op times are self times: on the CPU the calling thread's, on a GPU the device's."""
    if warmup_points:
        run_in_memory(evaluation, coords[:warmup_points], reducers)
    cuda = evaluation.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        if cuda:
            torch.cuda.synchronize(evaluation.device)
        start = time.perf_counter()
        values = run_in_memory(evaluation, coords, reducers)
        if cuda:
            torch.cuda.synchronize(evaluation.device)
        seconds = time.perf_counter() - start
    K = coords.shape[0]
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    ops = [
        OpTime(e.key, getattr(e, attr) / 1e6 / seconds, getattr(e, attr) / 1e3 / K)
        for e in events[:top]
        if getattr(e, attr) > 0
    ]
    return RunProfile(K, seconds, ops, values)
