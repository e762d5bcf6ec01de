"""The progress bar: tqdm's bar on a terminal, a few plain lines anywhere else (a log, a
pipe), and every long loop goes through it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastloss.engine import progress_bar
from fastloss.engine.progress import interval

LINE = re.compile(r"^(?P<desc>[\w ]+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\)")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_of(text: str) -> list[str]:
    """The log's lines: each newline-terminated, none with a carriage return."""
    assert "\r" not in text and text.endswith("\n"), repr(text)
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    return lines


def test_many_quick_updates_in_a_log_are_one_line(monkeypatch):
    monkeypatch.delenv("FASTLOSS_PROGRESS_INTERVAL", raising=False)
    log = io.StringIO()
    bar = progress_bar(2000, 0, desc="plane", file=log)
    for _ in range(2000):
        bar.update(1)
        bar.set_postfix_str("frame 1/2")  # refreshes at once on a terminal; here it waits
    bar.close()
    (line,) = lines_of(log.getvalue())
    assert line.startswith("plane: 2000/2000 pt (100%) ") and line.endswith(", frame 1/2")
    assert " pt/s, in " in line


def test_a_log_gets_a_line_per_interval_and_one_at_the_end(monkeypatch):
    monkeypatch.setenv("FASTLOSS_PROGRESS_INTERVAL", "0.1")
    log = io.StringIO()
    start = time.perf_counter()
    with progress_bar(40, 10, desc="fit curve", unit="step", file=log) as bar:
        for _ in range(30):
            time.sleep(0.02)
            bar.update(1)
            bar.set_postfix(loss="0.1234", refresh=False)
    seconds = time.perf_counter() - start
    lines = lines_of(log.getvalue())
    assert 2 <= len(lines) <= seconds / 0.1 + 1
    parsed = [LINE.match(line) for line in lines]
    counts = [int(m["n"]) for m in parsed if m]
    assert counts == sorted(counts) and counts[-1] == 40 and len(set(counts)) == len(counts)
    assert all(" left, loss=0.1234" in line for line in lines[:-1])
    assert lines[-1].startswith("fit curve: 40/40 step (100%) ") and " in " in lines[-1]


def test_a_terminal_keeps_tqdms_bar():
    screen = Terminal()
    with progress_bar(50, 0, desc="plane", file=screen) as bar:
        for _ in range(50):
            bar.update(1)
    text = screen.getvalue()
    assert "\r" in text and "|" in text and "50/50" in text


def test_disabled_bars_write_nothing():
    log = io.StringIO()
    with progress_bar(10, 0, enabled=False, file=log) as bar:
        bar.update(5)
    assert log.getvalue() == ""


def test_the_interval_from_the_environment(monkeypatch):
    for text, seconds in [("2.5", 2.5), ("0", 0.0), ("", 10.0), ("soon", 10.0), ("-1", 10.0)]:
        monkeypatch.setenv("FASTLOSS_PROGRESS_INTERVAL", text)
        assert interval() == seconds


def test_a_command_piped_to_a_log(tmp_path):
    """stderr a pipe: the engine's bar writes its last line and no carriage returns."""
    code = (
        "import torch\n"
        "from fastloss import Grid, Plane, evaluate\n"
        "nets = [torch.nn.Sequential(torch.nn.Linear(4, 3)) for _ in range(3)]\n"
        "data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))\n"
        "evaluate(nets[0], Plane.through(*nets), Grid(x=(0, 1, 6), y=(0, 1, 5)), train=data)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    lines = lines_of(result.stderr)
    assert lines[-1].startswith("fastloss: 30/30 pt (100%)")


def test_every_bar_is_progress_bar():
    """No module makes a tqdm of its own: those would draw frames into logs again."""
    package = Path(__file__).parents[2] / "fastloss"
    users = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if "tqdm" in path.read_text()
    ]
    assert users == ["engine/progress.py"]


@pytest.mark.parametrize("total", [0, 3])
def test_a_bar_with_nothing_left_to_do(total):
    log = io.StringIO()
    with progress_bar(total, total, desc="plane", file=log):
        pass
    (line,) = lines_of(log.getvalue())
    assert line.startswith(f"plane: {total}/{total} pt (")
