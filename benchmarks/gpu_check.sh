#!/usr/bin/env bash
# The GPU check of the training fast paths (issue 7), prepared to run ONCE on a CUDA machine.
#
# 1. Here, with network access (the GPU image has torch, h5py, numpy, yaml, tqdm, pytest,
#    but not pydantic), fetch the missing wheels into .whl/ (ignored by git):
#        bash benchmarks/gpu_check.sh --fetch-wheels
# 2. On the GPU machine, from the repository root (with shared/ beside the checkout):
#        OUT=/some/dir bash benchmarks/gpu_check.sh
#    With the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"],
#    timeout_s=600). Everything lands in $OUT: env.txt, nvidia_smi.txt, gpu_tests.log,
#    bench_train_cuda.log and bench_train_cuda.json.
#
# What it checks: tests/test_speed_paths.py with CUDA (the captured engine trains like the
# eager fused step; DevicePlateau mirrors torch's scheduler on the device), then
# benchmarks/bench_train.py --device cuda --engine captured: the seed's 10,002 epochs on u225.h5 (target:
# under 8 s of training time on an H100/H200), 100k rows x 13 inputs (target: 5x the
# probe's eager loop), the probe's eager and captured-graph loops and rollfit's
# original-style eager loop (trainer.engine: reference). About 4-6 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing-extensions==4.16.0
    exit $?
fi

OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/rollfit_site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/rollfit_site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, torch, rollfit
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA")
print("rollfit", rollfit.__version__)
EOF
cat "$OUT/env.txt"

echo "== tests/test_speed_paths.py (CUDA tests included) =="
timeout 200 "$PY" -m pytest -q -p no:cacheprovider tests/test_speed_paths.py 2>&1 | tee "$OUT/gpu_tests.log"

echo "== benchmarks/bench_train.py --device cuda =="
timeout 330 "$PY" benchmarks/bench_train.py --device cuda --engine captured --repeat 2 --out "$OUT/bench_train_cuda.json" 2>&1 \
    | tee "$OUT/bench_train_cuda.log"
