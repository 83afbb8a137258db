# Sourced by the examples/gpu_round*.sh scripts (run from the repository root): OUT made absolute and created
# (default out/gpu), unbuffered Python, no hub access, interp installed in place, the GPU's name in $OUT/gpu.txt;
# swap / restore: an A/B against an earlier commit, whose kernels/*.py lie in $BEFORE/kernels (each swapped in,
# this tree's copy kept in /tmp/after until restore).
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
swap() { mkdir -p /tmp/after/kernels && for f in "$BEFORE"/kernels/*.py; do
  cp "kernels/$(basename "$f")" /tmp/after/kernels/ && cp "$f" kernels/; done; }
restore() { cp /tmp/after/kernels/*.py kernels/; }
# bench_table DTYPE TAG: the README's benchmark table (prefill 1k-128k, graph replays at 1k / 2k, decode steps
# 8k-128k) in one dtype -> $OUT/bench_DTYPE_TAG.log
bench_table() {
  timeout 280 python3 -m interp.kernels.bench --dtype "$1" --shapes 32x128/8 9x64/3 4x256/1 \
    --lengths 1024 2048 8192 32768 131072 --methods sdpa ours-none ours-all --long-lengths --per-stat-lengths \
    --flex-lengths --graph-lengths 1024 2048 --decode-lengths 8192 32768 131072 2>&1 | grep -v Warn \
    | tee "$OUT/bench_$1_$2.log"
}
# whole_models TAG: the 30-layer SmolLM2 shape and the 4-layer Llama-3-8B shape at 1k / 4k tokens with every
# statistic against the HF SDPA forward (examples/model_overhead_gpu.py) -> $OUT/model_overhead_NAME_TAG.log
whole_models() {
  for run in "smollm2 --layers 30 --tokens 1024 4096" "llama3-8b --layers 4 --tokens 1024 4096"; do
    name=${run%% *}
    (cd examples && timeout 100 python3 model_overhead_gpu.py --shape $run --reps 6 --top 8 2>&1 | grep -v Warning \
      >"$OUT/model_overhead_${name}_$1.log")
    grep -E "==|bit for bit" "$OUT/model_overhead_${name}_$1.log"
  done
}
