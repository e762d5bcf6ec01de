"""The documented standalone C++ build (CMakeLists.txt via examples/cpp/build.sh) works."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_build_and_cpp_example(tmp_path):
    result = subprocess.run(
        [os.path.join(ROOT, "examples", "cpp", "build.sh"), str(tmp_path / "build")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fastloss::subspace_linear from C++: output [5, 8, 4]" in result.stdout
