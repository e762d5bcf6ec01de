"""The three prediction schemes against the per-sample loop they replace, and SGVLB
training."""

import numpy as np
import pytest
import torch

from fastloss.ensembles import serial_ensemble
from fastloss.errors import ArgumentError
from fastloss.models import build_model
from fastloss.variational import (
    elbo,
    kl,
    mean_state,
    plain_model,
    predict_modes,
    sample_states,
    train_vnet,
    variational,
)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + 2 * (x[:, 3] > 0).long()  # four classes
    return x, y


def _noisy(name="mlp", kind="weight"):
    torch.manual_seed(0)
    net = variational(build_model(name, (12,), 4, widths=(16, 16)), kind, log_alpha=-1.0)
    with torch.no_grad():
        net(torch.randn(8, 12))  # BN layers get running statistics
    return net


@pytest.mark.parametrize("kind", ["dropout", "weight", "variance"])
def test_modes_equal_the_per_sample_loop(kind):
    net, test = _noisy(kind=kind), _data(50, 1)
    modes = predict_modes(net, test, samples=6, seed=3)
    loop = serial_ensemble(plain_model(net), sample_states(net, 6, seed=3), test)
    np.testing.assert_allclose(modes.samples.member_probs, loop.member_probs, atol=2e-6)
    assert modes.ensemble == pytest.approx(loop.ensemble, abs=1e-6)
    assert modes.stochastic["acc"] == pytest.approx(np.mean([m["acc"] for m in loop.members]))
    plain = plain_model(net).eval()
    plain.load_state_dict(mean_state(net))
    probs = torch.softmax(plain(test[0]).double(), -1)
    acc = float((probs.argmax(1) == test[1]).double().mean())
    assert modes.deterministic["acc"] == pytest.approx(acc)
    assert len(modes.samples.cumulative) == 6  # the ensemble after 1 ... K samples


def test_batch_norm_uses_the_statistics_of_training_or_recomputes_them():
    net, test, train = _noisy("mlp-bn"), _data(40, 1), _data(64, 2)
    members = [mean_state(net), *sample_states(net, 3, seed=1)]
    # bn="fixed" (the default): every network with the running statistics of training
    modes = predict_modes(net, test, samples=3, seed=1)
    plain = plain_model(net).eval()
    fixed = []
    for state in members:
        plain.load_state_dict(state)  # the state dicts carry the trained BN buffers
        fixed.append(torch.softmax(plain(test[0]).double(), -1).detach().numpy())
    np.testing.assert_allclose(modes.samples.member_probs, np.stack(fixed[1:]), atol=2e-6)
    # bn="recompute": each network's own statistics over the train data, as update_bn
    with pytest.raises(ArgumentError, match="BatchNorm"):
        predict_modes(net, test, samples=3, bn="recompute")
    modes = predict_modes(net, test, samples=3, train=train, bn="recompute", seed=1)
    loop = serial_ensemble(plain_model(net), members, test, train)  # update_bn per member
    np.testing.assert_allclose(modes.samples.member_probs, loop.member_probs[1:], atol=2e-5)
    assert modes.deterministic == pytest.approx(loop.members[0], abs=1e-5)
    assert not np.allclose(loop.member_probs[1:], np.stack(fixed[1:]), atol=1e-3)


def test_refusals():
    with pytest.raises(ArgumentError, match="K >= 2"):
        predict_modes(_noisy(), _data(10, 0), samples=1)
    with pytest.raises(ArgumentError, match="no variational layers"):
        predict_modes(build_model("mlp", (12,), 4), _data(10, 0))
    with pytest.raises(ArgumentError, match="no variational layers"):
        train_vnet(build_model("mlp", (12,), 4), _data(10, 0))


def test_sgvlb_training_learns_and_the_kl_term_acts():
    train, test = _data(256, 0), _data(256, 1)
    runs = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        net = variational(build_model("mlp", (12,), 4, widths=(32,)), "weight")
        history = train_vnet(net, train, test, epochs=15, lr=1e-2, batch_size=32, kl_weight=weight)
        runs[weight] = (net, history)
    net, history = runs[1.0]
    assert history["epochs"][-1]["train_loss"] < 0.7 * history["epochs"][0]["train_loss"]
    assert history["test_acc"] > 70  # four classes: chance is 25 %
    with torch.no_grad():  # the prior pulls α up
        assert float(kl(runs[1.0][0])) < 0.9 * float(kl(runs[0.0][0]))
    terms = elbo(net, train)
    assert terms["elbo"] == pytest.approx(terms["expected_log_likelihood"] - terms["kl"])
    assert history["elbo"]["kl"] == pytest.approx(float(kl(net).detach()))
