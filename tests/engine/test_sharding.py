"""The engine on several processes: `ShardedSink`'s shards (merged, resumed, discarded when
stale) in one process, and ``fastloss plane`` under torchrun with 2 gloo processes on the
CPU, whose file must equal the one-process file bit for bit."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from fastloss.cli import main as cli
from fastloss.engine import MemorySink, ShardedSink, shard_folder


def _values(indices):
    return {"loss": np.asarray(indices, dtype=np.float64) * 0.5}


def test_a_run_that_stopped_part_way_is_merged_then_finished(tmp_path):
    folder = shard_folder(tmp_path / "out.h5")
    first = MemorySink(10)
    sink = ShardedSink(first, folder, key="settings-a")
    assert list(sink.pending()) == list(range(10)) and folder.is_dir()
    sink.write(np.arange(0, 4), _values(range(0, 4)))
    assert first.done[:4].all()  # rank 0 writes straight into the output
    # another process's finished chunk, left behind by a run that was killed
    other = ShardedSink.__new__(ShardedSink)
    other.rank, other.size, other.sink, other.folder = 1, 2, None, folder
    other.write(np.arange(4, 7), _values(range(4, 7)))
    (folder / "rank1-0000000007.partial").write_bytes(b"torn")  # a write in flight: ignored
    assert sorted(p.name for p in folder.glob("rank*.npz")) == ["rank1-0000000004.npz"]

    again = MemorySink(10)
    again.write(np.arange(0, 4), _values(range(0, 4)))  # what the output file held
    resumed = ShardedSink(again, folder, key="settings-a")
    assert list(resumed.pending()) == [7, 8, 9]  # the shard merged first
    np.testing.assert_array_equal(again.values["loss"][:7], np.arange(7) * 0.5)
    resumed.write(np.arange(7, 10), _values(range(7, 10)))
    resumed.finish()
    assert again.done.all() and not folder.exists()

    # shards of a run with other settings are discarded, never merged
    folder.mkdir()
    other.write(np.arange(0, 2), {"loss": np.full(2, 99.0)})
    (folder / "settings.key").write_text("settings-b")
    fresh = MemorySink(10)
    assert list(ShardedSink(fresh, folder, key="settings-a").pending()) == list(range(10))
    assert not fresh.done.any()


def _torchrun(*args, cwd):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "--no-python", "fastloss", *args]
    env = {**os.environ, "FASTLOSS_DIST_TIMEOUT": "120"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    data = ["--data", "mnist1d", "--train-samples", "300", "--test-samples", "100"]
    for seed in range(3):
        out = str(folder / f"n{seed}.pt")
        args = ["train", "--model", "mlp", "--epochs", "1", "--seed", str(seed), "--out", out]
        assert cli.main([*args, *data, "--quiet"]) == 0
    return folder


def test_plane_under_torchrun_equals_the_one_process_file(networks, tmp_path):
    args = ["n0.pt", "n1.pt", "n2.pt", "--data", "mnist1d", "--train-samples", "300"]
    args += ["--test-samples", "100", "--x=-0.5:1.5:9", "--y=-0.5:1.5:7", "--quiet"]
    # with the threads per process torchrun gives (OMP_NUM_THREADS=1): a one-process run on
    # 2 threads differed in the last bit of one point's test loss (its chunk of 7 points
    # went through BLAS split another way)
    one = tmp_path / "one.h5"
    alone = subprocess.run(
        ["fastloss", "plane", *args, "--out", str(one)],
        cwd=networks,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    result = _torchrun("plane", *args, "--out", str(tmp_path / "two.h5"), cwd=networks)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("points in") == 1  # rank 0 reports
    with h5py.File(one) as a, h5py.File(tmp_path / "two.h5") as b:
        for name in ("train_loss", "train_acc", "test_loss", "test_acc", "fastloss/done"):
            assert a[name][()].tobytes() == b[name][()].tobytes(), name
        assert b["fastloss/done"][()].all()
    assert not shard_folder(tmp_path / "two.h5").exists()


def test_commands_that_do_not_share_their_points_refuse_under_torchrun(networks):
    result = _torchrun("info", cwd=networks)
    assert result.returncode != 0
    assert "fastloss info does not run under torchrun yet" in result.stderr
