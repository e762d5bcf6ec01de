"""Checkpoints: round trips in both formats, safe loading, and the errors for bad files."""

import json

import pytest
import torch
from torch import nn

from fastloss.io import checkpoints
from fastloss.io.checkpoints import load_checkpoint, load_state_dict, save_checkpoint
from fastloss.models import build_from_checkpoint, build_model

FORMATS = ["pt", "pth", "safetensors"]


@pytest.fixture
def bn_model():
    torch.manual_seed(0)
    model = build_model("mpo-cnn-bn", (1, 8, 8), 10)
    model(torch.randn(16, 1, 8, 8))  # move the BN running statistics off their defaults
    return model


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(tmp_path, bn_model, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path / f"net.{fmt}"
    meta = {"data": "digits", "seed": 3, "test_acc": 97.5}
    assert save_checkpoint(bn_model, path, meta) == path
    state, got_meta = load_checkpoint(path)
    assert got_meta == {**meta, **bn_model.fastloss_spec}
    expected = bn_model.state_dict()
    assert state.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(state[k], v) and state[k].dtype == v.dtype, k
    assert load_state_dict(path).keys() == expected.keys()
    rebuilt = build_from_checkpoint(path)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(rebuilt.eval()(x), bn_model.eval()(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_torch_file_loads_with_weights_only(tmp_path, bn_model):
    path = save_checkpoint(bn_model, tmp_path / "net.pt", {"note": "ü"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(bytes(raw.pop(checkpoints.META_KEY).tolist()).decode())
    assert meta["note"] == "ü" and raw.keys() == bn_model.state_dict().keys()


def test_state_dict_and_plain_files(tmp_path):
    state = {"w": torch.randn(3, 2), "steps": torch.tensor(4)}
    save_checkpoint(state, tmp_path / "a.pt")
    loaded, meta = load_checkpoint(tmp_path / "a.pt")
    assert meta == {} and torch.equal(loaded["w"], state["w"])
    # Files other tools wrote: a bare state_dict, and one nested in a training checkpoint.
    torch.save(state, tmp_path / "plain.pt")
    assert torch.equal(load_state_dict(tmp_path / "plain.pt")["w"], state["w"])
    torch.save({"epoch": 3, "model_state": state}, tmp_path / "nested.pt")
    assert load_state_dict(tmp_path / "nested.pt").keys() == state.keys()
    with pytest.raises(ValueError, match="does not say how to build its model"):
        build_from_checkpoint(tmp_path / "plain.pt")


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_overwrite_refused(tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    path = tmp_path / f"net.{fmt}"
    save_checkpoint({"w": torch.zeros(2)}, path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint({"w": torch.ones(2)}, path)
    assert torch.equal(load_state_dict(path)["w"], torch.zeros(2))
    save_checkpoint({"w": torch.ones(2)}, path, overwrite=True)
    assert torch.equal(load_state_dict(path)["w"], torch.ones(2))
    assert len(list(tmp_path.iterdir())) == 1


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # save_checkpoint gives torch a file
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "net.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_nan_refused(tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
        from safetensors.torch import save_file
    state = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.tensor([0.0, float("nan")])}
    with pytest.raises(ValueError, match="'fc.bias' has 1 NaN/inf"):
        save_checkpoint(state, tmp_path / f"x.{fmt}")
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / f"bad.{fmt}"
    torch.save(state, path) if fmt == "pt" else save_file(state, str(path))
    with pytest.raises(ValueError, match="parameter 'fc.bias' has 1 NaN/inf value"):
        load_checkpoint(path)


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_corrupt_files(tmp_path, bn_model, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    good = save_checkpoint(bn_model, tmp_path / f"good.{fmt}")
    raw = good.read_bytes()
    truncated = tmp_path / f"truncated.{fmt}"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / f"garbage.{fmt}"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_checkpoint(garbage)


def test_non_tensor_contents_refused(tmp_path):
    torch.save({"w": torch.zeros(2), "epoch": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="entry 'epoch' is a int, not a tensor"):
        load_checkpoint(tmp_path / "mixed.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module, not weights
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(tmp_path / "module.pt")
    with pytest.raises(TypeError, match="'lr' is a float, not a tensor"):
        save_checkpoint({"lr": 0.1}, tmp_path / "x.pt")


def test_other_errors(tmp_path, bn_model):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown checkpoint format '.ckpt'"):
        save_checkpoint(bn_model, tmp_path / "net.ckpt")
    with pytest.raises(ValueError, match="metadata must be JSON"):
        save_checkpoint(bn_model, tmp_path / "net.pt", {"when": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint({checkpoints.META_KEY: torch.zeros(1)}, tmp_path / "net.pt")
    # Weights that do not fit the model the metadata describes.
    save_checkpoint({"w": torch.zeros(2)}, tmp_path / "odd.pt", bn_model.fastloss_spec)
    with pytest.raises(ValueError, match="do not fit model 'mpo-cnn-bn'"):
        build_from_checkpoint(tmp_path / "odd.pt")


def test_saved_copy_is_independent(tmp_path):
    model = build_model("mlp", (4,), 3, widths=(5,))
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    with torch.no_grad():
        model[1].weight.add_(1)
    assert not torch.equal(load_state_dict(path)["1.weight"], model[1].weight)
