"""What `fastloss.curves.evaluate_curve` returns: profiles along t, their summaries, and
their HDF5 file.

File layout (every array ``float64 [T]``)::

    /t                                  the values of t, linspace(0, 1, T)
    /speed                              ‖φ'(t)‖ of the curve (the segment's is segment_length)
    /curve/<split>_<metric>             metric: loss, nll, acc, err (acc and err in percent)
    /segment/<split>_<metric>           the straight segment w1 + t·(w2 − w1), same t
    /ensemble/curve/<split>_<metric>    the ensemble of w1 and φ(t): acc, err, nll
    /ensemble/segment/<split>_<metric>  the ensemble of w1 and the segment's point
    attributes of each profile          min, max, mean, integral, start (t = 0), end (t = 1)
    attributes of /                     format, format_version, fastloss_version,
                                        torch_version, segment_length, and JSON strings
                                        settings, curve, model, summary, attrs

The file is written whole into a temporary file and renamed into place, so it either holds
a complete result or does not exist.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from fastloss.errors import FileFormatError, MetricError, NotFoundError
from fastloss.io.settings import jsonable
from fastloss.io.surface import atomic_h5_create

FORMAT = "fastloss-curve-eval"
PATHS = ("curve", "segment")
SUMMARY_KEYS = ("min", "max", "mean", "integral", "start", "end")
_JSON_ATTRS = ("settings", "curve", "model")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(0.5 * np.sum((y[1:] + y[:-1]) * np.diff(x)))


def arc_length_mean(values: np.ndarray, speed: np.ndarray, t: np.ndarray) -> float:
    """``∫ f(φ(t)) ‖φ'(t)‖ dt / ∫ ‖φ'(t)‖ dt`` by the trapezoid rule on the given points: the
    average of f per unit length along the path (a constant gives itself). With zero length
    (w1 = w2) it is the plain mean. At a polygonal chain's corner ``speed`` is that of the
    next piece, as `PolyChain.velocity` gives it."""
    values, speed, t = (np.asarray(a, dtype=np.float64) for a in (values, speed, t))
    length = _trapezoid(speed, t)
    if not length > 0:
        return float(np.mean(values))
    return _trapezoid(values * speed, t) / length


@dataclass
class CurveResult:
    """Profiles along a curve and along the segment between its ends.

    ``values["curve/test_err"]`` etc. are ``[T]`` arrays at ``t`` (see the module doc for the
    names); ``speed`` is ``‖φ'(t)‖``, ``segment_length`` ``‖w2 − w1‖``; ``attrs`` holds the
    settings, the curve, the model, versions and timings."""

    t: np.ndarray
    values: dict[str, np.ndarray]
    speed: np.ndarray
    segment_length: float
    attrs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise MetricError(f"no profile {name!r}; this result has {sorted(self.values)}")
        return self.values[name]

    @property
    def splits(self) -> list[str]:
        return [s for s in ("train", "test") if f"curve/{s}_loss" in self.values]

    @property
    def has_ensembles(self) -> bool:
        """Whether the ensembles of w1 with each point are there (an imported curve.npz has
        none)."""
        return any(name.startswith("ensemble/curve/") for name in self.values)

    @property
    def ensemble_split(self) -> str:
        return next(s for s in ("test", "train") if f"ensemble/curve/{s}_acc" in self.values)

    def summary(self, name: str) -> dict[str, float]:
        """min, max, mean over t, the arc-length ``integral`` (see `arc_length_mean`), and
        the values at the ``start`` (t = 0, w1) and ``end`` (t = 1, w2)."""
        v = self[name]
        on_segment = name.startswith(("segment/", "ensemble/segment/"))
        speed = np.full_like(self.t, self.segment_length) if on_segment else self.speed
        return {
            "min": float(np.min(v)),
            "max": float(np.max(v)),
            "mean": float(np.mean(v)),
            "integral": arc_length_mean(v, speed, self.t),
            "start": float(v[0]),
            "end": float(v[-1]),
        }

    @property
    def summaries(self) -> dict[str, dict[str, float]]:
        return {name: self.summary(name) for name in self.values}

    @property
    def classification(self) -> bool:
        """True when the profiles include errors and ensembles (a classification loss)."""
        return any(name.endswith("_err") for name in self.values)

    def format_summary(self) -> str:
        """The table `fastloss curve eval` prints: max, mean and integral of the train loss
        and the test error (train error without test data) on the curve and the segment, the
        endpoints' error and the ensembles. For regression: the loss on each split."""
        split = "test" if "test" in self.splits else "train"
        second = f"{split}_err" if self.classification else f"{split}_loss"
        metrics = dict.fromkeys([f"{self.splits[0]}_loss", second])
        # An imported curve (curve.npz) has no segment and no ensembles: those lines go.
        rows = [(p, m) for m in metrics for p in PATHS if f"{p}/{m}" in self.values]
        lines = [f"{'':8s} {'':11s} {'max':>9s} {'mean':>9s} {'integral':>9s}"]
        lines[0] += f" {'t=0':>9s} {'t=1':>9s}"
        for path, metric in rows:
            s = self.summary(f"{path}/{metric}")
            numbers = " ".join(f"{s[k]:9.4g}" for k in ("max", "mean", "integral", "start", "end"))
            lines.append(f"{path:8s} {metric:11s} {numbers}")
        if not self.classification:
            return "\n".join(lines)
        err = self.summary(f"curve/{split}_err")
        ends = 0.5 * (err["start"] + err["end"])
        line = (
            f"endpoints' {split} error: w1 {err['start']:.2f}%, w2 {err['end']:.2f}%, mean "
            f"{ends:.2f}%; worst on the curve {err['max']:.2f}% ({err['max'] - ends:+.2f})"
        )
        if f"segment/{split}_err" in self.values:
            seg = self.summary(f"segment/{split}_err")
            line += f", on the segment {seg['max']:.2f}% ({seg['max'] - ends:+.2f})"
        lines.append(line)
        if not self.has_ensembles:
            return "\n".join(lines)
        e = self.ensemble_split
        best = {p: self[f"ensemble/{p}/{e}_acc"] for p in PATHS}
        at = {p: float(self.t[int(np.argmax(v))]) for p, v in best.items()}
        lines.append(
            f"ensemble of w1 with each point ({e} accuracy): w1 alone "
            f"{self[f'curve/{e}_acc'][0]:.2f}%, w1 + w2 {best['curve'][-1]:.2f}%; best on the "
            f"curve {best['curve'].max():.2f}% at t = {at['curve']:.3g}, on the segment "
            f"{best['segment'].max():.2f}% at t = {at['segment']:.3g}"
        )
        return "\n".join(lines)

    # ------------------------------------------------------------------ HDF5

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> str:
        """Write the HDF5 file atomically; an existing file is replaced only with
        ``overwrite=True``. Returns the path."""
        path = os.fspath(path)
        atomic_h5_create(path, self._write, overwrite)
        return path

    def _write(self, f: h5py.File) -> None:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = 1
        f.attrs["segment_length"] = float(self.segment_length)
        f.create_dataset("t", data=np.asarray(self.t, dtype=np.float64))
        f.create_dataset("speed", data=np.asarray(self.speed, dtype=np.float64))
        for name, v in self.values.items():
            dset = f.create_dataset(name, data=np.asarray(v, dtype=np.float64))
            for key, value in self.summary(name).items():
                dset.attrs[key] = value
        rest = {k: v for k, v in self.attrs.items() if k not in _JSON_ATTRS}
        for key in _JSON_ATTRS:
            if key in self.attrs:
                f.attrs[key] = json.dumps(jsonable(self.attrs[key]), sort_keys=True)
        for key in ("fastloss_version", "torch_version"):
            if isinstance(rest.get(key), str):
                f.attrs[key] = rest[key]
        f.attrs["summary"] = json.dumps(self.summaries, sort_keys=True)
        f.attrs["attrs"] = json.dumps(jsonable(rest), sort_keys=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CurveResult:
        """Read a file written by `save`, or dnn-mode-connectivity's curve.npz
        (`fastloss.io.foreign`: the curve's profiles only, ``attrs["imported_from"]`` says
        what was converted)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise NotFoundError(f"no such file: {path}")
        from fastloss.io import foreign  # it builds CurveResults: imported here, not at the top

        if foreign.is_npz(path):
            return foreign.curve_npz_result(path)
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise FileFormatError(f"{path}: not an HDF5 file ({e})") from None
        with f:
            if f.attrs.get("format") != FORMAT:
                raise FileFormatError(f"{path}: not a curve evaluation; {foreign.CURVE_LAYOUTS}")
            values: dict[str, np.ndarray] = {}

            def collect(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and "/" in name:
                    values[name] = np.asarray(obj[()], dtype=np.float64)

            f.visititems(collect)
            attrs = json.loads(f.attrs.get("attrs", "{}"))
            for key in _JSON_ATTRS:
                if key in f.attrs:
                    attrs[key] = json.loads(f.attrs[key])
            return cls(
                t=np.asarray(f["t"][()], dtype=np.float64),
                values=values,
                speed=np.asarray(f["speed"][()], dtype=np.float64),
                segment_length=float(f.attrs["segment_length"]),
                attrs=attrs,
            )
