#!/usr/bin/env bash
# Bring a bundled model's GGUF file to an offline GPU machine whose calls carry at most ~64 MiB (the `device` tool):
# split it here, carry one part per call to the same warm machine, assemble it there under $INTERP_CACHE/gguf/.
#
#   bash examples/gpu_weights.sh split MODEL [MIB]   # here: .gguf/MODEL.partNN (+ MODEL.sha256), MIB per part (50)
#   bash examples/gpu_weights.sh put PART            # there: copy one carried part to $GGUF_PARTS (/tmp/gguf_parts)
#   bash examples/gpu_weights.sh assemble MODEL      # there: join the parts, check the sha256, install the file
#
# MODEL: smollm2-135m or gemma3-270m. After `assemble`, `interp.load(MODEL)` reads the file from
# $INTERP_CACHE/gguf/ (default ~/.cache/interp/gguf/), as on any machine without the weights packages.
set -euo pipefail
PARTS=${GGUF_PARTS:-/tmp/gguf_parts}  # outside the repository folder, which each call replaces
PY=${PYTHON:-python3}
cmd=${1:?usage: gpu_weights.sh split|put|assemble ...}
case $cmd in
  split)
    m=${2:?model}; mib=${3:-50}
    src=$($PY -c "from interp.zoo import BUNDLED, _gguf_path; print(_gguf_path(BUNDLED['$m']))")
    mkdir -p .gguf
    rm -f ".gguf/$m".part*
    split -b "${mib}M" -d -a 2 "$src" ".gguf/$m.part"
    (cd "$(dirname "$src")" && sha256sum "$(basename "$src")") >".gguf/$m.sha256"
    ls -la .gguf/ ;;
  put)
    p=${2:?part}
    mkdir -p "$PARTS"
    cp "$p" "$PARTS/"
    [ -f "${p%.part*}.sha256" ] && cp "${p%.part*}.sha256" "$PARTS/"
    ls -la "$PARTS" ;;
  assemble)
    m=${2:?model}
    cache=${INTERP_CACHE:-$HOME/.cache/interp}/gguf
    [ -f "$PARTS/$m.sha256" ] || { echo "assemble: no $PARTS/$m.sha256 (put the parts first)" >&2; exit 1; }
    compgen -G "$PARTS/$m.part*" >/dev/null || { echo "assemble: no parts of $m in $PARTS" >&2; exit 1; }
    name=$(awk '{print $2}' "$PARTS/$m.sha256")
    mkdir -p "$cache"
    tmp="$cache/$name.partial"
    cat "$PARTS/$m".part* >"$tmp"
    if [ "$(sha256sum "$tmp" | awk '{print $1}')" != "$(awk '{print $1}' "$PARTS/$m.sha256")" ]; then
      rm -f "$tmp"
      echo "assemble: $name: sha256 mismatch (a part missing or damaged); nothing installed" >&2
      exit 1
    fi
    mv "$tmp" "$cache/$name"
    echo "$name: OK"
    rm -f "$PARTS/$m".part* ;;
  *) echo "unknown command $cmd (split, put, assemble)" >&2; exit 2 ;;
esac
