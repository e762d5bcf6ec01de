"""Surface files: round trips, loss-landscape compatibility, resume, refusals, crash safety."""

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from fastloss.cli.options import as_flags  # noqa: E402
from fastloss.errors import SurfaceFileError  # noqa: E402
from fastloss.io import Surface, SurfaceWriter  # noqa: E402
from fastloss.io.hdf5 import LAYOUT  # noqa: E402

PACKAGE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "fastloss"
)
METRICS = ["train_loss", "train_acc", "test_loss", "test_acc"]


def grid(nx=7, ny=5):
    # nx != ny, so a transposed layout cannot pass.
    return np.linspace(-0.5, 1.5, nx), np.linspace(-0.25, 1.0, ny)


def truth(x, y, metric):
    """A value that identifies its point, so a transposed or shifted array is caught."""
    X, Y = np.meshgrid(x, y)  # [ny, nx], as loss-landscape's plot_2D builds it
    base = 1.0 + X**2 + 10.0 * Y**2
    return {
        "train_loss": base,
        "test_loss": 2 * base,
        "train_acc": 50 + 10 * X,
        "test_acc": 40 + Y,
    }[metric]


def expected_flat(shape, metric, idx):
    """Deterministic per-point values used by the writer tests and the kill child."""
    idx = np.asarray(idx, dtype=np.float64)
    return np.sin(idx + len(metric)) + 2.0 + (len(metric) % 3)


def example_surface(one_d=False, done_fraction=0.6):
    x, y = grid()
    if one_d:
        values = {m: truth(x, y, m)[0] for m in METRICS}
    else:
        values = {m: truth(x, y, m) for m in METRICS}
    shape = values["train_loss"].shape
    rng = np.random.default_rng(0)
    done = rng.random(shape) < done_fraction
    for v in values.values():
        v[~done] = np.nan
    return Surface(
        x,
        None if one_d else y,
        values,
        done,
        attrs={
            "basis": {"kind": "plane", "norms": [1.5, 2.25]},
            "data": {"train_size": 1000, "sha256": "ab" * 32},
            "model": "MLP 40-256-256-10",
            "seconds": 12.5,
        },
        markers={"w1": (0, 0), "w2": (1, 0), "w3": (0.4, 0.9)} if not one_d else {"w1": 0, "w2": 1},
        settings={"grid": [7, 5], "seed": 3, "bn": "recompute"},
    )


def assert_same(a: Surface, b: Surface):
    np.testing.assert_array_equal(a.x, b.x)
    if a.y is None:
        assert b.y is None
    else:
        np.testing.assert_array_equal(a.y, b.y)
    assert list(a.values) == list(b.values)
    for m in a.values:
        np.testing.assert_array_equal(a.values[m], b.values[m])
    np.testing.assert_array_equal(a.done, b.done)
    assert a.attrs == b.attrs
    assert a.markers == b.markers
    assert a.settings == b.settings


@pytest.mark.parametrize("one_d", [False, True], ids=["2d", "1d"])
def test_round_trip(tmp_path, one_d):
    s = example_surface(one_d)
    path = tmp_path / "s.h5"
    s.save(path)
    t = Surface.load(path)
    assert_same(s, t)
    assert t.shape == ((7,) if one_d else (5, 7))
    assert not t.is_complete and t.done.any()
    assert t.markers["w2"] == (1.0, 0.0)
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # no temporary file left behind


def test_loss_landscape_reads_it_as_plot_2d_does(tmp_path):
    x, y = grid()
    s = Surface(x, y, {m: truth(x, y, m) for m in METRICS})
    assert s.is_complete
    path = tmp_path / "plane.h5"
    s.save(path)
    with h5py.File(path, "r") as f:
        xc = np.array(f["xcoordinates"][:])
        yc = np.array(f["ycoordinates"][:])
        X, Y = np.meshgrid(xc, yc)
        Z = np.array(f["train_loss"][:])
        assert Z.shape == X.shape == (len(yc), len(xc))
        np.testing.assert_array_equal(Z, 1.0 + X**2 + 10.0 * Y**2)
        np.testing.assert_array_equal(np.array(f["train_acc"][:]), 50 + 10 * X)
        assert f.attrs["layout"] == LAYOUT == f["fastloss"].attrs["layout"]
        assert f["fastloss/done"].dtype == np.uint8 and f["fastloss/done"].shape == Z.shape
        assert json.loads(f["fastloss"].attrs["settings"]) == {}
    err = Surface.load(path).metric("train_err")
    np.testing.assert_allclose(err, 100 - (50 + 10 * X))


def test_loss_landscape_reads_1d_as_plot_1d_does(tmp_path):
    s = example_surface(one_d=True, done_fraction=1.0)
    s.save(tmp_path / "line.h5")
    with h5py.File(tmp_path / "line.h5", "r") as f:
        x = f["xcoordinates"][:]
        assert "ycoordinates" not in f
        assert f["train_loss"][:].shape == f["train_acc"][:].shape == x.shape
        assert f.attrs["layout"] == "values[j] is at xcoordinates[j]"


def test_load_plain_loss_landscape_file(tmp_path):
    x, y = grid()
    path = tmp_path / "ll.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = x
        f["ycoordinates"] = y
        loss = truth(x, y, "train_loss")
        loss[0, 0] = np.nan
        f["train_loss"] = loss
        f["dir_file"] = "dirs.h5"
    s = Surface.load(path)
    assert list(s.values) == ["train_loss"]
    assert s.done.sum() == loss.size - 1 and not s.done[0, 0]


def test_save_refuses_to_overwrite(tmp_path):
    s = example_surface()
    path = tmp_path / "s.h5"
    s.save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        s.save(path)
    s.values["train_loss"][:] = 7.0
    s.save(path, overwrite=True)
    assert (Surface.load(path).values["train_loss"] == 7.0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_bad_surfaces_are_refused():
    x, y = grid()
    with pytest.raises(ValueError, match=r"expected \(5, 7\).*row = y index"):
        Surface(x, y, {"train_loss": np.zeros((7, 5))})
    with pytest.raises(ValueError, match="invalid metric name"):
        Surface(x, y, {"xcoordinates": np.zeros((5, 7))})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        Surface(x, y, {}, attrs={"f": object()})
    with pytest.raises(KeyError, match="has"):
        Surface(x, y, {}).metric("train_loss")


def open_writer(path, settings=None, **kw):
    x, y = grid()
    kw.setdefault("attrs", {"model": "mlp"})
    kw.setdefault("markers", {"w1": (0, 0), "w2": (1, 0)})
    return SurfaceWriter(path, x, y, METRICS, settings or {"seed": 0, "n": 100}, **kw)


def write_chunk(w, idx):
    w.write(idx, {m: expected_flat(w.shape, m, idx) for m in METRICS})


def test_writer_resumes_and_keeps_finished_values(tmp_path):
    path = tmp_path / "s.h5"
    with open_writer(path) as w:
        assert not w.resumed
        assert w.pending().tolist() == list(range(35))
        s = Surface.load(path)
        assert all(np.isnan(v).all() for v in s.values.values()) and not s.done.any()
        write_chunk(w, np.arange(0, 10))
        write_chunk(w, np.array([30, 12, 11]))  # any order
    with open_writer(path, settings={"n": 100, "seed": 0}) as w:  # key order does not matter
        assert w.resumed
        pending = w.pending()
        assert pending.tolist() == [i for i in range(35) if i not in {*range(10), 30, 12, 11}]
        s = w.surface()
        flat = s.values["test_acc"].reshape(-1)
        np.testing.assert_array_equal(flat[:10], expected_flat(w.shape, "test_acc", range(10)))
        assert np.isnan(flat[pending]).all()
        write_chunk(w, pending)
        assert w.pending().size == 0 and w.surface().is_complete
    s = Surface.load(path)
    assert s.is_complete
    i, j = 3, 5  # flat index i * nx + j
    assert s.values["train_loss"][i, j] == expected_flat(s.shape, "train_loss", [i * 7 + j])[0]
    assert s.attrs == {"model": "mlp"} and s.markers == {"w1": (0, 0), "w2": (1, 0)}


def test_writer_1d(tmp_path):
    x = np.linspace(0, 1, 11)
    with SurfaceWriter(tmp_path / "c.h5", x, None, ["train_loss"], {"k": 1}) as w:
        w.write([0, 10], {"train_loss": [1.0, 2.0]})
        assert w.pending().tolist() == list(range(1, 10))
    s = Surface.load(tmp_path / "c.h5")
    assert s.shape == (11,) and s.y is None and s.done.sum() == 2
    assert s.values["train_loss"][10] == 2.0


@pytest.mark.parametrize(
    "settings,named",
    [
        ({"seed": 1, "n": 100}, r"'seed' \(file has 0, this run has 1\)"),
        ({"seed": 0}, r"'n' \(file has 100; not in this run\)"),
        ({"seed": 0, "n": 100, "bn": "off"}, r"'bn' \(not in the file"),
    ],
)
def test_settings_mismatch_names_the_setting(tmp_path, settings, named):
    path = tmp_path / "s.h5"
    with open_writer(path) as w:
        write_chunk(w, np.arange(5))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=named) as info:
        open_writer(path, settings=settings)
    # The library names the API argument; the command line shows it as its flag.
    message, flags = str(info.value), {"overwrite": ("--overwrite", True)}
    assert "overwrite=True" in message and "--overwrite" in as_flags(message, flags)
    assert path.read_bytes() == before


def test_nested_settings_and_grid_mismatch(tmp_path):
    path = tmp_path / "s.h5"
    open_writer(path, settings={"data": {"train": 1000, "hash": "aa"}}).close()
    with pytest.raises(FileExistsError, match=r"'data.hash'"):
        open_writer(path, settings={"data": {"train": 1000, "hash": "bb"}})
    x, y = grid()
    with pytest.raises(FileExistsError, match="'xcoordinates'"):
        SurfaceWriter(path, x * 2, y, METRICS, {"data": {"train": 1000, "hash": "aa"}})
    with pytest.raises(FileExistsError, match="metrics"):
        SurfaceWriter(path, x, y, METRICS[:2], {"data": {"train": 1000, "hash": "aa"}})


def test_overwrite_restarts(tmp_path):
    path = tmp_path / "s.h5"
    with open_writer(path) as w:
        write_chunk(w, np.arange(20))
    with open_writer(path, settings={"seed": 9}, overwrite=True) as w:
        assert not w.resumed and w.pending().size == 35
    s = Surface.load(path)
    assert not s.done.any() and s.settings == {"seed": 9}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_gives_a_clear_error_and_is_kept(tmp_path, damage):
    path = tmp_path / "s.h5"
    with open_writer(path) as w:
        write_chunk(w, np.arange(20))
    data = path.read_bytes()
    damaged = {"garbage": b"not hdf5 at all" * 100, "truncated": data[:3000], "empty": b""}[damage]
    path.write_bytes(damaged)
    with pytest.raises(SurfaceFileError, match="left untouched"):
        Surface.load(path)
    with pytest.raises(SurfaceFileError, match="left untouched"):
        open_writer(path)
    assert path.read_bytes() == damaged
    if damage == "truncated":  # an HDF5 file: replaced when explicitly asked
        open_writer(path, overwrite=True).close()
        assert not Surface.load(path).done.any()
    else:  # not HDF5 at all (a mistyped path?): refused even with overwrite=True
        with pytest.raises(SurfaceFileError, match="not an HDF5 file"):
            open_writer(path, overwrite=True)
        assert path.read_bytes() == damaged


def test_write_validation(tmp_path):
    with open_writer(tmp_path / "s.h5") as w:
        good = {m: np.zeros(2) for m in METRICS}
        with pytest.raises(ValueError, match="missing"):
            w.write([0, 1], {"train_loss": [1, 2]})
        with pytest.raises(IndexError, match=r"\[0, 35\)"):
            w.write([0, 35], good)
        with pytest.raises(ValueError, match="duplicates"):
            w.write([3, 3], good)
        with pytest.raises(ValueError, match="2 entries for 3"):
            w.write([0, 1, 2], good)
        assert w.pending().size == 35
    with pytest.raises(ValueError, match="closed"):
        w.write([0, 1], good)


def test_attrs_updates_survive_a_missing_close_and_are_folded_on_close(tmp_path):
    path = tmp_path / "s.h5"
    w = open_writer(path)
    write_chunk(w, np.arange(3))
    w.update_attrs(seconds=1.5, points_per_s=2.0)
    w.update_attrs(seconds=3.0)
    del w  # as if killed: no close
    s = Surface.load(path)
    assert s.attrs == {"model": "mlp", "seconds": 3.0, "points_per_s": 2.0}
    with h5py.File(path, "r") as f:
        assert "seconds" not in f.attrs  # not folded yet
    with open_writer(path, attrs={"resumed_at": "now"}) as w:
        assert w.surface().attrs["seconds"] == 3.0 and w.surface().attrs["resumed_at"] == "now"
    with h5py.File(path, "r") as f:
        assert f.attrs["seconds"] == 3.0 and f.attrs["resumed_at"] == "now"
        assert json.loads(f["fastloss"].attrs["attrs"])["points_per_s"] == 2.0
    assert Surface.load(path).done.sum() == 3


HOLDER = textwrap.dedent(
    """
    import sys, types
    import numpy as np
    # Only the surface module and its light siblings, not the packages' __init__ (and torch).
    for name, folder in (("fastloss", {package!r}), ("fastloss.io", {package!r} + "/io")):
        stub = types.ModuleType(name)
        stub.__path__ = [folder]
        sys.modules[name] = stub
    import fastloss.io.surface as io
    x, y = np.linspace(-0.5, 1.5, 7), np.linspace(-0.25, 1.0, 5)
    w = io.SurfaceWriter(sys.argv[1], x, y, ["train_loss"], {{}})
    w.write([0, 1, 2, 3], {{"train_loss": [1.0, 2.0, 3.0, 4.0]}})
    print("ready", flush=True)
    sys.stdin.read()
    w.close()
    """
)


def test_reading_while_another_process_writes(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(package=PACKAGE_DIR))
    path = tmp_path / "s.h5"
    child = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().startswith("ready"), child.stderr.read()
        s = Surface.load(path)  # the writer holds HDF5's lock; reading still works
        assert s.done.sum() == 4 and s.values["train_loss"][0, 3] == 4.0
        with pytest.raises(SurfaceFileError, match="locked by another process"):
            SurfaceWriter(path, *grid(), ["train_loss"], {})
    finally:
        child.communicate("", timeout=30)
    assert child.returncode == 0


def test_writes_change_raw_data_only(tmp_path):
    """The property crash safety rests on: after creation, writes touch only the allocated
    storage of the datasets (and the superblock's open-for-write flag, bytes 20-23)."""
    path = tmp_path / "s.h5"
    open_writer(path).close()
    before = path.read_bytes()
    w = open_writer(path)
    f = w._file
    storage = [
        (f[n].id.get_offset(), f[n].id.get_storage_size())
        for n in [*METRICS, "fastloss/done", "fastloss/live"]
    ]
    write_chunk(w, np.arange(0, 35, 3))
    w.update_attrs(seconds=1.0)
    write_chunk(w, np.arange(1, 35, 3))
    f.flush()
    after = path.read_bytes()
    assert len(after) == len(before)
    changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    outside = [
        i for i in changed if not 20 <= i < 24 and not any(o <= i < o + n for o, n in storage)
    ]
    assert changed.size > 0 and outside == []
    w._file.close()  # no fold: the comparison is about the writes


CHILD = textwrap.dedent(
    """
    import sys, types
    import numpy as np
    # Without the packages' __init__ (and torch): a fast start.
    for name, folder in (("fastloss", {package!r}), ("fastloss.io", {package!r} + "/io")):
        stub = types.ModuleType(name)
        stub.__path__ = [folder]
        sys.modules[name] = stub
    import fastloss.io.surface as io

    def value(metric, idx):
        return np.sin(np.asarray(idx, dtype=np.float64) + len(metric)) + 2.0 + (len(metric) % 3)

    path, chunk = sys.argv[1], int(sys.argv[2])
    metrics = {metrics!r}
    x, y = np.linspace(-1, 1, 40), np.linspace(-1, 1, 30)
    w = io.SurfaceWriter(path, x, y, metrics, {{"seed": 0}}, attrs={{"model": "m"}},
                         markers={{"w1": (0, 0)}})
    print("ready", w.pending().size, flush=True)
    pending = w.pending()
    for n, start in enumerate(range(0, pending.size, chunk)):
        idx = pending[start:start + chunk][::-1]  # scattered order within a chunk
        w.write(idx, {{m: value(m, idx) for m in metrics}})
        if n % 5 == 0:
            w.update_attrs(chunks=n)
        print("wrote", idx.size, flush=True)
    w.close()
    print("closed", flush=True)
    """
)


def run_child(script, path, chunk):
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(chunk)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_until_complete(script, path, expected, chunk, rng, seconds_per_point, tail):
    """Run the writing child on ``path`` again and again, SIGKILLing each at a random moment
    of the writes it has left, until one finishes; check the file after every kill."""
    done_before = 0
    for kills in range(500):
        child = run_child(script, path, chunk)
        ready = child.stdout.readline()
        assert ready.startswith("ready"), child.stderr.read()
        remaining = int(ready.split()[1])
        # Mostly mid-write; sometimes during close, or after the end.
        time.sleep(rng.uniform(0, seconds_per_point * remaining + tail))
        child.kill()
        out, err = child.communicate(timeout=60)
        s = Surface.load(path)  # must open after every kill
        done = s.done.reshape(-1)
        # Everything the child reported written is done; everything done has its values.
        complete = out.split("\n")[:-1]  # a kill can cut the last line short
        reported = sum(int(ln.split()[1]) for ln in complete if ln.startswith("wrote"))
        assert done.sum() >= done_before + reported
        for m in METRICS:
            np.testing.assert_array_equal(
                s.values[m].reshape(-1)[done], expected.values[m].reshape(-1)[done]
            )
        done_before = int(done.sum())
        if child.returncode == 0:
            return kills
        assert child.returncode == -9, err
    raise AssertionError("the child never got to finish")


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(package=PACKAGE_DIR, metrics=METRICS))
    chunk = 13

    reference = tmp_path / "reference.h5"
    child = run_child(script, reference, chunk)
    total = int(child.stdout.readline().split()[1])
    start = time.monotonic()
    for ln in child.stdout:
        if ln.startswith("wrote"):
            last_write = time.monotonic()
    end = time.monotonic()
    assert child.wait(timeout=60) == 0, child.stderr.read()
    seconds_per_point = (last_write - start) / total
    tail = 2 * (end - last_write) + 0.02  # close, with margin
    expected = Surface.load(reference)
    assert expected.is_complete

    rng = random.Random(1234)
    kills, runs, deadline = 0, 0, time.monotonic() + 8
    while kills < 30 and (time.monotonic() < deadline or kills < 10):
        path = tmp_path / f"killed{runs}.h5"
        kills += kill_until_complete(script, path, expected, chunk, rng, seconds_per_point, tail)
        runs += 1
        final = Surface.load(path)
        assert final.is_complete
        for m in METRICS:
            np.testing.assert_array_equal(final.values[m], expected.values[m])
        assert final.markers == expected.markers and final.settings == expected.settings
        assert final.attrs["model"] == "m" and "chunks" in final.attrs
    assert kills >= 10
    print(f"{runs} runs to completion through {kills} SIGKILLs")


def test_temporaries_of_killed_writes_are_cleaned_up(tmp_path):
    path = tmp_path / "s.h5"
    stale, fresh, other = (
        tmp_path / n
        for n in (".s.h5.0123456789ab.tmp", ".s.h5.ba9876543210.tmp", ".t.h5.0123456789ab.tmp")
    )
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    open_writer(path).close()
    assert not stale.exists() and fresh.exists() and other.exists()
