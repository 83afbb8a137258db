#!/usr/bin/env bash
# The heavy real-model circuit runs (issues 14 / 15) on one GPU: every step of a model in turn, each with its own
# time limit, continuing past a failed step (its log says why); the results folders are packed into $OUT.
#
#   bash examples/gpu_circuits.sh MODEL STEP [STEP ...]
#
# MODEL: smollm2-135m or gemma3-270m (their GGUF files read from the packages, or from $INTERP_CACHE/gguf/ on a
# machine without them: `interp models --where`). STEPs, each a command from the README / examples:
#   heads     exact head patching vs EAP / EAP-IG, faithfulness curves, CPR / CMD   (circuits_ioi.py heads, n 32)
#   edges     exact patching of EVERY edge, EAP / EAP-IG scored against it          (circuits_ioi.py edges --all)
#   ablations faithfulness under corrupted / mean / resample / zero ablation        (circuits_ioi.py ablations)
#   roles     name movers, S-inhibition, duplicate / induction heads by position vs `interp classify` labels
#   compare   EAP, EAP-IG, ACDC, SAE codes vs exact head patching, same prompts     (circuits_compare.py, n 32)
#   reuse     component reuse across tasks                                           (circuits_reuse.py)
#   needle    the needle circuit at long context                                     (circuits_needle.py)
# Environment: OUT (results; default out/gpu_circuits), STEP_LIMIT (seconds per step, default 540),
# N_EDGES (prompts for `edges`, default 8), NEEDLE_CONTEXT (default "4096 8192"), NEEDLE_OUT (default
# out/needle/MODEL; earlier contexts found there are compared), NEEDLE_MAX_GIB (default 100), COMPARE_N (prompt
# counts for `compare`, default 32), COMPARE_METHODS (default eap,eap-ig,acdc,sae; an ACDC checkpoint in the task's
# folder under out/cfind/ is resumed, also one written on another device).
set -u
M=${1:?usage: gpu_circuits.sh MODEL STEP...}
shift
OUTDIR=${OUT:-out/gpu_circuits}
mkdir -p "$OUTDIR"
export INTERP_DEVICE=${INTERP_DEVICE:-cuda} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
LIM=${STEP_LIMIT:-540}
CHUNK=64
EDGES=--edges  # needle edge attribution (circuits_needle_edges.py has no sandwich-norm support: not for Gemma)
if [ "$M" = gemma3-270m ]; then
  CHUNK=16  # 262k-token vocabulary: logits of 64 variants x 32 prompts would not fit
  EDGES=
fi

step() {  # step NAME CMD...: run with a time limit, log to $OUTDIR/<model>_<name>.log, one status line
  local name=$1
  shift
  local t0=$SECONDS
  timeout "$LIM" "$@" >>"$OUTDIR/${M}_$name.log" 2>&1
  local rc=$?
  echo "$M $name rc=$rc $((SECONDS - t0)) s" | tee -a "$OUTDIR/steps.log"
}

for s in "$@"; do
  case $s in
    heads) step heads $PY examples/circuits_ioi.py heads --model "$M" --n 32 --steps 5 --chunk $CHUNK ;;
    edges) step edges $PY examples/circuits_ioi.py edges --model "$M" --n "${N_EDGES:-8}" --all --chunk $CHUNK ;;
    ablations) step ablations $PY examples/circuits_ioi.py ablations --model "$M" --n 32 --methods eap,eap-ig ;;
    roles)
      step classify $PY -c "import sys; from interp.batch.cli import main; sys.exit(main())" classify "$M" --device cuda --out "out/cfind/classify_$M" --context 256 --prompts 2 \
        --resume --no-progress
      step roles $PY examples/circuits_ioi.py roles --model "$M" --n 32 --classify "out/cfind/classify_$M/heads.csv" ;;
    compare)
      for n in ${COMPARE_N:-32}; do
        step "compare_n$n" $PY examples/circuits_compare.py --model "$M" --n "$n" --tau 0.01 --chunk $CHUNK \
          --methods "${COMPARE_METHODS:-eap,eap-ig,acdc,sae}"
      done ;;
    reuse) step reuse $PY examples/circuits_reuse.py --model "$M" --n 16 --steps 5 ;;
    needle)
      # shellcheck disable=SC2086
      step needle $PY examples/circuits_needle.py --model "$M" --context ${NEEDLE_CONTEXT:-4096 8192} --n 2 \
        --top-k 10 --max-gib "${NEEDLE_MAX_GIB:-100}" $EDGES --out "${NEEDLE_OUT:-out/needle/$M}" ;;
    *) echo "unknown step $s (heads edges ablations roles compare reuse needle)" >&2 ;;
  esac
done
# JSON results and the (small) score caches; logs are already in $OUTDIR
tar czf "$OUTDIR/results_$M.tgz" --exclude='*.html' out/cfind out/needle 2>/dev/null
ls -la "$OUTDIR"
