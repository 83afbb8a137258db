#!/usr/bin/env bash
# Issue 18, round 6, one GPU call (< 10 min): the statistics kernel's config tests (the two one-warpgroup configs
# of round 6 included), where a wrapped model's statistics time goes (host syncs, host ops, kernels), fp16 and bf16
# benchmarks side by side with SDPA with the configs the autotuner picked, CUDA graphs on the Llama-3-8B shape.
#   bash examples/gpu_round6.sh            # logs under ${OUT:-out/gpu}
#   LENGTHS="1024 8192" DTYPES=float16 GRAPHS=0 bash examples/gpu_round6.sh   # a shorter call
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
export INTERP_STATS_TRIAL_CONFIGS=1  # round 6's two trial configs in kernels/triton_stats.py
(cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 test_stats_configs.py test_graphs.py 2>&1 \
  | tail -4 | tee "$OUT/tests_configs.log")
(cd examples && timeout 100 python3 model_overhead_gpu.py --tokens ${MODEL_TOKENS:-1024 4096} --reps 10 2>&1 | grep -v Warning \
  >"$OUT/overhead.log"; grep -E "^==|sync|File|CUDA runtime" "$OUT/overhead.log" | head -30)
for dt in ${DTYPES:-float16 bfloat16}; do
  timeout 120 python3 -c "
import sys
from interp.kernels import bench, launcher
bench.main(sys.argv[1:])
for key, c in launcher._tuned.items():
    print('tuned', key[0], key[1], c)
" --dtype $dt --shapes 32x128/8 --lengths ${LENGTHS:-1024 8192 32768} --methods sdpa ours-query ours-all \
    --per-stat-lengths --long-lengths --flex-lengths 2>&1 | grep -v Warning | tee "$OUT/bench_$dt.log" | tail -12
done
[ "${GRAPHS:-1}" = 0 ] || (cd examples && timeout 100 python3 cuda_graphs_gpu.py --tokens 1024 --model-tokens 1024 4096 \
  --model-shape llama3-8b --reps 50 2>&1 | grep -v Warning | tee "$OUT/graphs_llama.log")
