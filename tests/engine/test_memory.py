"""keep_freed_memory: a large block freed and allocated again is not faulted in again.

Checked in a fresh process, as the command line calls it: at its start. (Called late in a
long-lived process that has already fragmented its heap, as this test session has, the
64 MB block came fresh from the system again: see the design notes.)"""

import subprocess
import sys

import pytest

CODE = """
import resource, torch
from fastloss.engine import keep_freed_memory
assert keep_freed_memory() and keep_freed_memory()  # applies once, says so every time
def faults(value):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 << 20, dtype=torch.uint8).fill_(value)  # 64 MB: glibc would mmap it
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
first = faults(1)
print(first, faults(2))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_freed_large_block_is_reused_without_page_faults():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    first, again = (int(v) for v in result.stdout.split())
    assert first > 10_000  # 16384 pages of 4 KB: the first block comes from the system
    assert again < 1000  # the second reuses it
