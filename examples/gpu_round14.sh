#!/usr/bin/env bash
# Issue 18, round 14's first call: which half of 6b5f773 slowed the all-masked (windowed, padded) walks in round 13?
# Four kernel trees, each kernel's own device time (examples/kernel_profile_gpu.py, torch.profiler):
#   base   f497711's kernels (today's)
#   trims  + the masked-block trims (causal visibility in one compare; p * max(t, -1e30) for the entropy)
#   split  + an unmasked run for a sliding window's interior (triton_forward._walk_bounds)
#   both   + both (= 6b5f773's kernels: prep checks it)
# on a 512 and a 4096 window, a padded call and plain causal calls, in the order $TREES (default: base trims split
# both base; 5 profiler runs per tree at ~10-15 s each on an H100 in round 13, so about 6 min: pass fewer trees,
# e.g. TREES="base trims base", to split it over two calls).
#   bash examples/gpu_round14.sh prep      # here (git, patch): .exp/r14/<tree>/kernels from f497711 and the patches
#   bash examples/gpu_round14.sh run       # on the GPU machine, with carry=[".exp/r14"]; logs under ${OUT:-out/gpu}
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = prep ]; then
  set -e
  files=$(git ls-tree --name-only f497711 kernels/ | grep '\.py$')
  for t in base trims split both; do
    rm -rf ".exp/r14/$t" && mkdir -p ".exp/r14/$t/kernels"
    for f in $files; do git show "f497711:$f" >".exp/r14/$t/$f"; done
  done
  P="patch --batch --forward --no-backup-if-mismatch -s -p1"
  $P -d .exp/r14/trims <docs/gpu/r14_trims.patch
  $P -d .exp/r14/split <docs/gpu/r14_split.patch
  $P -d .exp/r14/both <docs/gpu/r14_trims.patch && $P -d .exp/r14/both <docs/gpu/r14_split.patch
  for f in $files; do git show "6b5f773:$f" | cmp -s - ".exp/r14/both/$f" || { echo "both/$f differs from 6b5f773" >&2; exit 1; }; done
  echo "built .exp/r14/{base,trims,split,both}/kernels (both = 6b5f773's kernels)"
  exit 0
fi
[ "${1:-}" = run ] || { echo "usage: bash examples/gpu_round14.sh prep|run" >&2; exit 2; }
[ -d .exp/r14/both/kernels ] || { echo "no .exp/r14: run 'prep' here first and pass carry=[\".exp/r14\"]" >&2; exit 2; }
source examples/gpu_setup.sh
mkdir -p /tmp/r14keep && cp kernels/*.py /tmp/r14keep/
trap 'cp /tmp/r14keep/*.py kernels/' EXIT  # this tree's kernels back, whatever happens
prof() {  # $1: tree; one line per kernel and call
  cp ".exp/r14/$1/kernels/"*.py kernels/
  echo "== $1"
  (cd examples
   run() { timeout 100 python3 kernel_profile_gpu.py --reps 10 "$@" 2>&1 | grep -E "GQA|^N=.* all|attention_(stats|fwd)_kernel"; }
   run --window 512 --tokens 8192 32768 --config 0
   run --shape 4x256/1 --window 512 --tokens 8192 --config 1
   run --window 4096 --tokens 32768 --config 0
   run --pad 100 --tokens 8192 --config 0
   run --tokens 8192 32768 --config 0)
}
for t in ${TREES:-base trims split both base}; do prof "$t"; done 2>&1 | tee "$OUT/variants_round14.log"
