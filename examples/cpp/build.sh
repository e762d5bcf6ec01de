#!/usr/bin/env bash
# Builds libfastloss and the C++ example with CMake against the libtorch inside the installed
# torch wheel, then runs the example. Usage: examples/cpp/build.sh [build-dir]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build-cmake}"
prefix="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
args=(-DCMAKE_PREFIX_PATH="$prefix")
if python -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
  # A CUDA build of torch needs the toolkit, and the NVRTC that its wheel brought along.
  args+=(-DCUDA_TOOLKIT_ROOT_DIR="${CUDA_HOME:-/usr/local/cuda}")
  nvrtc="$(python - <<'PY'
import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
print(next(iter(sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib", "libnvrtc.so*")))), ""))
PY
)"
  [ -n "$nvrtc" ] && args+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
fi
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build" "${generator[@]}" "${args[@]}"
cmake --build "$build" -j"${MAX_JOBS:-2}"
"$build/fastloss_example"
