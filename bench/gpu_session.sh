#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one command from the repo root, within
# the device tool's 10 minutes per command:
#   1. build the extension there (CPU + CUDA kernels for the visible GPU);
#   2. the CUDA tests first (pytest tests/ops -k cuda: every CUDA case has "cuda" in its id),
#      under CUDA_LAUNCH_BLOCKING=1 so that a failing kernel is named at its launch;
#   3. compute-sanitizer memcheck (then racecheck) on one small call of every kernel variant
#      (bench/sanitize_kernels.py);
#   4. the rest of the tests (not the slow reproductions, which use no GPU);
#   5. the GPU benchmarks.
# Each step runs under `timeout`, capped by what is left of $SESSION_SECONDS, and prints its
# wall time, so one hung step cannot eat the others' time. Results go to bench/results/;
# when the device tool's $OUT is set, the logs go there, with the results in one archive.
#
#   bash bench/gpu_session.sh            # on the GPU machine
# The GPU image lacks mnist1d and imageio(-ffmpeg): first, here,
# `pip download --no-deps -d .whl mnist1d imageio imageio-ffmpeg`, then
# call the device tool with carry=[".whl"] (see the device tool's README).
set -uo pipefail
export PYTHONUNBUFFERED=1
results="${OUT:-bench/results}"
mkdir -p "$results" bench/results
budget="${SESSION_SECONDS:-570}"
session_start=$(date +%s)
summary=()
finish() {
  printf '%s\n' "${summary[@]}"
  # The device tool brings back at most 8 files from $OUT: the six logs, and the benchmark
  # results as one archive.
  if [[ -n ${OUT:-} ]] && compgen -G "bench/results/*-gpu.json" >/dev/null; then
    (cd bench/results && tar -czf "$OUT/gpu-bench-results.tgz" ./*-gpu.json)
  fi
}
trap finish EXIT

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

# step NAME CAP COMMAND: runs COMMAND (a string, through bash with pipefail) for at most CAP
# seconds, or what is left of the budget if less, and prints its exit status and wall time.
step() {
  local name=$1 cap=$2 command=$3
  local left=$((budget - ($(date +%s) - session_start)))
  ((cap > left)) && cap=$left
  if ((cap < 15)); then
    summary+=("step ${name}: skipped, ${left} s of ${budget} s left")
    echo "== ${summary[-1]}"
    return 124
  fi
  echo "== step ${name}: at most ${cap} s"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$cap" bash -o pipefail -c "$command"
  rc=$?
  local how="rc ${rc}"
  ((rc == 124 || rc == 137)) && how="TIMED OUT after ${cap} s"
  summary+=("step ${name}: ${how}, $(($(date +%s) - t0)) s wall")
  echo "== ${summary[-1]}"
  return "$rc"
}

step build 300 "MAX_JOBS=${MAX_JOBS:-16} python3 -m pip install -q --no-build-isolation --no-deps -e . \
  >'$results/gpu-build.log' 2>&1 || { tail -40 '$results/gpu-build.log'; exit 1; }" || exit 1
step info 30 "python3 -m fastloss.cli info | tee '$results/gpu-info.txt'
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv \
    | tee -a '$results/gpu-info.txt'
  python3 -c 'import sys, torch; from fastloss.ops import build_info
sys.exit(None if torch.cuda.is_available() and build_info()[\"cuda\"]
         else \"no GPU visible, or fastloss built without CUDA kernels\")'" || exit 1

# pytest-timeout (in the GPU image) stops a single hung test rather than the whole step.
per_test=""
python3 -c "import pytest_timeout" 2>/dev/null && per_test="--timeout=120"

step cuda-tests 200 "CUDA_LAUNCH_BLOCKING=1 python3 -m pytest -q -p no:cacheprovider $per_test \
  tests/ops -k cuda 2>&1 | tee '$results/gpu-tests-cuda.log' | tail -40"

sanitizer=$(command -v compute-sanitizer || true)
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
  /usr/local/cuda/bin/compute-sanitizer; do
  [[ -z $sanitizer && -x $candidate ]] && sanitizer=$candidate
done
if [[ -n $sanitizer ]]; then
  # Under gVisor compute-sanitizer has refused the device ("Device not supported"): the
  # step then fails with that message and the session goes on.
  for tool in memcheck racecheck; do
    step "$tool" 100 "'$sanitizer' --tool $tool --error-exitcode 1 --print-limit 20 \
      python3 bench/sanitize_kernels.py 2>&1 | tee '$results/gpu-$tool.log' | tail -30"
  done
else
  summary+=("step memcheck: skipped, compute-sanitizer not found")
  echo "== ${summary[-1]}"
fi

step other-tests 150 "python3 -m pytest -q -p no:cacheprovider $per_test tests -k 'not cuda' \
  -m 'not slow' --deselect tests/test_cmake_build.py 2>&1 \
  | tee '$results/gpu-tests-other.log' | tail -15"

step bench-ops 120 "python3 bench/bench_ops.py --device cuda --out bench/results/ops-gpu.json \
  2>&1 | tail -60"
for bench in grid curve mpo ensemble vnet; do
  step "bench-$bench" 60 "python3 bench/bench_$bench.py --device cuda \
    --out bench/results/$bench-gpu.json 2>&1 | tail -12"
done
