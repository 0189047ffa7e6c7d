#!/usr/bin/env bash
# GPU check for yuzu-onnx on a machine with an NVIDIA GPU.
#
#   tools/gpu_check.sh [OUT_DIR] [--full]
#
# Creates a virtual environment, installs the project with onnxruntime-gpu instead of
# onnxruntime, prints nvidia-smi, checks that ONNX Runtime really runs a converted model on
# the CUDAExecutionProvider, runs `pytest -m cuda`, and the benchmark with
# `--device cuda --quick`. With --full it also runs the whole test-suite and the full
# benchmark on the GPU. Everything goes into OUT_DIR (default gpu_results/): one
# STEP.txt per step (nvidia-smi.txt, cuda-provider.txt, pytest-cuda.txt, bench-quick.txt,
# ...), pytest-cuda.xml, bench_quick/ (the benchmark's JSON and Markdown), with --full
# pytest-full.txt/.xml and bench_full/; gpu_check.log has everything, summary.txt each
# step's status.
#
# Environment:
#   PYTHON          interpreter for the new venv (default python3)
#   YUZU_GPU_VENV   use (and keep) this venv folder; an existing one is reused as is,
#                   without installing anything (for machines without network access)
#   PIP_OPTS        extra pip options, e.g. "--no-index --find-links /wheels"
#   TORCH_INDEX     where pip finds torch for the benchmark's model exports
#                   (default https://download.pytorch.org/whl/cpu; the CPU build is enough)
#
# Exit code: 0 when every step passed, 1 otherwise (the remaining steps still run).
set -uo pipefail

OUT="gpu_results"
FULL=0
for arg in "$@"; do
    case "$arg" in
        --full) FULL=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) OUT="$arg" ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
FAILED=0

log() { echo "[gpu_check] $*" | tee -a "$LOG"; }
step() {  # step NAME COMMAND...: run; output to OUT/NAME.txt and the log; record the status
    local name="$1"; shift
    log "== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.txt" | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    local line
    line="$(printf '%-28s %s (%ss)' "$name" "$([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)")" "$((SECONDS - start))")"
    echo "$line" >>"$SUMMARY"
    log "$line"
    [[ $rc == 0 ]] || FAILED=1
    return "$rc"
}

cd "$REPO"
log "repository $REPO, commit $(git -C "$REPO" log -1 --format=%h 2>/dev/null || echo unknown), output $OUT"

# 1. The GPU.
if ! command -v nvidia-smi >/dev/null; then
    log "nvidia-smi not found: this script needs an NVIDIA GPU with its driver installed"
    echo "nvidia-smi                   FAILED (not found)" >>"$SUMMARY"
    exit 1
fi
step nvidia-smi nvidia-smi

# 2. The environment: the project with onnxruntime-gpu instead of onnxruntime.
PY="${PYTHON:-python3}"
if [[ -n "${YUZU_GPU_VENV:-}" ]]; then
    VENV="$YUZU_GPU_VENV"
else
    VENV="$OUT/venv"
fi
# PIP_OPTS is split into words on purpose
# shellcheck disable=SC2086
if [[ -x "$VENV/bin/python" && -n "${YUZU_GPU_VENV:-}" ]]; then
    log "reusing the virtual environment $VENV as it is"
else
    step venv "$PY" -m venv "$VENV" || exit 1
    step install-project "$VENV/bin/python" -m pip install ${PIP_OPTS:-} -e "$REPO[test]" || exit 1
    step swap-onnxruntime bash -c "'$VENV/bin/python' -m pip uninstall -y onnxruntime && \
        '$VENV/bin/python' -m pip install ${PIP_OPTS:-} onnxruntime-gpu" || exit 1
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        step install-torch "$VENV/bin/python" -m pip install ${PIP_OPTS:-} torch \
            --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
    fi
fi
PYV="$VENV/bin/python"
step versions "$PYV" -c "
import sys, numpy, onnx, onnxruntime
print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| onnx', onnx.__version__,
      '| onnxruntime', onnxruntime.__version__, onnxruntime.get_device())
try:
    import torch; print('torch', torch.__version__)
except ImportError:
    print('torch not installed: the benchmark uses the built-in test models')
"

# 3. CUDA really used: the provider is offered, and a converted model's session gets it.
step cuda-provider bash -c "'$PYV' - <<'EOF'
import sys
import numpy as np
import onnxruntime as ort
import yuzu_onnx
from yuzu_onnx.testing import build_tiny_cnn, random_onehot

available = ort.get_available_providers()
print('available providers:', ', '.join(available))
if 'CUDAExecutionProvider' not in available:
    sys.exit('CUDAExecutionProvider is not available: is onnxruntime (CPU) still installed next to onnxruntime-gpu?')
model = yuzu_onnx.convert(build_tiny_cnn(seq_len=200))
session = yuzu_onnx.ISMSession(model, device='cuda')
print('session providers:', ', '.join(session.session.get_providers()))
if session.provider != 'CUDAExecutionProvider':
    sys.exit(f'the session runs on {session.provider}: the CUDA libraries could not be loaded')
x = random_onehot(4, 200, seed=0)
gpu = session.run(x)
cpu = yuzu_onnx.ISMSession(model, device='cpu').run(x)
for name in cpu:
    err = float(np.max(np.abs(gpu[name] - cpu[name])))
    scale = float(np.max(np.abs(cpu[name])))
    print(f'{name}: max |cuda - cpu| = {err:.3g} (scale {scale:.3g})')
    if err > 1e-5 * scale:
        sys.exit('CUDA and CPU results differ')
print('ok: converted model runs on CUDAExecutionProvider and matches the CPU')
EOF"

# 4. The CUDA tests.
step pytest-cuda "$PYV" -m pytest -m cuda -rs -p no:cacheprovider --junitxml "$OUT/pytest-cuda.xml" tests

# 5. The benchmark on the GPU (quick), and check that the converted runs used CUDA.
BENCH_MODELS=()
if ! "$PYV" -c "import torch" 2>/dev/null; then
    # without torch the architectures cannot be exported: use the built-in test models
    "$PYV" -c "
import onnx
from yuzu_onnx.testing import build_bpnet, build_tiny_cnn
onnx.save(build_tiny_cnn(seq_len=1000), '$OUT/tiny_cnn.onnx')
onnx.save(build_bpnet(seq_len=1000), '$OUT/bpnet_small.onnx')
"
    BENCH_MODELS=(--models "$OUT/tiny_cnn.onnx,$OUT/bpnet_small.onnx")
fi
step bench-quick "$PYV" tools/bench.py --device cuda --quick "${BENCH_MODELS[@]}" \
    --cache-dir "$OUT/bench_cache" --out "$OUT/bench_quick"
step bench-used-cuda "$PYV" -c "
import json, sys
data = json.load(open('$OUT/bench_quick/bench_results.json'))
runs = [r for r in data['records'] if r['method'].startswith('yuzu_onnx')]
for r in runs:
    print(r['model'], r['method'], r.get('provider'), r['status'])
bad = [r for r in runs if r.get('provider') != 'CUDAExecutionProvider']
sys.exit(f'{len(bad)} converted runs did not use CUDA' if bad or not runs else 0)
"

# 6. Optionally the whole test-suite and the full benchmark.
if [[ $FULL == 1 ]]; then
    step pytest-full "$PYV" -m pytest -rs -p no:cacheprovider --junitxml "$OUT/pytest-full.xml" tests
    step bench-full "$PYV" tools/bench.py --device cuda --cache-dir "$OUT/bench_cache" --out "$OUT/bench_full"
fi

log "summary:"
tee -a "$LOG" <"$SUMMARY"
exit "$FAILED"
