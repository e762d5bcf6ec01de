"""The MPO plane and step: Gram–Schmidt, the shifted scales, and the batched step's gradient
against the plain per-cell loop (`serial_step_grads`) and finite differences."""

import copy

import pytest
import torch
from torch import nn

from fastloss.core import batch
from fastloss.errors import ArgumentError
from fastloss.mpo import init_plane, mpo_objective, mpo_step
from fastloss.mpo.plane import SCALE_SHIFT, norm_scales
from fastloss.mpo.serial import serial_step_grads
from fastloss.mpo.step import cell_losses
from fastloss.ops.testing import devices


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def conv_bn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    )


def dot(a, b):
    return sum(float((a[n].double() * b[n].double()).sum()) for n in a)


def test_right_is_orthogonal_and_as_long_as_up():
    plane = init_plane(conv_bn(), seed=3)
    right = plane.right()
    assert abs(dot(right, plane.up)) < 1e-5 * dot(plane.up, plane.up)
    assert dot(right, right) == pytest.approx(dot(plane.up, plane.up), rel=1e-5)
    basis = plane.basis()
    assert list(basis) == list(plane.origin) and basis["0.weight"].shape == (3, 3, 1, 3, 3)
    assert torch.equal(basis["0.weight"][2], plane.up["0.weight"])


def test_init_xavier_seeded_and_scales_shifted():
    torch.manual_seed(0)
    model = conv_bn()
    state = torch.random.get_rng_state()
    a, b = init_plane(model, seed=1), init_plane(model, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator untouched
    assert all(torch.equal(a.origin[n], b.origin[n]) for n in a.origin)
    assert not torch.equal(a.origin["4.weight"], a.up["4.weight"])
    assert norm_scales(conv_bn()) == ["1.weight"] and a.shifted == ["1.weight"]
    for vector in (a.origin, a.up, a.phi_right):  # U[-0.5, 0.5], zero mean
        assert vector["1.weight"].abs().max() <= SCALE_SHIFT
    assert torch.equal(a.basis()["1.weight"][0], a.origin["1.weight"] + SCALE_SHIFT)
    bound = (6 / (5 + 6)) ** 0.5  # Xavier-uniform of the 6 -> 5 layer
    w = init_plane(mlp(), seed=0).up["1.weight"]
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert float(a.s) == pytest.approx(0.1)
    with pytest.raises(ArgumentError):
        init_plane(mlp(), init="he")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("make", [mlp, conv_bn], ids=["mlp", "conv_bn"])
def test_batched_step_matches_the_serial_loop(make, device):
    """All cells in one pass give the gradient of the per-cell loop, for every tensor of θ,
    s included (float64, so only the summation order differs)."""
    torch.manual_seed(0)
    model = make().double()
    plane = init_plane(model, seed=2).detached(device, torch.float64).requires_grad_()
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64, device=device)
    if make is mlp:
        x = x[:, :, :2, :3]
    y = torch.randint(0, 3, (8,), device=device)
    positions = torch.tensor(
        [[-1.5, 1.0], [0.5, -2.0], [2.0, 2.0], [-0.5, 0.0], [1.0, -1.0]],
        dtype=torch.float64,
        device=device,
    )
    good = torch.tensor([True, True, False, False, False], device=device)
    batched = batch(model, plane.plane()).to(device).train()
    loss, _ = cell_losses(batched, plane, positions, x, y)
    clamp = float(loss[~good].detach().sort().values[:2].mean())  # bad cells on both sides
    objective = mpo_objective(loss, good, bad_clamp=clamp)
    objective.backward()
    fast = [t.grad.clone() for t in plane.parameters()]
    slow, serial_losses = serial_step_grads(
        copy.deepcopy(model).to(device), plane, positions, good, x, y, bad_clamp=clamp
    )
    torch.testing.assert_close(loss.detach(), serial_losses, rtol=1e-10, atol=1e-12)
    assert (serial_losses[~good] > clamp).any() and (serial_losses[~good] < clamp).any()
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-8, atol=1e-10)
    assert fast[-1].abs() > 0  # s gets a gradient


def test_step_gradient_matches_finite_differences():
    """gradcheck of the whole objective, through Gram–Schmidt and the compiled ops, in
    float64, with respect to s and one layer of each vector."""
    torch.manual_seed(1)
    model = mlp().double()
    plane = init_plane(model, seed=0)
    x, y = torch.randn(6, 2, 3, dtype=torch.float64), torch.randint(0, 3, (6,))
    positions = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5]], dtype=torch.float64)
    good = torch.tensor([True, False, False])
    base = {
        k: {n: t.double() for n, t in getattr(plane, k).items()}
        for k in ("origin", "up", "phi_right")
    }

    def objective(w_o, w_up, phi, s):
        p = type(plane)(
            {**base["origin"], "1.weight": w_o},
            {**base["up"], "1.weight": w_up},
            {**base["phi_right"], "1.weight": phi},
            s,
            [],
        )
        batched = batch(model, p.plane()).train()
        loss, _ = cell_losses(batched, p, positions, x, y)
        return mpo_objective(loss, good, bad_clamp=10.0)

    inputs = tuple(
        t.clone().requires_grad_(True)
        for t in (base["origin"]["1.weight"], base["up"]["1.weight"], base["phi_right"]["1.weight"])
    ) + (torch.tensor(0.3, dtype=torch.float64, requires_grad=True),)
    assert torch.autograd.gradcheck(objective, inputs, eps=1e-6, atol=1e-6)


def test_passes_of_cells_give_the_same_step():
    torch.manual_seed(0)
    model = conv_bn()
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))
    positions = torch.randn(7, 2)
    good = torch.tensor([True, False, True, True, False, False, True])
    results = []
    for cells_per_pass in (None, 3):
        plane = init_plane(model, seed=0).requires_grad_()
        batched = batch(model, plane.plane()).train()
        opt = torch.optim.Adam(plane.parameters(), lr=1e-2)
        stats = mpo_step(batched, plane, opt, positions, good, x, y, 1.0, None, cells_per_pass)
        results.append((stats, [t.grad.clone() for t in plane.parameters()]))
    (one, grads_one), (passes, grads_passes) = results
    assert passes.objective == pytest.approx(one.objective, rel=1e-5)
    torch.testing.assert_close(passes.loss, one.loss)
    for a, b in zip(grads_one, grads_passes, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_mpo_step_updates_clips_and_skips_nonfinite():
    torch.manual_seed(0)
    model = mlp()
    plane = init_plane(model, seed=0).requires_grad_()
    batched = batch(model, plane.plane()).train()
    x, y = torch.randn(16, 2, 3), torch.randint(0, 3, (16,))
    positions = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    good = torch.tensor([True, False])
    opt = torch.optim.Adam(plane.parameters(), lr=1e-2)
    before = [t.detach().clone() for t in plane.parameters()]
    stats = mpo_step(batched, plane, opt, positions, good, x, y, clip=1e-3)
    norm = torch.sqrt(sum(t.grad.square().sum() for t in plane.parameters()))
    assert float(norm) == pytest.approx(1e-3, rel=1e-3)
    assert stats.loss.shape == (2,) and 0 <= float(stats.acc.min()) <= 1
    assert any(not torch.equal(b, t) for b, t in zip(before, plane.parameters(), strict=True))
    after = [t.detach().clone() for t in plane.parameters()]
    stats = mpo_step(batched, plane, opt, positions, good, x * float("nan"), y)
    assert stats.objective != stats.objective  # NaN
    assert all(torch.equal(a, t) for a, t in zip(after, plane.parameters(), strict=True))
