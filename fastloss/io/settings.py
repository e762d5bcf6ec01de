"""Settings as JSON: normalised once (`jsonable`), compared once (`first_difference`).

Results record the settings they were made with; a rerun resumes them only when its own
settings are equal, and otherwise names the first one that differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastloss.errors import ArgumentTypeError


def jsonable(obj: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples, paths and mappings."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise ArgumentTypeError(
        f"{type(obj).__name__} value {obj!r} is not JSON-serialisable; "
        "metadata must be str, int, float, bool, None, lists or dicts of them"
    )


def canonical_json(obj: Any) -> str:
    """One JSON text per value: sorted keys, no spaces."""
    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"))


def json_roundtrip(obj: Any) -> Any:
    """``obj`` as it reads back from a file (tuples become lists, numpy numbers plain)."""
    return json.loads(canonical_json(obj))


@dataclass(frozen=True)
class Difference:
    """The first setting that differs: its dotted ``path``, and the values on each side
    (`MISSING` where one side lacks it)."""

    path: str
    stored: Any
    given: Any

    def describe(self) -> str:
        """``'data.hash' (file has "a1", this run has "b2")``."""
        if self.stored is MISSING:
            return f"'{self.path}' (not in the file; this run has {canonical_json(self.given)})"
        if self.given is MISSING:
            return f"'{self.path}' (file has {canonical_json(self.stored)}; not in this run)"
        return (
            f"'{self.path or '(settings)'}' (file has {canonical_json(self.stored)}, "
            f"this run has {canonical_json(self.given)})"
        )


MISSING: Any = object()


def first_difference(stored: Any, given: Any, where: str = "") -> Difference | None:
    """The first setting (keys in sorted order, nested dicts by dotted path) whose JSON value
    differs between ``stored`` and ``given``, or None when they are equal."""
    if isinstance(stored, dict) and isinstance(given, dict):
        for key in sorted(set(stored) | set(given)):
            path = f"{where}.{key}" if where else key
            if key not in stored or key not in given:
                return Difference(path, stored.get(key, MISSING), given.get(key, MISSING))
            found = first_difference(stored[key], given[key], path)
            if found:
                return found
        return None
    if canonical_json(stored) != canonical_json(given):
        return Difference(where, stored, given)
    return None
