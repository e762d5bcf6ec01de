"""Binary pictures for multi-point optimization: which cells of the plane should have low loss.

A `Pattern` is a boolean ``[H, W]`` array, row 0 at the top as in the picture: True marks a
*good* cell (low loss wanted, the paper's black pixels), False a *bad* one (high loss). It
comes from an image (`load_pattern`), a random mask (`random_pattern`) or a built-in drawing
(`builtin_pattern`); `resolve_pattern` reads the command line's spelling of any of them.
`Pattern.cells` says which cells training uses: like the reference code, a cell whose 3×3
neighbourhood is all one class is left out, since the model interpolates it anyway
(Skorokhodov & Burtsev 2019, appendix A).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastloss.errors import ArgumentError, FileFormatError, NotFoundError

GOOD, BAD, IGNORED = 1, -1, 0


class PatternError(ArgumentError):
    """A pattern MPO cannot fit: one class only, or a size or fill probability out of range."""


@dataclass(frozen=True)
class Pattern:
    """``good [H, W]`` (bool, row 0 at the top) and a name for files and titles."""

    good: np.ndarray
    name: str = "pattern"

    def __post_init__(self) -> None:
        good = np.asarray(self.good)
        if good.ndim != 2 or min(good.shape) < 2:
            raise PatternError(f"a pattern is a 2D array of at least 2×2, got {good.shape}")
        good = good.astype(bool)
        if good.all() or not good.any():
            which = "good" if good.all() else "bad"
            raise PatternError(
                f"pattern {self.name!r} has only {which} cells; MPO needs both good (low "
                "loss) and bad (high loss) cells: pick another picture, threshold, p or seed"
            )
        object.__setattr__(self, "good", good)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.good.shape  # type: ignore[return-value]

    def cells(self, ignore_uniform: bool = True) -> np.ndarray:
        """int8 ``[H, W]``: ``GOOD`` (1), ``BAD`` (−1), or ``IGNORED`` (0) for cells whose
        3×3 neighbourhood (cut at the border) is all one class, with ``ignore_uniform``."""
        out = np.where(self.good, GOOD, BAD).astype(np.int8)
        if ignore_uniform:
            padded = np.pad(self.good, 1, mode="edge")  # the same verdicts as a cut window
            H, W = self.shape
            windows = [padded[i : i + H, j : j + W] for i in range(3) for j in range(3)]
            uniform = np.logical_and.reduce(windows) | ~np.logical_or.reduce(windows)
            out[uniform] = IGNORED
        return out

    def positions(self) -> np.ndarray:
        """float64 ``[H, W, 2]``: each cell's plane coordinates ``(α, β)``, centred on the
        picture, α growing to the right and β upwards (row 0 is the top, β = (H − 1)/2)."""
        H, W = self.shape
        alpha = np.arange(W, dtype=np.float64) - (W - 1) / 2
        beta = (H - 1) / 2 - np.arange(H, dtype=np.float64)
        return np.stack(np.broadcast_arrays(alpha[None, :], beta[:, None]), axis=-1)


def parse_size(size: int | tuple[int, int] | str) -> tuple[int, int]:
    """``(w, h)`` from ``50``, ``(50, 40)``, ``"50"`` or ``"50x40"``."""
    try:
        if isinstance(size, str):
            parts = size.lower().split("x")
            w, h = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
        elif isinstance(size, int):
            w, h = size, size
        else:
            w, h = (int(s) for s in size)
    except (TypeError, ValueError):
        w, h = 0, 0
    if w < 2 or h < 2 or len(str(size).lower().split("x")) > 2:
        raise PatternError(f"a pattern size is W or WxH with both at least 2, got {size!r}")
    return w, h


def load_pattern(path: str | os.PathLike, size=(50, 50), invert: bool = False) -> Pattern:
    """A picture file (PNG, JPEG, anything Pillow reads) as a ``size`` = ``(w, h)`` pattern.

    A picture with a transparency that varies marks its opaque pixels good (icons drawn on a
    transparent background); any other marks its dark pixels good (luminance below 0.5, ink
    on paper). The picture is resized to w×h (area-averaged when shrinking) and thresholded
    at 0.5; ``invert`` swaps good and bad."""
    from PIL import Image, UnidentifiedImageError

    w, h = parse_size(size)
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no picture at {path}; give an image file or a built-in pattern")
    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            alpha = image.convert("RGBA").getchannel("A") if has_alpha else None
            luminance = image.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FileFormatError(f"{path}: not a readable picture ({e})") from e
    if alpha is not None and alpha.getextrema()[0] != alpha.getextrema()[1]:
        channel, ink_is_high = alpha, True
    else:
        channel, ink_is_high = luminance, False
    shrinking = w <= channel.width and h <= channel.height
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    values = np.asarray(channel.convert("F").resize((w, h), resample), dtype=np.float64) / 255
    good = values >= 0.5 if ink_is_high else values < 0.5
    return Pattern(~good if invert else good, path.stem)


def random_pattern(size=(30, 30), p: float = 0.5, seed: int = 0) -> Pattern:
    """Each cell good with probability ``p`` (the paper's random masks, §4.2), from a
    generator seeded with ``seed``."""
    w, h = parse_size(size)
    if not 0 < p < 1:
        raise PatternError(f"the fill probability p must be in (0, 1), got {p}")
    good = np.random.default_rng(seed).random((h, w)) < p
    return Pattern(good, f"random-p{p:g}-s{seed}")


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres in [−1, 1]² (u to the right, v upwards), ``[h, w]`` each."""
    u = (np.arange(w) + 0.5) / w * 2 - 1
    v = 1 - (np.arange(h) + 0.5) / h * 2
    return np.meshgrid(u, v)


def _smiley(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    eyes = (np.hypot(np.abs(u) - 0.35, v - 0.3) < 0.15) & (r < 0.85)
    mouth = (np.abs(np.hypot(u, v + 0.05) - 0.5) < 0.1) & (v < -0.15)
    return (r < 0.85) & ~eyes & ~mouth


def _letter_f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    stem = (np.abs(u + 0.35) < 0.17) & (np.abs(v) < 0.8)
    top = (np.abs(v - 0.63) < 0.17) & (u > -0.52) & (u < 0.6)
    middle = (np.abs(v - 0.05) < 0.15) & (u > -0.52) & (u < 0.35)
    return stem | top | middle


BUILTIN_PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "smiley": _smiley,
    "letter": _letter_f,  # an F: no symmetry, so a flipped or turned result shows
    "cross": lambda u, v: (np.abs(u) < 0.25) | (np.abs(v) < 0.25),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.6) < 0.22,
    "checkerboard": lambda u, v: (np.floor((u + 1) * 2) + np.floor((v + 1) * 2)) % 2 == 0,
}


def builtin_pattern(name: str, size=(50, 50)) -> Pattern:
    """A built-in drawing at ``size`` = ``(w, h)``: one of `BUILTIN_PATTERNS` (a smiley, the
    letter F, a cross, a ring, a 4×4 checkerboard)."""
    if name not in BUILTIN_PATTERNS:
        raise PatternError(
            f"unknown built-in pattern {name!r}; the built-ins are {', '.join(BUILTIN_PATTERNS)}"
        )
    w, h = parse_size(size)
    return Pattern(BUILTIN_PATTERNS[name](*_grid(w, h)), name)


def resolve_pattern(spec: str, size=None, seed: int = 0, invert: bool = False) -> Pattern:
    """The command line's pattern: a built-in name, ``random:P`` (fill probability P, with
    ``seed``; 30×30 unless ``size``), or a picture file (50×50 unless ``size``)."""
    if spec in BUILTIN_PATTERNS:
        return builtin_pattern(spec, size or (50, 50))
    if spec.startswith("random:"):
        try:
            p = float(spec[len("random:") :])
        except ValueError:
            p = math.nan
        if not 0 < p < 1:
            raise PatternError(f"random:P needs a fill probability P in (0, 1), got {spec!r}")
        return random_pattern(size or (30, 30), p, seed)
    if not Path(spec).exists():
        raise NotFoundError(
            f"{spec!r} is neither a built-in pattern ({', '.join(BUILTIN_PATTERNS)}), "
            "random:P, nor a picture file"
        )
    return load_pattern(spec, size or (50, 50), invert)
