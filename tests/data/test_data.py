"""Data loaders: the built-ins offline, and every user format on small files written here."""

import gzip
import os
import pickle
import socket
import struct

import numpy as np
import pytest
import torch

from fastloss import data
from fastloss.data.builtin import mnist1d_arrays
from fastloss.io.hashing import data_hash


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data loader tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def assert_dataset(d, shape, n=None):
    x, y = d
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert tuple(x.shape[1:]) == shape and y.shape == (x.shape[0],)
    if n is not None:
        assert len(y) == n


# --- built-ins -------------------------------------------------------------------------------


def test_mnist1d_offline_and_standard(no_network):
    pytest.importorskip("mnist1d")
    mnist1d_arrays.cache_clear()  # generate under the network block
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    train, test = data.load_builtin("mnist1d")
    assert np.array_equal(np.random.get_state()[1], before), "global numpy RNG was reseeded"
    assert_dataset(train, (40,), 4000)
    assert_dataset(test, (40,), 1000)
    assert set(train[1].tolist()) == set(range(10))
    again, _ = data.load_data("mnist1d")
    assert torch.equal(again[0], train[0]) and torch.equal(again[1], train[1])
    assert again[0].data_ptr() != train[0].data_ptr(), "callers must not share the cached tensors"


def test_digits_offline_stratified_seeded(no_network):
    pytest.importorskip("sklearn")
    train, test = data.load_builtin("digits")
    assert_dataset(train, (1, 8, 8), 1437)
    assert_dataset(test, (1, 8, 8), 360)
    assert train[0].min() == 0 and train[0].max() == 1
    counts = torch.bincount(test[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    same, _ = data.load_builtin("digits", seed=42)
    other, _ = data.load_builtin("digits", seed=7)
    assert torch.equal(same[0], train[0])
    assert not torch.equal(other[0], train[0])


def test_builtin_unknown():
    with pytest.raises(ValueError, match="the built-ins are mnist1d, digits"):
        data.load_builtin("imagenet")


# --- MNIST IDX -------------------------------------------------------------------------------


def idx_bytes(array, code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder, n_train=6, n_test=4, size=28, gz=True, dotted=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, a in arrays.items():
        kind = "idx3" if a.ndim == 3 else "idx1"
        name = f"{stem}{'.' if dotted else '-'}{kind}-ubyte" + (".gz" if gz else "")
        raw = idx_bytes(a)
        (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_mnist_folder(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    train, test = data.load_mnist(tmp_path)
    assert_dataset(train, (1, 28, 28), 6)
    assert_dataset(test, (1, 28, 28), 4)
    expected = torch.from_numpy(arrays["train-images"][:, None].astype(np.float32)) / 255
    torch.testing.assert_close(train[0], expected)
    assert train[1].tolist() == arrays["train-labels"].tolist()
    assert test[1].tolist() == arrays["t10k-labels"].tolist()
    via_spec, _ = data.load_data(tmp_path)
    assert torch.equal(via_spec[0], train[0])
    one_file = next(tmp_path.glob("t10k-images*"))
    via_file, _ = data.load_data(one_file)  # a file of the set loads the set
    assert torch.equal(via_file[0], train[0])


def test_mnist_dotted_names_raw_subfolder_and_explicit_paths(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", dotted=True, gz=False)
    train, test = data.load_data(tmp_path / "FashionMNIST")
    assert_dataset(train, (1, 28, 28), 6)
    raw = tmp_path / "FashionMNIST" / "raw"
    train2, test2 = data.load_mnist_files(
        raw / "train-images.idx3-ubyte",
        raw / "train-labels.idx1-ubyte",
        raw / "t10k-images.idx3-ubyte",
        raw / "t10k-labels.idx1-ubyte",
    )
    assert torch.equal(train2[0], train[0]) and torch.equal(test2[1], test[1])


def test_read_idx_other_types(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(a, code=0x0C))
    assert np.array_equal(data.read_idx(tmp_path / "a.idx"), a)
    f = np.linspace(-1, 1, 6).astype(np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(f, code=0x0D))
    assert np.array_equal(data.read_idx(tmp_path / "f.idx"), f)


def test_mnist_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing MNIST IDX file.*t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_mnist_truncated(tmp_path, gz):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()[:-100]
    if gz:
        path.unlink()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load_mnist(tmp_path)


def test_mnist_truncated_gzip_stream(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        data.load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x01\x02" + path.read_bytes()[2:])
    with pytest.raises(ValueError, match="not an IDX file.*magic number 0102"):
        data.load_mnist(tmp_path)


def test_mnist_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="expected 6 labels"):
        data.load_mnist(tmp_path)


# --- CIFAR pickles ---------------------------------------------------------------------------


def cifar_batch(n, label_key=b"labels", seed=0, bytes_keys=True):
    rng = np.random.default_rng(seed)
    d = {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, 10, n)],
        b"batch_label": b"training batch",
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        d[b"coarse_labels"] = [0] * n
    return d if bytes_keys else {k.decode(): v for k, v in d.items()}


def write_pickle(path, obj, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    batches = [cifar_batch(3, seed=i, bytes_keys=i % 2 == 0) for i in range(3)]
    for i, b in enumerate(batches[:2]):
        write_pickle(folder / f"data_batch_{i + 1}", b, protocol)
    write_pickle(folder / "test_batch", batches[2], protocol)
    (folder / "batches.meta").write_bytes(b"ignored")
    train, test = data.load_data(tmp_path)  # the folder above works too
    assert_dataset(train, (3, 32, 32), 6)
    assert_dataset(test, (3, 32, 32), 3)
    first = torch.from_numpy(batches[0][b"data"].reshape(3, 3, 32, 32).astype(np.float32)) / 255
    torch.testing.assert_close(train[0][:3], first)
    assert train[1].tolist() == batches[0][b"labels"] + batches[1]["labels"]
    assert train[0].min() >= 0 and train[0].max() <= 1


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    train_d = cifar_batch(4, b"fine_labels")
    write_pickle(folder / "train", train_d)
    write_pickle(folder / "test", cifar_batch(2, b"fine_labels", seed=1))
    train, test = data.load_cifar(folder)
    assert train[1].tolist() == train_d[b"fine_labels"]
    assert_dataset(test, (3, 32, 32), 2)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalExploit:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("exploit", ["os.system", "builtins.eval"])
def test_cifar_refuses_code_in_pickle(tmp_path, exploit):
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle(folder / "data_batch_1", cifar_batch(2))
    marker = tmp_path / "pwned"
    bad = _Exploit(marker) if exploit == "os.system" else _EvalExploit()
    write_pickle(folder / "test_batch", {b"data": bad, b"labels": [0]})
    name = "system" if exploit == "os.system" else "eval"
    with pytest.raises(ValueError, match=f"refusing to load .*{name}"):
        data.load_cifar(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj,message",
    [
        ([1, 2, 3], "expected a pickled dict, got list"),
        ({b"labels": [1]}, "expected a CIFAR batch dict with keys 'data' and 'labels'"),
        ({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, r"must be \[N, 3072\]"),
        ({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}, "must be a uint8 numpy array"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "'labels' must be 2 integers"),
    ],
)
def test_cifar_bad_contents(tmp_path, obj, message):
    write_pickle(tmp_path / "data_batch_1", cifar_batch(2))
    write_pickle(tmp_path / "test_batch", obj)
    with pytest.raises(ValueError, match=message):
        data.load_cifar(tmp_path)


def test_cifar_truncated_and_missing(tmp_path):
    write_pickle(tmp_path / "data_batch_1", cifar_batch(2))
    raw = pickle.dumps(cifar_batch(2), protocol=2)
    (tmp_path / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="not a readable CIFAR pickle"):
        data.load_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="expected CIFAR-10 files data_batch_1"):
        data.load_cifar(tmp_path)


# --- npz -------------------------------------------------------------------------------------


def test_npz_split_seeded(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3, 4)).astype(np.float64)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    train, test = data.load_data(tmp_path / "d.npz")
    assert_dataset(train, (3, 4), 40)
    assert_dataset(test, (3, 4), 10)
    again, _ = data.load_npz(tmp_path / "d.npz")
    other, _ = data.load_npz(tmp_path / "d.npz", seed=1)
    assert torch.equal(again[1], train[1]) and not torch.equal(other[0], train[0])
    all_x = torch.cat([train[0], test[0]]).double().sort(dim=0).values
    torch.testing.assert_close(all_x, torch.from_numpy(x).sort(dim=0).values.float().double())


def test_npz_big_endian_and_strided(tmp_path):
    x = np.arange(24, dtype=">f4").reshape(6, 4)[::-1]
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6, dtype=">i8"), x_test=x, y_test=np.zeros(6))
    (tx, ty), _ = data.load_npz(tmp_path / "d.npz")
    assert tx[0].tolist() == [20, 21, 22, 23] and ty.tolist() == list(range(6))


def test_npz_explicit_test_and_uint8(tmp_path):
    x = np.full((4, 2, 2), 255, np.uint8)
    np.savez_compressed(
        tmp_path / "d.npz", x=x, y=[0, 1, 2, 1], x_test=x[:2], y_test=np.array([1.0, 0.0])
    )
    train, test = data.load_data(tmp_path)  # a folder with one .npz
    assert train[0].max() == 1.0 and len(test[1]) == 2 and test[1].dtype == torch.int64


@pytest.mark.parametrize(
    "arrays,message",
    [
        (dict(x=np.zeros((4, 2))), "expected arrays 'x'.*found \\['x'\\]"),
        (dict(x=np.zeros((4, 2)), y=np.zeros(3)), r"y must be \[N\] = \[4\]"),
        (dict(x=np.zeros((4, 2)), y=[0, 1, 2, -1]), "labels must be >= 0"),
        (dict(x=np.zeros((4, 2)), y=[0, 0.5, 1, 1]), "integer class labels"),
        (dict(x=np.zeros(4), y=np.zeros(4)), "at least 2 dims"),
        (dict(x=np.zeros((4, 2)), y=np.zeros(4), x_test=np.zeros((2, 2))), "both 'x_test'"),
        (
            dict(x=np.zeros((4, 2)), y=np.zeros(4), x_test=np.zeros((2, 3)), y_test=[0, 0]),
            "all samples must share one shape",
        ),
        (dict(x=np.array([[np.nan, 1]] * 4), y=np.zeros(4)), "NaN or inf"),
    ],
)
def test_npz_bad(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        data.load_npz(tmp_path / "d.npz")


def test_npz_pickled_objects_and_corrupt(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(ValueError, match="pickled Python objects"):
        data.load_npz(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load_data(tmp_path / "junk.npz")


# --- dispatch errors, helpers ----------------------------------------------------------------


def test_load_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a built-in .*mnist1d, digits"):
        data.load_data("mnist2d")
    with pytest.raises(FileNotFoundError, match="no data set found there"):
        data.load_data(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unrecognised data file"):
        data.load_data(tmp_path / "notes.txt")


def test_subsample():
    x, y = torch.arange(100.0)[:, None], torch.arange(100)
    a = data.subsample((x, y), 10, seed=3)
    b = data.subsample((x, y), 10, seed=3)
    c = data.subsample((x, y), 10, seed=4)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert torch.equal(a[0][:, 0].long(), a[1]) and torch.equal(a[1], a[1].sort().values)
    bigger = data.subsample((x, y), 20, seed=3)
    assert set(a[1].tolist()) <= set(bigger[1].tolist())
    assert data.subsample((x, y), None, 0)[1] is y and data.subsample((x, y), 100, 0)[1] is y
    with pytest.raises(ValueError, match=">= 1"):
        data.subsample((x, y), 0, 0)


def test_standardize_per_channel_with_train_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 4, 4, generator=g) * torch.tensor([1.0, 5, 0.1])[:, None, None] + 7
    train, test = data.standardize((x, torch.zeros(64)), (x[:8] + 1, torch.zeros(8)))
    means = train[0].mean(dim=(0, 2, 3))
    stds = train[0].std(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(stds, torch.ones(3), atol=1e-5, rtol=0)
    shift = (test[0] - train[0][:8]).mean(dim=(0, 2, 3))
    torch.testing.assert_close(shift, 1 / x.std(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_load_dataset_normalize(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(40.0).reshape(20, 2) * 3, y=np.arange(20) % 2)
    (x, _), _ = data.load_data(tmp_path / "d.npz", normalize=True)
    (raw, _), _ = data.load_data(tmp_path / "d.npz")
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    assert not torch.equal(x, raw)


def test_data_hash_and_num_classes():
    x, y = torch.ones(5, 2), torch.tensor([0, 1, 2, 1, 0])
    h = data_hash(x, y)
    assert len(h) == 16 and h == data_hash(x.clone(), y.clone())
    assert h != data_hash(x, torch.tensor([0, 1, 2, 1, 1]))
    assert h != data_hash(x.reshape(5, 2, 1), y)
    assert data.num_classes((x, y), (x, torch.tensor([4, 0, 0, 0, 0]))) == 5


def test_from_torch_dataset():
    x, y = torch.randn(6, 2, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    got = data.from_torch_dataset(torch.utils.data.TensorDataset(x, y))
    assert torch.equal(got[0], x) and torch.equal(got[1], y)
