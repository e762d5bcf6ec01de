"""SWA, SWAG collection and FGE on the training loop: schedules, which models are taken, the
average against a manual one, BN statistics of the average."""

import math

import pytest
import torch
from torch import nn

from fastloss.ensembles import SWAG, FGESchedule, SWASchedule, fge, train_swa
from fastloss.errors import ArgumentError
from fastloss.models import build_model
from fastloss.training import train


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    return x, (x.flatten(1).sum(1) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()


def test_fge_schedule_is_garipovs_triangle():
    s = FGESchedule(0.1, 0.001, cycle_steps=4)
    lrs = [0.1 * s(i, 0) for i in range(8)]
    assert lrs == pytest.approx([0.0505, 0.001, 0.0505, 0.1, 0.0505, 0.001, 0.0505, 0.1])
    assert [i for i in range(1, 9) if s.takes_model(i)] == [2, 6]  # where the rate was lowest


def test_swa_schedule_decays_then_holds_and_takes_every_c_epochs():
    s = SWASchedule(lr=0.1, swa_lr=0.01, start=10, every=2, steps_per_epoch=3)
    budget = 30
    assert s(0, 0) == 1.0 and s(budget // 2, 0) == 1.0
    assert s(int(0.7 * budget), 0) == pytest.approx(1 - 0.9 * 0.2 / 0.4)
    assert s(budget, 0) == pytest.approx(0.1) and s(budget + 7, 0) == pytest.approx(0.1)
    taken = [e for e in range(1, 17) if s.takes_model(3 * e)]
    assert taken == [10, 12, 14, 16] and not s.takes_model(31)
    cyclic = SWASchedule(0.1, 0.01, 10, 2, 3, rate="cyclic")
    assert [round(cyclic(budget + i, 0), 3) for i in range(6)] == [0.85, 0.7, 0.55, 0.4, 0.25, 0.1]


def test_train_runs_a_step_schedule_and_calls_back_after_every_step():
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    history = train(
        model,
        _data(),
        epochs=2,
        batch_size=32,
        schedule=lambda step, total: 0.5,
        lr=0.2,
        on_step=lambda step, net: seen.append(step),
    )
    assert seen == list(range(1, 7)) and history["epochs"][-1]["lr"] == pytest.approx(0.1)


def test_swa_average_is_the_mean_of_the_taken_iterates_and_bn_is_updated():
    torch.manual_seed(0)
    model = build_model("mpo-cnn-bn", (1, 6, 6), 4, channels=(3, 4), hidden=8)
    data = _data()
    steps_per_epoch = math.ceil(96 / 32)
    schedule = SWASchedule(0.05, 0.01, 2, 1, steps_per_epoch)
    taken = []

    class Spy(SWAG):
        def collect(self, net):
            taken.append({k: v.detach().clone() for k, v in net.named_parameters()})
            super().collect(net)

    swag = Spy(model, max_rank=3)
    result = train_swa(model, data, data, epochs=5, swa_start=2, batch_size=32, swag=swag)
    assert result.averaged == len(taken) == 4 == swag.n
    assert [e for e in range(1, 6) if schedule.takes_model(e * steps_per_epoch)] == [2, 3, 4, 5]
    for name, p in result.swa.named_parameters():
        manual = torch.stack([t[name] for t in taken]).mean(0)
        assert torch.allclose(p, manual, atol=1e-6), name
        assert torch.allclose(swag.mean_state()[name], manual, atol=1e-6)
    bn = next(m for m in result.swa.modules() if isinstance(m, nn.BatchNorm2d))
    sgd_bn = next(m for m in result.sgd.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(bn.running_mean, sgd_bn.running_mean)  # recomputed for the average
    assert result.scores["swa_acc"] is not None
    with pytest.raises(ArgumentError, match="swa_start"):
        train_swa(model, data, epochs=3, swa_start=3)


def test_fge_takes_one_snapshot_per_cycle_and_scores_the_growing_ensemble():
    torch.manual_seed(0)
    model = build_model("mlp", (36,), 4, widths=(16,))
    x, y = _data()
    data = (x.flatten(1), y)
    train(model, data, epochs=3, batch_size=32)
    result = fge(model, data, data, cycles=3, cycle_epochs=1, batch_size=32)
    assert len(result.snapshots) == 3 and len(result.scores.cumulative) == 3
    assert not torch.equal(
        result.snapshots[0]["net.1.weight"]
        if "net.1.weight" in result.snapshots[0]
        else next(iter(result.snapshots[0].values())),
        next(iter(result.snapshots[1].values())),
    )
    with pytest.raises(ArgumentError, match="at least 2 cycles"):
        fge(model, data, cycles=1)
