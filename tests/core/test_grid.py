"""`GridPoints`: a grid's coordinates made a chunk at a time equal the whole grid's rows, and
hash to the same digest (so files made before it resume)."""

import pytest
import torch

from fastloss.core import Grid, GridPoints, affine_coords
from fastloss.errors import ArgumentError
from fastloss.io.hashing import ROWS_PER_BLOCK, tensor_digest


@pytest.mark.parametrize(
    "grid", [Grid(x=(-1.0, 2.0, 7), y=(-0.5, 1.5, 5)), Grid(x=(-1.0, 2.0, 9)), Grid(x=(0, 1, 1))]
)
def test_grid_points_are_the_rows_of_the_whole_grid(grid):
    whole = affine_coords(grid.coords())
    points = GridPoints(grid)
    assert len(points) == whole.shape[0] and points.shape == tuple(whole.shape)
    picked = torch.tensor([len(points) - 1, 0, len(points) // 2])
    assert torch.equal(points[picked], whole[picked])
    assert torch.equal(points[1:4], whole[1:4])
    assert tensor_digest([("coords", points)]) == tensor_digest([("coords", whole)])


def test_a_grid_larger_than_a_hash_block_hashes_as_a_whole():
    grid = Grid(x=(-1.0, 1.0, ROWS_PER_BLOCK // 100 + 7), y=(0.0, 1.0, 101))
    whole = affine_coords(grid.coords())
    assert len(whole) > ROWS_PER_BLOCK
    assert tensor_digest([("coords", GridPoints(grid))]) == tensor_digest([("coords", whole)])


@pytest.mark.parametrize("axis", [(-1, 1, 0), (-1, 1, -5), (float("nan"), 1, 5), (0, 1, 2.5)])
def test_a_bad_axis_is_refused(axis):
    with pytest.raises(ArgumentError, match="axis"):
        Grid(x=axis)
