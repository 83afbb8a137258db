#!/usr/bin/env bash
# Issue 18, round 15: what each of this round's kernel changes does on the H100, each kernel's own device time
# (examples/kernel_profile_gpu.py, torch.profiler), four kernel trees side by side on one machine:
#   base   d054029's kernels (= f497711's, round 13's)
#   tw     f7647ef: round 14's masked-block trims + the unmasked window interior for wide windows only
#   sink   363e370: + the sink-mass walk in 16-key blocks
#   fold   7cdc86c: + the key-by-query walk's argmax from the pair's max (slower on the H100: reverted in a56536e)
# on causal 32x128 GQA 32/8 (8k / 32k config 0, 2k config 0, 1k / 2k config 10) and the bundled models' shapes
# (4x256 MQA config 1, 9x64 GQA 9/3 config 0), in the order $TREES (default: base tw sink fold base).
#   bash examples/gpu_round15.sh prep      # here (git): .exp/r15/<tree>/kernels from the commits above
#   bash examples/gpu_round15.sh run       # on the GPU machine, with carry=[".exp/r15"]; logs under ${OUT:-out/gpu}
#   bash examples/gpu_round15.sh check     # on the GPU machine (this tree): the kernel tests, 1M tokens, and where
#                                          # a sliding window's unmasked interior starts to pay (WIDE_WINDOW)
set -uo pipefail
cd "$(dirname "$0")/.."
declare -A COMMIT=([base]=d054029 [tw]=f7647ef [sink]=363e370 [fold]=7cdc86c)
if [ "${1:-}" = prep ]; then
  set -e
  for t in base tw sink fold; do
    rm -rf ".exp/r15/$t" && mkdir -p ".exp/r15/$t/kernels"
    for f in $(git ls-tree --name-only "${COMMIT[$t]}" kernels/ | grep '\.py$'); do
      git show "${COMMIT[$t]}:$f" >".exp/r15/$t/$f"
    done
  done
  echo "built .exp/r15/{base,tw,sink,fold}/kernels"
  exit 0
fi
if [ "${1:-}" = check ]; then
  source examples/gpu_setup.sh
  (cd tests && timeout 330 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_kernel_triton.py \
    test_stats_configs.py test_walk_runs.py test_layer_batch.py test_kernel_awkward.py 2>&1 \
    | grep -E "FAILED|passed|failed|error" | tail -15) | tee "$OUT/tests_round15.log"
  (cd tests && timeout 150 python3 -m pytest -q -p no:cacheprovider -m "gpu and slow" -k million_tokens -rA \
    --tb=short test_kernel_triton.py 2>&1 | grep -E "PASSED|FAILED|passed|failed|error" | tail -5) \
    | tee "$OUT/million_round15.log"
  (cd examples  # each window both ways: every block masked (narrow) or an unmasked interior run (wide)
   for w in 1024 2048; do
     for kind in narrow wide; do
       echo "-- window $w as $kind"
       [ $kind = wide ] && min=1 || min=1000000000
       INTERP_WIDE_WINDOW=$min timeout 100 python3 kernel_profile_gpu.py --reps 10 --window $w --tokens 8192 32768 \
         --config 0 2>&1 | grep -E "GQA|^N=|attention_(stats|fwd)_kernel"
       INTERP_WIDE_WINDOW=$min timeout 100 python3 kernel_profile_gpu.py --reps 10 --shape 4x256/1 --window $w \
         --tokens 8192 --config 1 2>&1 | grep -E "GQA|^N=|attention_(stats|fwd)_kernel"
     done
   done) 2>&1 | tee "$OUT/window_kind_round15.log"
  exit 0
fi
[ "${1:-}" = run ] || { echo "usage: bash examples/gpu_round15.sh prep|run|check" >&2; exit 2; }
[ -d .exp/r15/fold/kernels ] || { echo "no .exp/r15: run 'prep' here first and pass carry=[\".exp/r15\"]" >&2; exit 2; }
source examples/gpu_setup.sh
mkdir -p /tmp/r15keep && cp kernels/*.py /tmp/r15keep/
trap 'rm -f kernels/*.py; cp /tmp/r15keep/*.py kernels/' EXIT  # this tree's kernels back, whatever happens
prof() {  # $1: tree; SDPA's and the call's device time, and the statistics kernel's, per length
  rm -f kernels/*.py && cp ".exp/r15/$1/kernels/"*.py kernels/
  echo "== $1"
  (cd examples
   run() { timeout 100 python3 kernel_profile_gpu.py --reps 10 "$@" 2>&1 | grep -E "GQA|^N=|attention_stats_kernel"; }
   run --tokens 8192 32768 --config 0
   run --tokens 2048 --config 0
   run --tokens 1024 2048 --config 10
   run --shape 4x256/1 --tokens 8192 32768 --config 1
   run --shape 9x64/3 --tokens 8192 --config 0)
}
for t in ${TREES:-base tw sink fold base}; do prof "$t"; done 2>&1 | tee "$OUT/variants_round15.log"
