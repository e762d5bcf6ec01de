"""The learning rates of the ensembling methods, as step schedules of
`fastloss.training.train` (``schedule(step, total) -> multiplier of the base rate``), and the
steps at which each method takes its models.

- SWA and SWAG (Izmailov et al. 2018; Maddox et al. 2019): the base rate for the first half
  of the SGD budget, then linearly down to the SWA rate at 90 % of it, then the SWA rate
  (``"constant"``), or from the budget on cycles of c epochs whose rate falls linearly from
  the base rate to the SWA rate (``"cyclic"``). Models are taken at the end of the budget
  and of every c-th epoch after it (for the cyclic rate: at each cycle's end, its lowest
  rate).
- FGE (Garipov et al. 2018, §"fast geometric ensembling"): cycles of c steps whose rate
  goes linearly from α1 down to α2 in the first half and back up in the second; a snapshot
  at the middle of each cycle, where the rate is α2.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastloss.errors import ArgumentError

SWA_RATES = ("constant", "cyclic")


@dataclass(frozen=True)
class SWASchedule:
    """``lr`` for the SGD budget of ``start`` epochs (decaying as above), then ``swa_lr``
    (``rate="constant"``) or cycles of ``every`` epochs from ``lr`` down to ``swa_lr``
    (``"cyclic"``); a model is averaged every ``every`` epochs from epoch ``start`` on.
    ``start=0`` averages from a trained network at once (paper 002's algorithm).
    ``steps_per_epoch`` turns epochs into the training loop's steps."""

    lr: float
    swa_lr: float
    start: int
    every: int
    steps_per_epoch: int
    rate: str = "constant"

    def __post_init__(self) -> None:
        if self.rate not in SWA_RATES:
            raise ArgumentError(f"the SWA rate must be one of {SWA_RATES}, got {self.rate!r}")
        if self.start < 0 or self.every < 1 or self.steps_per_epoch < 1:
            raise ArgumentError(
                f"need swa_start >= 0 and a collection every >= 1 epochs; got start "
                f"{self.start}, every {self.every}"
            )
        if not (self.swa_lr > 0 and self.lr > 0):
            raise ArgumentError(f"learning rates must be > 0, got {self.lr} and {self.swa_lr}")

    def __call__(self, step: int, total: int) -> float:
        ratio = self.swa_lr / self.lr
        budget = self.start * self.steps_per_epoch
        if step >= budget and self.rate == "cyclic":
            cycle = self.every * self.steps_per_epoch
            t = ((step - budget) % cycle + 1) / cycle
            return 1.0 - t * (1.0 - ratio)
        t = step / budget if budget else 1.0
        if t <= 0.5:
            return 1.0
        if t <= 0.9:
            return 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4
        return ratio

    def takes_model(self, steps_done: int) -> bool:
        """Whether the model after ``steps_done`` steps joins the average."""
        if steps_done % self.steps_per_epoch:
            return False
        epoch = steps_done // self.steps_per_epoch
        return epoch >= max(self.start, 1) and (epoch - self.start) % self.every == 0


@dataclass(frozen=True)
class FGESchedule:
    """Triangular cycles of ``cycle_steps`` steps between ``lr1`` and ``lr2`` (multipliers of
    ``lr1``, the base rate)."""

    lr1: float
    lr2: float
    cycle_steps: int

    def __post_init__(self) -> None:
        if self.cycle_steps < 2:
            raise ArgumentError(f"an FGE cycle needs at least 2 steps, got {self.cycle_steps}")
        if not (0 < self.lr2 <= self.lr1):
            raise ArgumentError(f"FGE needs 0 < lr2 <= lr1, got lr1 {self.lr1}, lr2 {self.lr2}")

    def __call__(self, step: int, total: int) -> float:
        t = (step % self.cycle_steps + 1) / self.cycle_steps
        ratio = self.lr2 / self.lr1
        if t <= 0.5:
            return (1 - 2 * t) + 2 * t * ratio
        return (2 - 2 * t) * ratio + (2 * t - 1)

    def takes_model(self, steps_done: int) -> bool:
        """Whether the model after ``steps_done`` steps is a snapshot (mid-cycle; for an odd
        cycle, after the step with the lowest rate)."""
        return steps_done % self.cycle_steps == self.cycle_steps // 2
