"""Learning-rate schedules, as multipliers of the base rate at a fraction of the run."""

from __future__ import annotations

import math

from fastloss.errors import ArgumentError

SCHEDULES = ("cosine", "step", "garipov", "constant")
TRAIN_SCHEDULES = ("cosine", "step", "constant")  # the training loop's
FIT_SCHEDULES = ("garipov", "cosine", "constant")  # curve fitting's


def check_schedule(schedule: str, allowed: tuple[str, ...] = SCHEDULES) -> None:
    if schedule not in allowed:
        raise ArgumentError(f"schedule must be one of {', '.join(allowed)}; got {schedule!r}")


def lr_factor(schedule: str, progress: float) -> float:
    """The multiplier at ``progress`` ∈ [0, 1] of the run:

    - ``"cosine"``: ``½(1 + cos πp)``, from 1 down to 0;
    - ``"step"``: ÷10 at 50 % and again at 75 %;
    - ``"garipov"`` (dnn-mode-connectivity's curve fitting): 1 for the first half, then
      linearly down to 0.01 at 90 %, then 0.01;
    - ``"constant"``: 1.
    """
    check_schedule(schedule)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return 1.0 if progress < 0.5 else 0.1 if progress < 0.75 else 0.01
    if schedule == "garipov":
        if progress <= 0.5:
            return 1.0
        if progress <= 0.9:
            return 1.0 - (progress - 0.5) / 0.4 * 0.99
        return 0.01
    return 1.0
