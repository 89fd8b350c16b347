#!/usr/bin/env bash
# Prove lenet's CUDA path on a GPU machine, from a checkout, in at most 8 minutes (docs/gpu.md).
#
#   scripts/gpu_check.sh             # MNIST from $LENET_DATA_DIR, else .mnist/ in the checkout
#   scripts/gpu_check.sh --install   # first `pip install --no-deps -e .` (torch, onnxruntime-gpu present)
#
# Steps: lenet checks; train 15 epochs on cuda; SIGINT + resume vs the uninterrupted run; eval; bench;
# export --onnx + parity under onnxruntime's CUDA provider; torchrun --nproc-per-node 1 over nccl.
# One verdict line per step, one JSON report (runs/gpu-check-<time>/report.json, and $OUT/ when set).
# Exit: 0 all steps passed, 1 a step failed, 2 no GPU was found (at once, before anything is installed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
py=${PYTHON:-$(command -v python || command -v python3)}

no_gpu() {
    echo "gpu_check: FAIL: no GPU was found ($1)."
    exit 2
}

# Before any Python starts (torch takes seconds to import): is there an NVIDIA GPU at all?
case "${CUDA_VISIBLE_DEVICES-unset}" in
    "" | "-1") no_gpu "CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES}' hides every GPU" ;;
esac
if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi -L > /dev/null 2>&1 || no_gpu "nvidia-smi lists none"
elif ! compgen -G "/dev/nvidia[0-9]*" > /dev/null; then
    no_gpu "no nvidia-smi and no /dev/nvidia* device"
fi

if [ "${1-}" = "--install" ]; then
    "$py" -m pip install --quiet --no-deps -e . || exit 1
else
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # run this checkout's lenet without installing it
fi

data=${LENET_DATA_DIR:-$root/.mnist}
out=$root/runs/gpu-check-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
"$py" scripts/gpu_check.py run --data-dir "$data" --out "$out" --report "$out/report.json"
code=$?
if [ -n "${OUT-}" ] && [ -d "$OUT" ]; then  # the device tool's folder: the report and logs come back
    cp -r "$out/report.json" "$out/logs" "$OUT/" 2>/dev/null
fi
exit $code
