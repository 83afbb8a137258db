#!/usr/bin/env bash
# Everything the GPU is needed for, in one command (for the `device` tool or any CUDA machine):
# kernel tests on real hardware (the 1M-token check included), which SDPA ops run, the long-context model check,
# and the benchmark tables.
#   bash examples/gpu_suite.sh [bench args...]      # logs under ${OUT:-out/gpu}; STEP=tests|sdpa|model|bench|all
set -uo pipefail
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
STEP=${STEP:-all}
if [ "$STEP" = all ] || [ "$STEP" = tests ]; then
  (cd tests && INTERP_AUTOTUNE=0 timeout 400 python3 -m pytest -q -p no:cacheprovider -n 8 -m "slow or not slow" \
     --durations=5 test_kernel_triton.py test_kernel_reference.py test_stats_configs.py test_kernel_awkward.py 2>&1 | tee "$OUT/tests.log" | tail -12)
fi
if [ "$STEP" = all ] || [ "$STEP" = sdpa ]; then
  timeout 120 python3 examples/sdpa_ops.py 2>&1 | tee "$OUT/sdpa_ops.log"
fi
if [ "$STEP" = all ] || [ "$STEP" = model ]; then
  timeout 240 python3 examples/long_context_gpu.py --tokens 32768 --layers 4 2>&1 | grep -v Warning | tee "$OUT/long_context.log"
fi
if [ "$STEP" = all ] || [ "$STEP" = bench ]; then
  timeout 560 python3 -m interp.kernels.bench --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
fi
