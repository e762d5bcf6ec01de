"""Batched ensemble evaluation against the serial loop it replaces (per member: load,
update_bn, predict), and its refusals."""

import numpy as np
import pytest
import torch

from fastloss.core import Subspace
from fastloss.curves import Bezier
from fastloss.ensembles import evaluate_ensemble, members_subspace, serial_ensemble
from fastloss.errors import ArgumentError, DataError
from fastloss.models import build_model


def _data(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 4, (n,), generator=g)


def _members(name, shape, count, **kwargs):
    out = []
    for seed in range(count):
        torch.manual_seed(seed)
        out.append(build_model(name, shape, 4, **kwargs).double())
    return out


@pytest.mark.parametrize(
    "name,shape,kwargs",
    [
        ("mlp", (12,), {"widths": (16,)}),
        ("mpo-cnn-bn", (1, 6, 6), {"channels": (3, 4), "hidden": 8}),
    ],
)
def test_batched_matches_the_serial_loop(name, shape, kwargs):
    members = _members(name, shape, 5, **kwargs)
    train, test = _data(shape, 64, 0), _data(shape, 40, 1)
    batched = evaluate_ensemble(
        members[0], members, test, train, batch_size=32, dtype=torch.float64
    )
    serial = serial_ensemble(members[0], members, test, train, batch_size=32)
    np.testing.assert_allclose(batched.member_probs, serial.member_probs, atol=1e-10)
    for a, b in zip(batched.cumulative, serial.cumulative, strict=True):
        assert a == pytest.approx(b, abs=1e-9)
    assert batched.ensemble == batched.cumulative[-1]
    np.testing.assert_allclose(batched.probs, batched.member_probs.mean(0))


def test_members_given_as_points_of_a_curve():
    members = _members("mlp", (12,), 3, widths=(8,))
    curve = Bezier(*[m.state_dict() for m in (members[0], members[2])])
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    test = _data((12,), 30, 2)
    result = evaluate_ensemble(members[0], (curve, curve.coords(t)), test, dtype=torch.float64)
    points = []
    for c in curve.coords(t):
        net = _members("mlp", (12,), 1, widths=(8,))[0]
        net.load_state_dict(curve.point(c), strict=False)
        points.append(net)
    serial = serial_ensemble(members[0], points, test)
    np.testing.assert_allclose(result.member_probs, serial.member_probs, atol=1e-10)


def test_refusals():
    members = _members("mlp", (12,), 2, widths=(8,))
    test = _data((12,), 10, 0)
    with pytest.raises(ArgumentError, match="at least two members"):
        evaluate_ensemble(members[0], members[:1], test)
    other = build_model("mlp", (12,), 4, widths=(9,))
    with pytest.raises(ArgumentError, match="shape"):
        members_subspace([members[0], other])
    broken = {k: v.clone() for k, v in members[1].state_dict().items()}
    broken["net.1.weight" if "net.1.weight" in broken else next(iter(broken))][0] = float("nan")
    with pytest.raises(DataError, match="member 2"):
        evaluate_ensemble(members[0], [members[0], broken], test)
    bn = _members("mpo-cnn-bn", (1, 6, 6), 2, channels=(3,), hidden=4)
    with pytest.raises(ArgumentError, match="BatchNorm"):
        evaluate_ensemble(bn[0], bn, _data((1, 6, 6), 10, 0))
    assert isinstance(members_subspace(members)[0], Subspace)
