#!/usr/bin/env bash
# Issue 18, round 7, one GPU call (< 10 min): the key-by-query (TRANSPOSE) statistics tiles of
# kernels/triton_stats_t.py against the configs the autotuner has, each pinned and checked against the reference;
# the kernel config tests with them forced; then fp16 and bf16 benchmarks with the autotuner free to pick them.
#   bash examples/gpu_round7.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
export INTERP_STATS_TRIAL_CONFIGS=1  # the trial configs in kernels/triton_stats.py
timeout ${CONFIG_SECONDS:-240} python3 examples/stats_configs_gpu.py --lengths ${CONFIG_LENGTHS:-8192 32768} \
  --configs ${CONFIGS:-0 2 10 11 12 13 14} --stats all 2>&1 | grep -v Warning | tee "$OUT/stats_configs.log"
(cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider -n 8 test_stats_configs.py test_graphs.py 2>&1 \
  | tail -4 | tee "$OUT/tests_configs.log")
for dt in ${DTYPES:-float16 bfloat16}; do
  timeout ${BENCH_SECONDS:-80} python3 -c "
import sys
from interp.kernels import bench, launcher
bench.main(sys.argv[1:])
for key, c in launcher._tuned.items():
    print('tuned', key[0], key[1], c)
" --dtype $dt --shapes 32x128/8 --lengths ${LENGTHS:-1024 8192 32768} --methods sdpa ours-none ours-query ours-all \
    --per-stat-lengths --long-lengths --flex-lengths 2>&1 | grep -v Warning | tee "$OUT/bench_$dt.log" | tail -12
done
