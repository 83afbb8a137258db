#!/usr/bin/env bash
# Issue 18, round 17 (prepared in round 16's session, which had no device time left for it), on the GPU machine:
#   PART=a bash examples/gpu_round17.sh   # (< 6 min) the kernel tests with parted walks on (INTERP_STATS_PARTS=auto:
#                                         # nearly every test call is small enough to be parted), and test_walk_parts
#   PART=b ...                            # (< 6 min) the benchmark's graph replays at 1k / 2k / 4k and 8k eager, with
#                                         # parts off, auto (4 programs per SM) and targets of 264 and 1056 programs
#   PART=c ...                            # (< 4 min) whole models at 1k / 4k, parts off / auto / off
#   PART=d ...                            # (< 10 min) after b and a pinned look showed parted calls slower (16 fences
#                                         # per thread in the combine; tickets in a fill of their own): pinned configs
#                                         # 0 / 13 and graph replays with parts off / auto / 1056 programs (twice
#                                         # auto's: a causal call's work is a triangle), decode steps against 8k /
#                                         # 128k cached keys (never measured; one program per head), and the
#                                         # parted tests
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c|d) ;; *) echo "usage: PART=a|b|c|d bash examples/gpu_round17.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  # (test_layer_batch is left out: it checks stacked calls against per-layer ones bit for bit, and a parted per-layer
  # call adds the entropy's sum in another order)
  (cd tests && INTERP_STATS_PARTS=auto timeout 330 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_kernel_triton.py test_stats_configs.py test_walk_runs.py test_kernel_awkward.py test_walk_parts.py) \
    2>&1 | tail -15 | tee "$OUT/tests_parts_round17.log"
fi
if [ "$PART" = b ]; then
  for parts in off auto 264 1056; do
    echo "# INTERP_STATS_PARTS=$parts"
    INTERP_STATS_PARTS=$parts timeout 80 python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 \
      --lengths 8192 --methods sdpa ours-all --long-lengths --per-stat-lengths --flex-lengths \
      --graph-lengths 1024 2048 4096 | grep "^|"
  done 2>&1 | tee "$OUT/bench_parts_round17.log"
fi
if [ "$PART" = c ]; then
  cd examples
  for parts in off auto off; do
    echo "# INTERP_STATS_PARTS=$parts"
    INTERP_STATS_PARTS=$parts timeout 70 python3 model_overhead_gpu.py --shape smollm2 --layers 30 \
      --tokens 1024 4096 --reps 6 --top 1 2>&1 | grep -E "=="
  done 2>&1 | tee "$OUT/model_parts_round17.log"
fi
if [ "$PART" = d ]; then
  (cd examples
   for parts in off auto 1056; do for s in 9x64/3 4x256/1; do
     echo "# INTERP_STATS_PARTS=$parts $s"
     INTERP_STATS_PARTS=$parts timeout 100 python3 stats_configs_gpu.py --graph --shape $s --lengths 1024 2048 \
       --stats all --configs 0 13 2>&1 | grep -v Warn
   done; done) 2>&1 | tee "$OUT/parts_pinned_round17b.log"
  for parts in off auto 1056; do
    echo "# INTERP_STATS_PARTS=$parts"
    INTERP_STATS_PARTS=$parts timeout 110 python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 --lengths \
      --long-lengths --methods sdpa ours-none ours-all --graph-lengths 1024 2048 4096 --decode-lengths 8192 131072 \
      | grep "^|"
  done 2>&1 | tee "$OUT/bench_parts_round17b.log"
  (cd tests && INTERP_STATS_PARTS=auto timeout 120 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_walk_parts.py test_kernel_triton.py) 2>&1 | tail -15 | tee "$OUT/tests_parts_round17b.log"
fi
