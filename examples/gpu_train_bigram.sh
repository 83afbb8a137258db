#!/usr/bin/env bash
# Train the Bigram-Backcopy toy on a GPU (15k steps of batch 128 x 256 tokens: minutes on an H100, hours on the
# 2-core CPU). Trains the committed recipe, or variants side by side (one process each, NAME=JSON overrides of the
# recipe in interp/toy/train.py), and copies back checkpoints, logs and specs (OUT defaults to out/gpu_bigram):
#   bash examples/gpu_train_bigram.sh
#   bash examples/gpu_train_bigram.sh seed0='{"seed": 0}' random='{"task_args": {"source": "random"}}'
# The runs behind the shipped checkpoint and the README's seed table: docs/gpu/bigram_sweep.log.
set -uo pipefail
OUT=${OUT:-out/gpu_bigram}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
W=/tmp/bigram_sweep; mkdir -p $W
run() {  # name, then overrides as JSON
  python3 - "$1" "$2" <<'PY' > $W/$1.out 2>&1 &
import json, sys
from pathlib import Path
import torch
torch.backends.cuda.matmul.allow_tf32 = True
from interp.toy.train import train
name, over = sys.argv[1], json.loads(sys.argv[2])
over = {"log_every": 250, "max_seconds": 540, **over}
print(train("toy-bigram-backcopy", Path("/tmp/bigram_sweep") / name, device="cuda", **over))
PY
}
[ $# -gt 0 ] || set -- recipe='{}'
for a in "$@"; do run "${a%%=*}" "${a#*=}"; done
wait
for d in $W/*/; do v=$(basename $d); cp $d/toy-bigram-backcopy.safetensors $OUT/$v.safetensors
  (echo "== $v"; cat $d/toy-bigram-backcopy.log) >> $OUT/logs.txt; cp $d/toy-bigram-backcopy.json $W/$v.json; done
tail -n 3 $W/*.out
(cd $W && tar czf $OUT/specs.tgz *.json *.out)
grep -h "eval on" $OUT/logs.txt
