"""The HDF5 file of an ensemble's evaluation (`fastloss.ensembles.evaluate_ensemble`).

File layout (M members, N test samples, C classes, B reliability bins)::

    /members/<metric>        float64 [M]: each member's acc, nll, ece, brier
    /cumulative/<metric>     float64 [M]: the average of the first m + 1 members' predictions
    /reliability/edges       float64 [B + 1] confidence bin edges
    /reliability/count       float64 [B] samples per bin
    /reliability/confidence  float64 [B] mean confidence (NaN where empty)
    /reliability/accuracy    float64 [B] accuracy (NaN where empty)
    /probs                   float64 [N, C] the ensemble's (BMA) probabilities
    /labels                  int64 [N]
    attributes of /          format, fastloss_version, and JSON strings ensemble (its
                             acc, nll, ece, brier), settings, model

Accuracies are fractions; the NLL is a mean per sample. The file is written whole into a
temporary file and renamed into place, so it either holds a complete result or does not
exist; an existing file is kept unless ``overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from fastloss.errors import FileFormatError, NotFoundError
from fastloss.io.hdf5 import get_json, open_h5, put_json
from fastloss.io.settings import jsonable
from fastloss.io.surface import atomic_h5_create
from fastloss.version import __version__

FORMAT = "fastloss-ensemble-eval"
METRICS = ("acc", "nll", "ece", "brier")
BINS = ("edges", "count", "confidence", "accuracy")


def save_ensemble_file(
    path: str | os.PathLike,
    members: Sequence[Mapping[str, float]],
    cumulative: Sequence[Mapping[str, float]],
    reliability: Mapping[str, Any],
    probs: np.ndarray,
    labels: np.ndarray,
    *,
    settings: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write an ensemble's scores (see the module notes); returns the path."""
    path = os.fspath(path)

    def fill(f: h5py.File) -> None:
        f.attrs["format"] = FORMAT
        f.attrs["fastloss_version"] = __version__
        put_json(f, "ensemble", jsonable(dict(cumulative[-1])))
        put_json(f, "settings", jsonable(dict(settings or {})))
        put_json(f, "model", jsonable(dict(model or {})))
        for group, rows in (("members", members), ("cumulative", cumulative)):
            g = f.create_group(group)
            for metric in METRICS:
                g.create_dataset(metric, data=np.array([r[metric] for r in rows], np.float64))
        g = f.create_group("reliability")
        for key in BINS:
            g.create_dataset(key, data=np.asarray(reliability[key], np.float64))
        f.create_dataset("probs", data=np.asarray(probs, np.float64))
        f.create_dataset("labels", data=np.asarray(labels, np.int64))

    atomic_h5_create(path, fill, overwrite)
    return path


def load_ensemble_file(path: str | os.PathLike) -> dict[str, Any]:
    """``{"ensemble", "members", "cumulative", "reliability", "probs", "labels",
    "settings", "model"}`` from a file `save_ensemble_file` wrote."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such ensemble file")
    with open_h5(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise FileFormatError(f"{path}: not a fastloss ensemble file (format {FORMAT!r})")
        return {
            "ensemble": get_json(f, "ensemble", {}),
            "settings": get_json(f, "settings", {}),
            "model": get_json(f, "model", {}),
            "members": {m: f["members"][m][()] for m in METRICS},
            "cumulative": {m: f["cumulative"][m][()] for m in METRICS},
            "reliability": {k: f["reliability"][k][()] for k in BINS},
            "probs": f["probs"][()],
            "labels": f["labels"][()],
        }
