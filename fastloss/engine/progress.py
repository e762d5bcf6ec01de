"""One progress bar for every long loop (points, frames, steps).

On a terminal it is tqdm's bar. Anywhere else (a log file, a pipe, a batch job's output) a
bar redrawn with carriage returns fills the log with frames, so there it writes one plain
line at most every ``$FASTLOSS_PROGRESS_INTERVAL`` seconds (default 10) and one at the end::

    fastloss: 420/1681 pt (25%) 66.1 pt/s, 19 s left
    fastloss: 1681/1681 pt (100%) 66.3 pt/s, in 25 s
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Any

from tqdm.std import tqdm

INTERVAL = 10.0  # seconds between two lines of a log, unless $FASTLOSS_PROGRESS_INTERVAL


def progress_bar(
    total: int,
    done: int = 0,
    enabled: bool = True,
    desc: str = "fastloss",
    unit: str = "pt",
    file: IO[str] | None = None,
) -> Any:
    """A tqdm bar at ``done`` of ``total`` on ``file`` (stderr), log lines where that is not
    a terminal (disabled: it counts silently; in a process group only rank 0 shows one)."""
    from tqdm.auto import tqdm as auto

    from fastloss.engine.sharding import world

    stream = sys.stderr if file is None else file
    options: dict[str, Any] = dict(
        total=total,
        initial=done,
        unit=unit,
        disable=not enabled or world()[0] != 0,
        smoothing=0.1,
        desc=desc,
        file=stream,
    )
    notebook = any(c.__module__ == "tqdm.notebook" for c in auto.__mro__)  # draws a widget
    if _is_terminal(stream) or notebook:
        return auto(**options, dynamic_ncols=True)
    return LogLines(**options)


class LogLines(tqdm):
    """tqdm for a stream that is not a terminal: one line per refresh, at most every
    `interval` seconds, and one when it closes; no carriage returns. The callers' interface
    (update, set_postfix, close, n, total, ...) is tqdm's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        every = interval()
        super().__init__(
            *args,
            **kwargs,
            mininterval=every,
            maxinterval=max(every, 10.0),  # tqdm's monitor thread; its refresh comes here too
            leave=False,  # `close` writes the last line itself, without tqdm's newline
            bar_format="{desc}: {n}/{total} {unit} ({percentage:.0f}%){log_speed}{postfix}",
        )

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        d["log_speed"] = _speed(d, final=getattr(self, "_closing", False))
        d["ncols"] = None  # never cut to $COLUMNS: a log has no width
        return d

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # msg is tqdm's clearing of the line or its note on hidden rows: nothing for a log
        if msg is not None:
            return False
        if not hasattr(self, "start_t"):
            return False  # tqdm's first draw, at 0: a log starts with the first interval
        now = self._time()
        if now - getattr(self, "_logged_at", self.start_t) < self.mininterval:
            return False  # set_postfix and tqdm's monitor refresh at once; a log waits
        if self.total and self.n >= self.total:
            return False  # the last line is close's
        self._write_line(now)
        return True

    def close(self) -> None:
        if not self.disable:
            self._closing = True  # the last line: the run's mean rate and its time
            self._write_line(self._time())
        super().close()

    def _write_line(self, now: float) -> None:
        self._logged_at = now
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()


def interval() -> float:
    """Seconds between two lines of a log: ``$FASTLOSS_PROGRESS_INTERVAL``, default 10."""
    text = os.environ.get("FASTLOSS_PROGRESS_INTERVAL", "")
    try:
        value = float(text) if text.strip() else INTERVAL
    except ValueError:
        return INTERVAL
    return value if math.isfinite(value) and value >= 0 else INTERVAL


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def _speed(d: dict[str, Any], final: bool) -> str:
    """`` 66.1 pt/s, 19 s left`` (or ``, in 25 s`` at the end) from tqdm's format_dict."""
    elapsed, n, unit = d["elapsed"], d["n"], d["unit"]
    done = n - d["initial"]
    rate = None if final else d["rate"]  # tqdm's smoothed rate; the mean at the end
    if not rate and elapsed > 0:
        rate = done / elapsed
    if not rate:
        return f", in {_seconds(elapsed)}" if final else ""
    speed = f"{_number(rate)} {unit}/s" if rate >= 1 else f"{_number(1 / rate)} s/{unit}"
    if final:
        return f" {speed}, in {_seconds(elapsed)}"
    left = f", {_seconds((d['total'] - n) / rate)} left" if d["total"] else ""
    return f" {speed}{left}"


def _number(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def _seconds(s: float) -> str:
    if s < 9.95:
        return f"{s:.1f} s"
    whole = round(s)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
