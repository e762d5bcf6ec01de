"""SWAG: the moments and deviations against numpy, the samples' covariance, the variants,
persistence and refusals."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fastloss.ensembles import SWAG
from fastloss.ensembles.swag import load_swag, save_swag
from fastloss.errors import ArgumentError, DataError, FileFormatError, NotFoundError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _iterates(net, count, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = {n: p.detach().clone() for n, p in net.named_parameters()}
    return [
        {n: b + 0.1 * torch.randn(b.shape, generator=g) for n, b in base.items()}
        for _ in range(count)
    ]


def _flat(state):
    return torch.cat([t.reshape(-1).double() for t in state.values()])


def test_moments_and_deviations_match_numpy():
    net = _net()
    iterates = _iterates(net, 7)
    swag = SWAG(net, max_rank=4)
    for w in iterates:
        swag.collect(w)
    W = np.stack([_flat(w).numpy() for w in iterates])
    np.testing.assert_allclose(_flat(swag.mean_state()).numpy(), W.mean(0), rtol=1e-6)
    np.testing.assert_allclose(swag.variance().numpy(), W.var(0), rtol=1e-6, atol=1e-12)
    # the last K deviations, each from the running mean after its model joined
    expected = [W[i] - W[: i + 1].mean(0) for i in range(3, 7)]
    assert swag.rank == 4 and swag.n == 7
    np.testing.assert_allclose(torch.stack(swag.deviations).numpy(), np.stack(expected), atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "diag", "lowrank"])
def test_sample_covariance_is_the_swag_covariance(mode):
    net = _net()
    swag = SWAG(net, max_rank=5)
    for w in _iterates(net, 6):
        swag.collect(w)
    samples = torch.stack([_flat(s) for s in swag.samples(20_000, scale=0.5, mode=mode, seed=3)])
    D = torch.stack(swag.deviations, 1)
    cov = torch.zeros(D.shape[0], D.shape[0], dtype=torch.float64)
    if mode != "lowrank":
        cov += torch.diag(swag.variance())
    if mode != "diag":
        cov += D @ D.T / (swag.rank - 1)  # K_c − 1, the collected count
    cov *= 0.5
    empirical = torch.cov(samples.T)
    assert torch.allclose(
        samples.mean(0), _flat(swag.mean_state()), atol=4 * math.sqrt(cov.diag().max() / 20_000)
    )
    assert (empirical - cov).abs().max() < 0.06 * cov.diag().max()


def test_subset_samples_only_its_parameters():
    net = _net()
    swag = SWAG(net, max_rank=3, subset=["2.*"])
    for w in _iterates(net, 4):
        swag.collect(w)
    sample = swag.sample(generator=torch.Generator().manual_seed(0))
    mean = swag.mean_state()
    assert torch.equal(sample["0.weight"], mean["0.weight"]) and torch.equal(
        sample["0.bias"], mean["0.bias"]
    )
    assert not torch.equal(sample["2.weight"], mean["2.weight"])
    assert swag.sq_mean.numel() == 4 * 2 + 2
    with pytest.raises(ArgumentError, match="no parameter matches"):
        SWAG(net, subset=["conv*"])


def test_refusals():
    net = _net()
    swag = SWAG(net, max_rank=5)
    with pytest.raises(ArgumentError, match="no collected model"):
        swag.sample(mode="diag")
    swag.collect(net)
    with pytest.raises(ArgumentError, match="at least two collected deviations"):
        swag.sample(mode="lowrank")
    swag.sample(mode="diag")  # one model is enough for the diagonal
    bad = {n: p.detach().clone() for n, p in net.named_parameters()}
    bad["2.bias"][0] = float("nan")
    with pytest.raises(DataError, match="'2.bias'"):
        swag.collect(bad)
    with pytest.raises(ArgumentError, match="differ"):
        swag.collect(nn.Linear(3, 2))


def test_save_and_load_round_trip(tmp_path):
    net = _net()
    swag = SWAG(net, max_rank=3)
    for w in _iterates(net, 5):
        swag.collect(w)
    path = save_swag(swag, tmp_path / "swag.pt", {"model": "x"})
    again, meta = load_swag(path)
    assert meta == {"model": "x"} and again.n == 5 and again.rank == 3
    a = swag.sample(generator=torch.Generator().manual_seed(1))
    b = again.sample(generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="exists"):
        save_swag(swag, path)
    (tmp_path / "junk.pt").write_bytes(b"not a file")
    with pytest.raises(FileFormatError):
        load_swag(tmp_path / "junk.pt")
    with pytest.raises(NotFoundError):
        load_swag(tmp_path / "missing.pt")
