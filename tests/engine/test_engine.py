"""The engine's extension points: losses, reducers and sinks, each checked against the plain
serial loop; the out-of-memory retry; resuming from a sink."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastloss.engine.loop as loop_module
from fastloss.core import Plane, affine_coords
from fastloss.engine import (
    LossMetrics,
    MemorySink,
    evaluate_serial,
    prepare,
    run,
    run_in_memory,
)
from fastloss.errors import ArgumentError, DataError, FastlossError
from fastloss.models import build_model
from fastloss.ops.losses import resolve_loss
from fastloss.surfaces import evaluate, predict


def regression_plane(outputs=1, bn=False):
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        layers = [nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, outputs)]
        if bn:
            layers.insert(1, nn.BatchNorm1d(16))
        nets.append(nn.Sequential(*layers))
    return nets[0], Plane.through(*nets)


def regression_data(n=40, outputs=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randn(n, generator=g) if outputs == 1 else torch.randn(n, outputs, generator=g)
    return x, y


COORDS = affine_coords(
    torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.3, 0.7], [-0.5, 1.2], [1.4, -0.3]])
).double()


@pytest.mark.parametrize("bn", [False, True])
def test_mse_matches_the_serial_loop(bn):
    model, plane = regression_plane(bn=bn)
    data = regression_data()
    surface = evaluate(model, plane, COORDS, train=data, loss="mse", progress=False)
    assert list(surface.values) == ["train_loss"]  # no accuracy for regression
    serial, accuracy = evaluate_serial(model, plane, COORDS, data, loss="mse", batch_size=512)
    assert accuracy is None
    np.testing.assert_allclose(surface.values["train_loss"], serial, rtol=1e-5)


def test_a_user_callable_loss_and_gaussian_nll():
    def huber(outputs, targets):
        return F.huber_loss(outputs[:, 0], targets, reduction="none")

    model, plane = regression_plane()
    data = regression_data()
    surface = evaluate(model, plane, COORDS, train=data, loss=huber, progress=False)
    serial, _ = evaluate_serial(model, plane, COORDS, data, loss=huber)
    np.testing.assert_allclose(surface.values["train_loss"], serial, rtol=1e-5)
    assert "huber" in surface.settings["loss"]

    model2, plane2 = regression_plane(outputs=2)
    surface = evaluate(model2, plane2, COORDS, train=data, loss="gaussian_nll", progress=False)
    serial, _ = evaluate_serial(model2, plane2, COORDS, data, loss="gaussian_nll")
    np.testing.assert_allclose(surface.values["train_loss"], serial, rtol=1e-5)
    # ``mse`` of the predicted mean, by hand at each point
    for k, c in enumerate(COORDS):
        net = plane2.point(c)
        mean = torch.func.functional_call(model2, net, (data[0],))[:, 0]
        expected = float((mean - data[1]).square().mean())
        assert surface.values["train_mse"][k] == pytest.approx(expected, rel=1e-5)


def test_bad_losses_and_metrics_are_refused():
    model, plane = regression_plane()
    data = regression_data()
    with pytest.raises(ArgumentError, match="unknown loss 'l3'"):
        evaluate(model, plane, COORDS, train=data, loss="l3", progress=False)
    with pytest.raises(ArgumentError, match="unknown metrics \\['acc'\\] for loss 'mse'"):
        evaluate(model, plane, COORDS, train=data, loss="mse", metrics=["acc"], progress=False)
    with pytest.raises(ArgumentError, match="one value per sample"):
        evaluate(model, plane, COORDS, train=data, loss=lambda o, t: o.sum(), progress=False)
    x, _ = data
    with pytest.raises(DataError, match="labels run from 0 to 39, but the model has 1 outputs"):
        evaluate(model, plane, COORDS, train=(x, torch.arange(40)), progress=False)


def test_predictions_are_the_model_at_each_point():
    model, plane = regression_plane(bn=True)
    train = regression_data()
    probe = torch.linspace(-2, 2, 21)[:, None].expand(21, 3).contiguous()
    got = predict(model, plane, COORDS, probe, train=train)
    assert got.shape == (len(COORDS), 21, 1)
    for k, c in enumerate(COORDS):
        net = build_like(model, plane, c)
        torch.optim.swa_utils.update_bn([(train[0], train[1])], net)
        net.eval()
        with torch.no_grad():
            np.testing.assert_allclose(got[k], net(probe).double().numpy(), rtol=1e-5, atol=1e-6)


def build_like(model, plane, coords):
    import copy

    net = copy.deepcopy(model)
    net.load_state_dict(plane.point(coords), strict=False)
    return net


def test_out_of_memory_halves_the_chunk_and_gives_the_same_values(monkeypatch):
    torch.manual_seed(0)
    model = build_model("mlp", (3,), 4, widths=(8,))
    plane = Plane.through(model, *(build_model("mlp", (3,), 4, widths=(8,)) for _ in range(2)))
    g = torch.Generator().manual_seed(1)
    data = {"train": (torch.randn(30, 3, generator=g), torch.randint(0, 4, (30,), generator=g))}
    coords = affine_coords(torch.rand(10, 2, generator=g, dtype=torch.float64))
    reducer = LossMetrics(resolve_loss("cross_entropy"))
    expected = run_in_memory(prepare(model, plane, data), coords, reducer)
    real, sizes = loop_module.evaluate_chunk, []

    def tight_memory(ev, c, reducers, eval_batch, rows=None):
        sizes.append(c.shape[0])
        if c.shape[0] > 2:  # what a GPU without room for more than two points would do
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(ev, c, reducers, eval_batch, rows=rows)

    monkeypatch.setattr(loop_module, "evaluate_chunk", tight_memory)
    ev = prepare(model, plane, data)
    sink = MemorySink(len(coords))
    info = run(ev, coords, reducer, sink, progress=False, points_per_chunk=8)
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) <= 2
    assert info.evaluated == 10 and sink.done.all()
    for name, values in expected.items():
        np.testing.assert_array_equal(sink.values[name], values)


def test_a_sink_with_done_points_is_resumed():
    model, plane = regression_plane()
    ev = prepare(model, plane, {"train": regression_data()}, loss="mse")
    sink = MemorySink(len(COORDS))
    sink.done[[0, 2]] = True  # as if an earlier run had finished them
    info = run(ev, COORDS, LossMetrics(resolve_loss("mse")), sink, progress=False)
    assert info.evaluated == 3
    assert np.isnan(sink.values["train_loss"][[0, 2]]).all()
    assert np.isfinite(sink.values["train_loss"][[1, 3, 4]]).all()


def test_every_user_error_is_a_fastloss_error():
    model, plane = regression_plane()
    with pytest.raises(FastlossError):
        evaluate(model, plane, COORDS, progress=False)  # no data
    with pytest.raises(FastlossError):
        evaluate(model, plane, COORDS, train=regression_data(), bn="sometimes", progress=False)
    with pytest.raises(FastlossError):
        predict(model, plane, COORDS[:, :2], torch.zeros(3, 3))  # coords of another J
    with pytest.raises(FastlossError):
        evaluate(model, plane, COORDS, train=(torch.zeros(4, 5), torch.zeros(4)), loss="mse")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns_once(monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(loop_module, "_warned_bf16", False)
    model, plane = regression_plane()
    data = {"train": regression_data()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            prepare(model, plane, data, loss="mse", device="cpu", dtype=torch.bfloat16)
        prepare(model, plane, data, loss="mse", device="cpu")
    said = [w for w in caught if "no native bfloat16" in str(w.message)]
    assert len(said) == (0 if native else 1)
