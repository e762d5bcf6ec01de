"""Every command's ``--quiet`` and ``--json``: both on every parser, and ``--json`` prints one
JSON object on stdout and nothing else, the summary's figures on success and
``{"error", "command"}`` with status 2 on an error.

The commands run in this process (`fastloss.cli.main.main`) on tiny networks (MLPs of width
8 on 240 samples of a data set written here), but for one that shows a real process
behaves the same."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from string import Template

import numpy as np
import pytest

from fastloss.cli.main import build_parser, main

DATA = "--data $root/data.npz"
XY = "--x 0:1:2 --y 0:1:2"
SURFACE = {"out", "files", "points", "evaluated", "seconds", "points_per_second", "metrics"}
SCORES = {"acc", "nll", "ece", "brier"}


def leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by name (``curve eval``), walked as `sharded_commands` does."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:  # argparse keeps no public list of subcommands
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
        if parser.get_default("run") is not None:
            found[prefix] = parser

    walk(build_parser(), "")
    return found


def test_every_command_lists_quiet_and_json_in_its_help():
    parsers = leaf_parsers()
    assert {"plane", "curve eval", "ensemble eval", "mpo bn-experiment", "info"} <= set(parsers)
    for name, parser in parsers.items():
        text = parser.format_help()
        assert "--quiet" in text and "--json" in text, name
        assert parser.get_default("name") == name  # what the JSON object's "command" says


def run_json(argv: list[str], capsys) -> dict:
    """Run ``argv`` with ``--json``: status 0, and stdout is one line, a JSON object."""
    status = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 1 and captured.out.endswith("\n"), captured.out
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def command_line(template: str, root: Path, out: Path) -> list[str]:
    return Template(template).substitute(root=root, out=out).split()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Trained networks, a fitted curve, a SWAG file, an MPO plane and a surface."""
    root = tmp_path_factory.mktemp("output")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(240, 12)).astype(np.float32), rng.integers(0, 4, 240)
    np.savez(root / "data.npz", x=x, y=y)
    for template in [
        *(f"train --widths 8 {DATA} --epochs 1 --seed {s} --out $root/m{s}.pt" for s in range(3)),
        f"plane $root/m0.pt $root/m1.pt $root/m2.pt {DATA} {XY} --out $root/plane.h5",
        f"curve fit $root/m0.pt $root/m1.pt {DATA} --epochs 1 --save-every 2 --out $root/fit",
        f"swag collect --widths 8 {DATA} --epochs 2 --swa-start 1 --out $root/swag",
        f"mpo fit random:0.5 --size 3 --widths 8 {DATA} --steps 2 --out $root/mpo",
        f"vnet train --widths 8 {DATA} --epochs 1 --samples 2 --out $root/vnet",
    ]:
        assert main([*command_line(template, root, root), "--quiet"]) == 0, template
    return root


# The command, and the keys its JSON object has besides "command".
COMMANDS = {
    "info": ("info", {"version", "torch", "kernels", "cpu", "threads", "gpus"}),
    "train": (
        f"train --widths 8 {DATA} --epochs 1 --out $out/m.pt",
        {"out", "files", "model", "data", "train_loss", "train_acc", "test_loss", "test_acc"},
    ),
    "plane": (f"plane $root/m0.pt $root/m1.pt $root/m2.pt {DATA} {XY} --out $out/s.h5", SURFACE),
    "line": (f"line $root/m0.pt $root/m1.pt {DATA} --x 0:1:3 --out $out/l.h5", SURFACE),
    "plot": ("plot $root/plane.h5 --out $out/p.png --metric test_loss", {"out", "files"}),
    "profile": (
        f"profile $root/m0.pt {DATA} --x -1:1:3 --points 2 --top 2",
        {"model", "parameters", "points", "device", "dtypes"},
    ),
    "curve fit": (
        f"curve fit $root/m0.pt $root/m1.pt {DATA} --epochs 1 --out $out/fit",
        {"out", "files", "curve", "kind", "bends", "steps", "seconds", "train_loss"},
    ),
    "curve eval": (
        f"curve eval $root/fit/curve.pt {DATA} --points 3 --out $out/c.h5",
        {"out", "files", "curve", "points", "seconds", "metrics"},
    ),
    "curve plane": (
        f"curve plane $root/fit/curve.pt {DATA} {XY} --out $out/cp.h5",
        SURFACE | {"x", "y", "plane"},
    ),
    "video": (
        f"video $root/fit {DATA} --resolution 3 --out $out/v.mp4",
        {"out", "files", "points", "evaluated", "seconds", "frames", "size"},
    ),
    "mpo fit": (
        f"mpo fit random:0.5 --size 3 --widths 8 {DATA} --steps 2 --out $out/mpo",
        {"out", "files", "pattern", "cells", "steps", "seconds", "s"},
    ),
    "mpo eval": (
        f"mpo eval $root/mpo/plane.pt {DATA} --out $out/pattern.h5",
        {"out", "files", "pattern", "cells", "s", "train", "test"},
    ),
    "swa": (
        f"swa --widths 8 {DATA} --epochs 2 --swa-start 1 --out $out/swa",
        {"out", "files", "averaged", "sgd", "swa"},
    ),
    "swag collect": (
        f"swag collect --widths 8 {DATA} --epochs 2 --swa-start 1 --rank 2 --out $out/swag",
        {"out", "files", "averaged", "sgd", "swa", "swag"},
    ),
    "swag predict": (
        f"swag predict $root/swag/swag.pt {DATA} --samples 2 --out $out/bma.h5",
        {"out", "files", "samples", "swa", "ensemble", "sample_mean"},
    ),
    "fge": (
        f"fge $root/m0.pt {DATA} --cycles 2 --cycle-epochs 1 --out $out/fge",
        {"out", "files", "members", "cumulative", "ensemble"},
    ),
    "ensemble eval": (
        f"ensemble eval $root/m0.pt $root/m1.pt {DATA} --out $out/e.h5",
        {"out", "files", "members", "ensemble"},
    ),
    "width": (
        f"width $root/swag/sgd.pt $root/swag/swa.pt {DATA} --points 5 --rays 1 --out $out/w",
        {"out", "files", "distance", "basin", "rays"},
    ),
    "vnet train": (
        f"vnet train --widths 8 {DATA} --epochs 1 --samples 2 --out $out/vnet",
        {"out", "files", "kind", "epochs", "elbo", "samples", "acc", "nll"},
    ),
    "mpo bn-experiment": (
        f"mpo bn-experiment {DATA} --ps 0.5 --seeds 1 --size 3 --steps 2 --channels 1 1 1 1 1 1 "
        "--hidden 4 --batch-size 8 --cells 2 --out $out/bn",
        {"out", "files", "runs", "summary", "claim_holds"},
    ),
    "vnet eval": (
        f"vnet eval $root/vnet/vnet.pt {DATA} --samples 2 --out $out/ve",
        {"out", "files", "kind", "samples", "acc", "nll"},
    ),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_is_one_object_with_the_summary(name, root, tmp_path, capsys):
    template, keys = COMMANDS[name]
    obj = run_json(command_line(template, root, tmp_path), capsys)
    assert obj["command"] == name
    assert keys <= set(obj), keys - set(obj)
    for path in obj.get("files", []):
        assert Path(path).is_file(), path  # every file it names was written
    if {"points", "evaluated"} <= set(obj):
        assert 0 < obj["evaluated"] <= obj["points"]
    if name in ("plane", "line", "curve plane"):
        assert set(obj["metrics"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
        assert all(m["min"] <= m["max"] for m in obj["metrics"].values())
    if name in ("swag predict", "fge", "ensemble eval"):
        assert set(obj["ensemble"]) == SCORES and 0 <= obj["ensemble"]["acc"] <= 100


def test_the_human_summary_and_quiet(root, tmp_path, capsys):
    """--quiet leaves the summary lines, and --json's figures are those the lines print."""
    argv = command_line(COMMANDS["plane"][0], root, tmp_path)
    assert main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"{tmp_path}/s.h5: 4 points in ") and len(lines) == 5
    assert captured.err == ""  # no progress
    obj = run_json([*argv, "--overwrite"], capsys)
    assert obj["points"] == 4 and f"min {obj['metrics']['test_acc']['min']:.4g}" in lines[4]


def test_an_error_gives_status_2_its_line_and_the_error_object(root, tmp_path, capsys):
    argv = ["plane", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "s.h5"), "--json"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert line.startswith("fastloss plane: ") and "nope.pt" in line and "\n" not in line
    assert json.loads(captured.out) == {
        "error": line.removeprefix("fastloss plane: "),
        "command": "plane",
    }
    # a finished output: the library's overwrite=True reads as the flag, in both
    argv = command_line(COMMANDS["curve eval"][0], root, tmp_path)
    assert main([*argv, "--quiet"]) == 0
    argv[argv.index("--points") + 1] = "5"
    capsys.readouterr()
    assert main([*argv, "--json"]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out)
    assert error["command"] == "curve eval" and "--overwrite" in error["error"]
    assert captured.err.strip() == f"fastloss curve: {error['error']}"


def test_a_usage_error_with_json(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["curve", "eval", "c.pt", "--json"])
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("fastloss curve eval: the following arguments are required")
    assert json.loads(captured.out) == {
        "error": "the following arguments are required: --out; see fastloss curve eval --help",
        "command": "curve eval",
    }


def test_a_process_prints_only_the_object(root, tmp_path):
    """A real process (the console script's module): stdout is the object, stderr empty: no
    progress, no per-epoch lines, no summary."""
    argv = command_line(
        f"train --widths 8 {DATA} --epochs 2 --out $out/m.pt --json", root, tmp_path
    )
    result = subprocess.run(
        [sys.executable, "-m", "fastloss.cli", *argv], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    obj = json.loads(line)
    assert obj["command"] == "train" and obj["files"] == [str(tmp_path / "m.pt")]
