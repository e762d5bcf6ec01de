#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one command from the repo root:
# build the extension there (CPU + CUDA kernels for the visible GPU), run the whole test suite
# (CUDA parity tests included), run the GPU benchmarks, and leave the results in
# bench/results/ and, when the device tool's $OUT is set, in $OUT for fetching.
#
#   bash bench/gpu_session.sh            # on the GPU machine
# The GPU image lacks mnist1d and imageio(-ffmpeg): first, here,
# `pip download --no-deps -d .whl mnist1d imageio imageio-ffmpeg`, then
# call the device tool with carry=[".whl"] (see the device tool's README).
set -uo pipefail
export PYTHONUNBUFFERED=1
results="${OUT:-bench/results}"
mkdir -p "$results" bench/results
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

start=$(date +%s)
MAX_JOBS="${MAX_JOBS:-16}" python3 -m pip install -q --no-build-isolation --no-deps -e . \
  >"$results/gpu-build.log" 2>&1 || { tail -40 "$results/gpu-build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
python3 -m fastloss.cli info | tee "$results/gpu-info.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$results/gpu-info.txt"

python3 -m pytest -q -x tests --deselect tests/test_cmake_build.py 2>&1 | tee "$results/gpu-tests.log" | tail -15
python3 bench/bench_ops.py --device cuda --out bench/results/ops-gpu.json 2>&1 | tail -60
python3 bench/bench_grid.py --device cuda --out bench/results/grid-gpu.json 2>&1 | tail -12
python3 bench/bench_curve.py --device cuda --out bench/results/curve-gpu.json 2>&1 | tail -8
python3 bench/bench_mpo.py --device cuda --out bench/results/mpo-gpu.json 2>&1 | tail -8
python3 bench/bench_ensemble.py --device cuda --out bench/results/ensemble-gpu.json 2>&1 | tail -8
python3 bench/bench_vnet.py --device cuda --out bench/results/vnet-gpu.json 2>&1 | tail -8
cp bench/results/{ops,grid,curve,mpo,ensemble,vnet}-gpu.json "$results/" 2>/dev/null || true
