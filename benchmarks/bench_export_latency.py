"""Per-call latency of an exported surrogate against PyTorch eager (the baseline), one point per call.

    python benchmarks/bench_export_latency.py RUN [--calls 200000] [--repeat 2]

A simulator calls the surrogate once per step with one point, so the number that matters is
the cost of one call with batch size 1. Exports RUN (a run folder or checkpoint) to a C
header and to ONNX in a scratch folder, then measures in this one process, single-threaded:

- ``torch eager predict`` (baseline): ``model.predict`` on a (1, D) tensor;
- ``onnxruntime (python)``: ``InferenceSession.run`` with one (1,) tensor per label;
- ``C header``: ``<name>_predict`` in a loop, compiled with ``cc -O2`` (timed in C).
"""
from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from rollfit.analysis.surrogate import Surrogate
from rollfit.export import export

LOOP_C = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>
#include "bench.h"
int main(void) {
    float x[BENCH_N_INPUTS], y[BENCH_N_OUTPUTS]; double acc = 0; long i, n = %d; int j;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < n; ++i) {
        for (j = 0; j < BENCH_N_INPUTS; ++j)
            x[j] = bench_input_low[j] + (bench_input_high[j] - bench_input_low[j]) * (float)((i + 7 * j) %% 1000) / 1000.0f;
        bench_predict(x, y); acc += y[0];
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%%.4f %%g\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n / 1e3, acc);
    return 0;
}
"""


def per_call_us(fn, calls: int) -> float:
    """Mean microseconds per call of ``fn()`` after a warm-up."""
    for _ in range(min(200, calls)):
        fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--calls", type=int, default=200000, help="calls per C measurement (Python: calls / 20)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = Surrogate.load(args.run)
    x = torch.as_tensor(s.as_matrix({k: [(lo + hi) / 2] for k, (lo, hi) in s.bounds.items()}))
    with tempfile.TemporaryDirectory() as tmp:
        export(args.run, "c", Path(tmp) / "bench.h")  # loop.c includes bench.h
        (Path(tmp) / "loop.c").write_text(LOOP_C % args.calls)
        subprocess.run([shutil.which("cc") or "cc", "-std=c99", "-O2", "-I", tmp, str(Path(tmp) / "loop.c"),
                        "-o", str(Path(tmp) / "loop"), "-lm"], check=True)
        session, feed = None, None
        try:
            import onnxruntime as ort

            onnx_path = export(args.run, "onnx", Path(tmp) / "bench.onnx").path
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
            feed = {k: x[:, j].numpy().copy() for j, k in enumerate(s.in_lbl)}
        except ImportError:
            print("onnxruntime not installed: skipping the ONNX measurement")
        print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"model layers={s.config['layers']} residual={s.config['residual']}")
        for r in range(args.repeat):
            rows = {"torch eager predict (baseline)": per_call_us(lambda: s.model.predict(x), args.calls // 20)}
            if session is not None:
                rows["onnxruntime (python)"] = per_call_us(lambda: session.run(None, feed), args.calls // 20)
            out = subprocess.run([str(Path(tmp) / "loop")], capture_output=True, text=True, check=True).stdout
            rows["C header (-O2)"] = float(out.split()[0])
            base = rows["torch eager predict (baseline)"]
            print(f"run {r + 1}: " + "; ".join(f"{k} {v:.2f} us/call ({base / v:.1f}x)" for k, v in rows.items()))


if __name__ == "__main__":
    main()
