#!/usr/bin/env bash
# Issue 18's short-input targets on one GPU, in one call (logs under ${OUT:-out/gpu}):
#   1. host vs device time of single attention calls at 1k and 2k tokens (examples/short_calls_gpu.py)
#   2. a whole wrapped model with every statistic against the HF SDPA forward: 30 SmolLM2-shaped layers at 1k and
#      4k tokens, 4 Llama-3-8B-shaped layers at 1k and 4k (examples/long_context_gpu.py)
#   bash examples/gpu_short.sh
set -uo pipefail
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import interp" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1
timeout 150 python3 examples/short_calls_gpu.py --shape 32x128/8 --tokens 1024 2048 --reps 300 --top 6 \
  2>&1 | grep -v -e Warning -e USDT | tee "$OUT/short_calls.log"
for run in "smollm2 30 1024 20" "smollm2 30 4096 10" "llama3-8b 4 1024 20" "llama3-8b 4 4096 10"; do
  set -- $run
  timeout 120 python3 examples/long_context_gpu.py --shape "$1" --layers "$2" --tokens "$3" --reps "$4" \
    --parity-tokens 1024 2>&1 | grep -v Warning | tee "$OUT/model_$1_$3.log" | grep -E "model:|SDPA|statistics|logits"
done
