#!/usr/bin/env bash
# Everything that needs a CUDA device, in one go (a lent GPU machine is held for minutes, not hours):
# build the CUDA ops, run the tests marked `gpu`, then the GPU benchmarks. Each step has its own time
# limit and a failing step does not stop the next; the log goes to $OUT/gpu_check.log.
#
#   make gpu-check                       (uses .venv)
#   PY=python3 OUT=/tmp/out bash benchmarks/gpu_check.sh     (a machine whose python has torch + deps)
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export FEWSHOT_HOME=${FEWSHOT_HOME:-/tmp/fewshot-gpu-check}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
SUMMARY=()

step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "=== $name" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  SUMMARY+=("$(printf '%-12s rc=%-3s %4ss' "$name" "$rc" "$(( $(date +%s) - start ))")")
}

step machine 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; \
  $PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
# The CPU ops too: the CPU side of the CPU-vs-GPU tests uses them.
step build 300 $PY -c "
import time
from fewshot.cuda import build
for kind in ('cuda', 'cpu'):
    t0 = time.time()
    s = build.get_state(kind)
    print(kind, s.status, f'{time.time() - t0:.0f} s', (s.reason or '')[-1500:])"
step doctor 60 $PY -m fewshot doctor
step tests 300 $PY -m pytest -q -p no:cacheprovider -m gpu tests/
# The figures BENCHMARKS.md's GPU section does not have yet (GPU_BENCH=all adds the ones it has, GPU_BENCH=none
# runs the tests alone).
# Issue 26's same-GPU side by side: the official stylegan2-ada-pytorch (its own CUDA plugins, built here) against
# fewshot at 256 px paper256 and 1024 px, training and sampling. It needs an official checkout: fetch
# NVlabs/stylegan2-ada-pytorch, `git clone` it into the ignored .upstream/sg2ada and name that folder in the device
# tool's carry list; without it the script says so and the step passes.
export FEWSHOT_OFFICIAL_SG2ADA=${FEWSHOT_OFFICIAL_SG2ADA:-$PWD/.upstream/sg2ada}
[ "${GPU_BENCH:-}" = none ] || step official 240 $PY benchmarks/official_side_by_side.py --device cuda --rounds 2
[ "${GPU_BENCH:-}" = none ] || step train_256 150 $PY benchmarks/train_step.py --device cuda --repeats 3 --only 256px --ops compiled
[ "${GPU_BENCH:-}" = none ] || step metrics 90 $PY benchmarks/metrics.py --device cuda --n 512 --batch 64
[ "${GPU_BENCH:-}" = none ] || step reg_dgm 90 $PY benchmarks/reg_dgm.py --device cuda --steps 20 --resolution 256 --batch 16
if [ "${GPU_BENCH:-}" = all ]; then
  step ops 120 $PY benchmarks/ops.py --device cuda --repeats 20
  step sample 180 $PY benchmarks/sample.py --device cuda --images 512 --batches 1,8,32,64
  step train_step 300 $PY benchmarks/train_step.py --device cuda --repeats 5
  step reg_dgm32 120 $PY benchmarks/reg_dgm.py --device cuda --steps 20
fi

echo "=== summary" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
