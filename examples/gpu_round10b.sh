set -uo pipefail
source examples/gpu_setup.sh
(cd examples && timeout 120 python3 host_split_gpu.py --tokens 1024 4096 2>&1 | grep -v Warn) | tee "$OUT/host_split_round10b.log"
(cd examples && timeout 150 python3 model_overhead_gpu.py --shape smollm2 --layers 30 --tokens 1024 --reps 10 \
  --top 12 2>&1 | grep -v Warning >"$OUT/model_overhead_smollm2_round10b.log")
grep -A16 "==\|host us per forward" "$OUT/model_overhead_smollm2_round10b.log" | head -40
