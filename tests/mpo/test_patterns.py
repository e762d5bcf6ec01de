"""Patterns: pictures, random masks and built-ins; the cells training leaves out; refusals."""

import numpy as np
import pytest
from PIL import Image

from fastloss.errors import FileFormatError, NotFoundError
from fastloss.mpo import (
    BUILTIN_PATTERNS,
    Pattern,
    PatternError,
    builtin_pattern,
    load_pattern,
    random_pattern,
    resolve_pattern,
)
from fastloss.mpo.patterns import BAD, GOOD, IGNORED, parse_size


def test_cells_leave_out_uniform_neighbourhoods():
    good = np.zeros((6, 7), bool)
    good[1:5, 1:4] = True  # a 4×3 block: its middle column's inner cells are surrounded
    cells = Pattern(good).cells()
    assert cells[2, 2] == IGNORED and cells[3, 2] == IGNORED  # good, all-good neighbourhood
    assert cells[1, 1] == GOOD and cells[4, 3] == GOOD  # good on the block's edge
    assert cells[0, 0] == BAD  # touches the block diagonally
    assert (cells[:, 5:] == IGNORED).all()  # bad, no good cell within one step (border cut)
    assert (Pattern(good).cells(ignore_uniform=False) == np.where(good, GOOD, BAD)).all()


def test_cells_match_the_reference_rule_on_random_masks():
    """A cell is left out when its 3×3 window, cut at the border, holds one class."""
    for seed in range(5):
        p = random_pattern((9, 7), 0.3, seed)
        cells = p.cells()
        H, W = p.shape
        for i in range(H):
            for j in range(W):
                window = p.good[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
                uniform = window.all() or not window.any()
                assert (cells[i, j] == IGNORED) == uniform


def test_positions_are_centred_with_beta_up():
    pos = Pattern(np.eye(4, 5, dtype=bool)).positions()
    assert pos.shape == (4, 5, 2)
    assert tuple(pos[0, 0]) == (-2.0, 1.5)  # top left: left of centre, above it
    assert tuple(pos[3, 4]) == (2.0, -1.5)
    assert pos[..., 0].mean() == 0 and pos[..., 1].mean() == 0


def test_picture_luminance_and_alpha(tmp_path):
    ink = np.full((40, 60), 255, np.uint8)
    ink[10:20, 10:30] = 0  # a dark block on white
    ink[0:4, 50:60] = 0  # too small to cover half of a cell
    Image.fromarray(ink).save(tmp_path / "ink.png")
    p = load_pattern(tmp_path / "ink.png", (6, 4))  # each cell averages 10×10 pixels
    expected = np.zeros((4, 6), bool)
    expected[1, 1:3] = True
    assert p.shape == (4, 6) and p.name == "ink"
    assert (p.good == expected).all()
    assert (load_pattern(tmp_path / "ink.png", (6, 4), invert=True).good == ~p.good).all()
    icon = np.zeros((40, 60, 4), np.uint8)  # transparent, with an opaque white block
    icon[20:40, 30:60] = 255
    Image.fromarray(icon, "RGBA").save(tmp_path / "icon.png")
    q = load_pattern(tmp_path / "icon.png", (6, 4))
    assert q.good[3, 5] and not q.good[0, 0]  # opaque is good even though it is white
    Image.fromarray(ink).convert("RGB").save(tmp_path / "ink.jpg", quality=95)
    assert (load_pattern(tmp_path / "ink.jpg", (6, 4)).good == p.good).all()


def test_builtins_and_random_masks():
    for name in BUILTIN_PATTERNS:
        p = builtin_pattern(name, (50, 40))
        assert p.shape == (40, 50) and 0.1 < p.good.mean() < 0.7, name
    letter = builtin_pattern("letter", 20).good
    assert not (letter == letter[:, ::-1]).all() and not (letter == letter[::-1]).all()
    a, b = random_pattern(30, 0.3, seed=1), random_pattern(30, 0.3, seed=1)
    assert (a.good == b.good).all() and abs(a.good.mean() - 0.3) < 0.06
    assert not (random_pattern(30, 0.3, seed=2).good == a.good).all()
    assert resolve_pattern("random:0.7", seed=3).shape == (30, 30)
    assert resolve_pattern("cross").shape == (50, 50)
    assert parse_size("50x40") == (50, 40) and parse_size(8) == (8, 8)


def test_refusals(tmp_path):
    with pytest.raises(PatternError, match="only good cells"):
        Pattern(np.ones((3, 3), bool))
    with pytest.raises(PatternError, match="only bad cells"):
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "white.png")
        load_pattern(tmp_path / "white.png")
    with pytest.raises(PatternError, match=r"\(0, 1\)"):
        random_pattern(10, 1.0)
    with pytest.raises(PatternError, match=r"\(0, 1\)"):
        resolve_pattern("random:abc")
    with pytest.raises(NotFoundError, match="neither a built-in"):
        resolve_pattern("smiles")
    with pytest.raises(NotFoundError):
        load_pattern(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(FileFormatError, match="not a readable picture"):
        load_pattern(tmp_path / "bad.png")
    with pytest.raises(PatternError, match="WxH"):
        parse_size("1x5")
