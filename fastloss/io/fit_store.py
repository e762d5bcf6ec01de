"""The output folder of a fit (a curve's bends, an MPO plane), and resuming from it.

    out/<result>                 the latest result (``curve.pt``, ``plane.pt``), replaced at
                                 every save
    out/steps/step-0000000.pt    snapshots: step 0, every ``save_every`` steps, the last step
    out/state.pt                 trained tensors, optimizer state, step and history

Every file is written under a temporary name and renamed into place, and ``state.pt`` is
written last at each save, so an interruption leaves the previous consistent state: the
rerun starts from ``state.pt`` and rewrites whatever came after it identically. A folder
holding a fit made with other settings, or a result without its state, is never written to
unless the caller asks to overwrite it. The store knows nothing of what it stores: `save`
takes a function that writes the result file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fastloss.errors import ArgumentError, FileFormatError, OutputExistsError
from fastloss.io.atomic import atomic_output, write_errors
from fastloss.io.checkpoints import read_torch, write_torch
from fastloss.io.settings import MISSING, first_difference

STATE_FORMAT = "fastloss-fit-state/1"
_SNAPSHOT = re.compile(r"^step-\d{7}\.pt$")


class FitSettingsError(ArgumentError):
    """The folder holds a fit made with other settings."""


class FitStore:
    """Reads and writes one fit's output folder (see the module docstring)."""

    def __init__(self, out: str | Path, result: str = "curve.pt"):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ArgumentError(f"{self.out} is a file; the fit's output must be a folder")
        self.result_path = self.out / result
        self.state_path = self.out / "state.pt"
        self.steps = self.out / "steps"

    def snapshot_path(self, step: int) -> Path:
        return self.steps / f"step-{step:07d}.pt"

    def snapshots(self) -> list[Path]:
        """The step snapshots, oldest first."""
        if not self.steps.is_dir():
            return []
        return sorted(p for p in self.steps.iterdir() if _SNAPSHOT.match(p.name))

    def load_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        state = read_torch(
            self.state_path, "fit state", "pass overwrite=True to start the fit afresh"
        )
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise FileFormatError(
                f"{self.state_path}: not a fastloss fit state ({STATE_FORMAT}); pass "
                "overwrite=True to start afresh, or choose another folder"
            )
        state["settings"] = json.loads(state["settings"])
        state["history"] = json.loads(state["history"])
        return state

    def start(
        self, settings: Mapping[str, Any], resume: bool, overwrite: bool
    ) -> dict[str, Any] | None:
        """The state to continue from (None: start afresh), after checking that the folder
        holds this fit. With ``overwrite`` an earlier fit's snapshots are removed, since
        they would otherwise mix with this fit's."""
        if overwrite:
            for path in self.snapshots():
                path.unlink()
            return None
        state = self.load_state()
        if state is None:
            if self.result_path.exists():
                raise OutputExistsError(
                    f"{self.result_path} exists but {self.state_path.name} does not, so the fit "
                    "cannot be resumed; pass overwrite=True to replace it"
                )
            return None
        if not resume:
            raise OutputExistsError(
                f"{self.out} holds a fit; pass resume=True to continue it or overwrite=True "
                "to start afresh"
            )
        diff = first_difference(state["settings"], dict(settings))
        if diff is not None:
            stored = None if diff.stored is MISSING else diff.stored
            given = None if diff.given is MISSING else diff.given
            raise FitSettingsError(
                f"{self.out} holds a fit made with {diff.path}={stored!r}, not {given!r}; "
                "pass overwrite=True to replace it, or choose another output folder"
            )
        return state

    def save(
        self, write_result: Callable[[Path], object], state: Mapping[str, Any], snapshot: bool
    ) -> None:
        """Write the snapshot (if asked), then the latest result, then the state.
        ``write_result(path)`` writes the result file, replacing ``path`` atomically."""
        with write_errors(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
            if snapshot:
                self.steps.mkdir(exist_ok=True)
        if snapshot:
            write_result(self.snapshot_path(state["step"]))
        write_result(self.result_path)
        record = dict(state)
        record["format"] = STATE_FORMAT
        record["settings"] = json.dumps(state["settings"])
        record["history"] = json.dumps(state["history"])
        with atomic_output(self.state_path, overwrite=True) as tmp:
            write_torch(record, tmp)
