#!/usr/bin/env bash
# Issue 18, round 9 (next GPU call, < 4 min): the Gluon walk with its products overlapped
# (examples/gluon_walk_probe_gpu.py), checked against float64 (three runs per variant: races would show as
# differences) and timed beside SDPA, the same walk in Triton (examples/gqa_pack_probe_gpu.py, one head per program)
# and the same Gluon kernel without the overlap, at 8k and 32k. If it wins by a margin, the statistics pass gets a
# Gluon walk for its unmasked key blocks.
#   bash examples/gpu_round9.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 200 python3 examples/gluon_walk_probe_gpu.py --n 8192 32768 2>&1 | grep -v Warning | tee "$OUT/gluon_walk.log"
