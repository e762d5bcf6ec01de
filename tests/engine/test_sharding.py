"""The engine on several processes: `ShardedSink`'s shards (merged, resumed, discarded when
stale) in one process; then the commands under torchrun with 2 gloo processes on the CPU,
whose files must equal the one-process files bit for bit, on one node and on two; a process
killed or stalled mid-run, and two jobs started on one output."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fastloss.cli import main as cli
from fastloss.engine import MemorySink, ShardedSink, shard_folder

DATA = ["--data", "digits", "--train-samples", "300", "--test-samples", "100"]
TIMING = {"seconds", "points_per_second"}  # wall times, which differ between any two runs


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


def _launch(*args, cwd, timeout="120", nodes=None):
    """torchrun with 2 processes (or ``nodes`` = (node rank, port): one process on each of
    2 "nodes" that meet at that port), running ``fastloss args``; not waited for."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if nodes is None:
        command += ["--standalone", "--nproc_per_node", "2"]
    else:
        rank, port = nodes
        command += ["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    env = {**os.environ, "FASTLOSS_DIST_TIMEOUT": timeout}
    command += ["--no-python", "fastloss", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _told(stderr: str) -> str:
    """A failed job's stderr for the assertion message: the processes' own lines come first,
    torchrun's traceback last."""
    return stderr if len(stderr) < 4000 else f"{stderr[:2500]}\n...\n{stderr[-1500:]}"


def _torchrun(*args, cwd, **options):
    job = _launch(*args, cwd=cwd, **options)
    out, err = job.communicate(timeout=300)
    return subprocess.CompletedProcess(job.args, job.returncode, out, err)


def _alone(*args, cwd):
    """The command as one process, with the threads per process torchrun gives."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["fastloss", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, _told(result.stderr)
    return result


def _datasets(path):
    found = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, d: found.setdefault(name, d[()]) if isinstance(d, h5py.Dataset) else None
        )
    return found


def assert_same_file(a, b):
    """Every dataset bit for bit, but wall times."""
    ours, theirs = _datasets(a), _datasets(b)
    assert ours.keys() == theirs.keys()
    for name in ours.keys() - TIMING:
        assert np.asarray(ours[name]).tobytes() == np.asarray(theirs[name]).tobytes(), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three networks, a curve between two of them (with snapshots), an MPO plane and a SWAG
    posterior, all on a subset of digits."""
    folder = tmp_path_factory.mktemp("runs")
    for seed in range(3):
        out = str(folder / f"n{seed}.pt")
        args = ["train", "--model", "mlp", "--widths", "16", "--epochs", "1", "--seed", str(seed)]
        args += ["--out", out]
        assert cli.main([*args, *DATA, "--quiet"]) == 0
    fits = [
        ["curve", "fit", "n0.pt", "n1.pt", "--out", "curve", "--epochs", "2", "--save-every", "2"],
        ["mpo", "fit", "smiley", "--size", "8", "--widths", "16", "--out", "mpo", "--steps", "10"],
        ["swag", "collect", "--from", "n0.pt", "--epochs", "2", "--out", "swag"],
    ]
    here = os.getcwd()
    os.chdir(folder)
    try:
        for fit in fits:
            data = DATA[:4] if fit[0] == "curve" else DATA  # a curve fits on the train set
            assert cli.main([*fit, *data, "--quiet"]) == 0
    finally:
        os.chdir(here)
    return folder


PLANE = ["plane", "n0.pt", "n1.pt", "n2.pt", *DATA, "--x=-0.5:1.5:9", "--y=-0.5:1.5:7"]


def test_plane_under_torchrun_equals_the_one_process_file(runs, tmp_path):
    # with the threads per process torchrun gives (OMP_NUM_THREADS=1): a one-process run on
    # 2 threads differed in the last bit of one point's test loss (its chunk of 7 points
    # went through BLAS split another way)
    _alone(*PLANE, "--quiet", "--out", str(tmp_path / "one.h5"), cwd=runs)
    result = _torchrun(*PLANE, "--quiet", "--out", str(tmp_path / "two.h5"), cwd=runs)
    assert result.returncode == 0, _told(result.stderr)
    assert result.stdout.count("points in") == 1  # rank 0 reports
    assert_same_file(tmp_path / "one.h5", tmp_path / "two.h5")
    with h5py.File(tmp_path / "two.h5") as f:
        assert f["fastloss/done"][()].all()
    assert not shard_folder(tmp_path / "two.h5").exists()


# Each has more points than one chunk (32 on the CPU for these networks), so both processes
# evaluate some.
COMMANDS = {
    "curve plane": (["curve", "plane", "curve/curve.pt", "--x=-0.2:1.2:9", "--y=-0.4:0.4:7"], "h5"),
    "curve eval": (["curve", "eval", "curve/curve.pt", "--points", "40"], "h5"),
    "video": (["video", "curve", "--resolution", "6", "--frames", "{out}"], "mp4"),
    "mpo eval": (["mpo", "eval", "mpo/plane.pt"], "h5"),
    "swag predict": (["swag", "predict", "swag/swag.pt", "--samples", "40"], "h5"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_under_torchrun_equal_the_one_process_files(runs, tmp_path, name):
    args, suffix = COMMANDS[name]
    written = {}
    for how in ("one", "two"):
        result = tmp_path / f"{how}.h5"  # the HDF5 result (a video's frames)
        out = tmp_path / f"{how}.{suffix}"
        command = [a.replace("{out}", str(result)) for a in args]
        command += [*DATA, "--quiet", "--out", str(out)]
        if how == "one":
            _alone(*command, cwd=runs)
        else:
            ran = _torchrun(*command, cwd=runs)
            assert ran.returncode == 0, _told(ran.stderr)
            assert "Traceback" not in ran.stderr
        written[how] = sorted(p.name[len(how) :] for p in tmp_path.glob(f"{how}*"))
        assert result.exists()
    assert written["one"] == written["two"]  # the same figures and files, from rank 0
    assert_same_file(tmp_path / "one.h5", tmp_path / "two.h5")


def test_two_nodes_write_the_one_process_file(runs, tmp_path):
    with socket.socket() as s:  # a free port for the nodes to meet at
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _alone(*PLANE, "--quiet", "--out", str(tmp_path / "one.h5"), cwd=runs)
    args = [*PLANE, "--quiet", "--out", str(tmp_path / "two.h5")]
    nodes = [_launch(*args, cwd=runs, nodes=(rank, port)) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, _told(err)
    assert_same_file(tmp_path / "one.h5", tmp_path / "two.h5")


def _process_of_rank(job, rank, wait=60.0):
    """The pid of ``job``'s process of ``rank`` (a torchrun child), once it runs."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                environ = (stat.parent / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == job.pid and f"RANK={rank}".encode() in environ:
                return int(stat.parent.name)
        time.sleep(0.1)
    raise AssertionError(f"no process of rank {rank} within {wait} s")


def _when_evaluating(out, job, wait=120.0):
    """Once ``job``'s processes have started on the points (its rank 0 stamped the shards'
    folder) and a second more; fails if ``job`` ended first."""
    stamp, started = shard_folder(out) / "settings.key", time.time()
    deadline = time.monotonic() + wait
    while not (stamp.exists() and stamp.stat().st_mtime >= started - 0.5):
        assert job.poll() is None, job.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)


def _done(path):
    with h5py.File(path) as f:
        return int(f["fastloss/done"][()].sum()), f["fastloss/done"].size


def test_a_killed_or_stalled_process_and_the_reruns_that_finish_the_job(runs, tmp_path):
    args = ["plane", "n0.pt", "n1.pt", "n2.pt", *DATA, "--x=-1:2:400", "--y=-1:2:200"]
    args += ["--quiet", "--out", str(tmp_path / "two.h5")]
    out = tmp_path / "two.h5"

    # rank 1 killed with SIGKILL mid-run: torchrun stops rank 0; finished points stay
    job = _launch(*args, cwd=runs)
    victim = _process_of_rank(job, 1)
    _when_evaluating(out, job)
    os.kill(victim, signal.SIGKILL)
    job.communicate(timeout=120)
    assert job.returncode != 0
    killed, total = _done(out)
    assert 0 < killed < total

    # rank 1 stalled (SIGSTOP): rank 0 gives up after the timeout, with a one-line reason
    job = _launch(*args, cwd=runs, timeout="3")
    stalled = _process_of_rank(job, 1)
    keeper = _process_of_rank(job, 0)
    _when_evaluating(out, job)
    os.kill(stalled, signal.SIGSTOP)
    deadline = time.monotonic() + 120
    while Path(f"/proc/{keeper}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # rank 0 waits 3 s for rank 1, then exits
    os.kill(stalled, signal.SIGKILL)  # what torchrun would do after its own grace period
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "did not answer within 3 s ($FASTLOSS_DIST_TIMEOUT)" in err, err[-3000:]
    assert "rerun the same command" in err
    after_stall, _ = _done(out)
    assert after_stall >= killed

    # the rerun evaluates only the missing points, into the file a one-process run writes
    finished = _torchrun(*args, cwd=runs)
    assert finished.returncode == 0, _told(finished.stderr)
    assert "were done already" in finished.stdout
    _alone(*args[:-1], str(tmp_path / "one.h5"), cwd=runs)
    assert_same_file(tmp_path / "one.h5", out)
    assert not shard_folder(out).exists()


def _holds_open(pid: int, path) -> bool:
    """Whether process ``pid`` has ``path`` open (read from /proc: probing the file's
    lock ourselves could make the writer's own open fail)."""
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in folder.iterdir())
    except (FileNotFoundError, ProcessLookupError):  # a descriptor closed as we looked
        return False


def test_a_second_job_on_the_same_output_refuses_and_the_first_finishes(runs, tmp_path):
    args = ["plane", "n0.pt", "n1.pt", "n2.pt", *DATA, "--x=-1:2:200", "--y=-1:2:150"]
    args += ["--quiet", "--out", str(tmp_path / "s.h5")]
    first = subprocess.Popen(["fastloss", *args], cwd=runs, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _holds_open(first.pid, tmp_path / "s.h5"):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    # the first job is writing; stopped, it holds the file however slow the machine is
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(["fastloss", *args], cwd=runs, capture_output=True, text=True)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2 and "locked by another process" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, _told(err)
    done, total = _done(tmp_path / "s.h5")
    assert done == total


def test_commands_that_do_not_share_their_points_refuse_under_torchrun(runs):
    result = _torchrun("info", cwd=runs)
    assert result.returncode != 0
    assert "fastloss info does not run under torchrun (those that do: plane, line" in result.stderr
