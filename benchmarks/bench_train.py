"""Training speed: rollfit's Trainer against ``shared/tools/speed_probe.py``, in one run.

    python benchmarks/bench_train.py [--device cpu|cuda] [--cases small,big] [--repeat 2]
                                     [--epochs 10002] [--big-epochs N] [--data DIR] [--out results.json]

Cases (the seed's config from SEED.md: residual [64, 32] gelu, huber x10, l1 = l2 = 0.001,
input-gradient penalty 0.01, lr 0.1, plateau scheduler, log every 50 epochs, checkpoint
every 1000):

- ``small``: ``shared/fixtures/rollouts/u225.h5`` (213 successful rows, 2 inputs, full
  batch), ``--epochs`` epochs (default 10,002, the seed's run);
- ``big``: a generated file of 100,000 rows x 13 inputs (written once under ``--data``,
  read through rollfit's cache), batch 65,536 (two shuffled mini-batches per epoch).
  ``--big-source memory`` builds the same rows in memory instead (the GPU check uses it:
  writing the 400 MB file would cost minutes of a short GPU lease; the training is the same).

For each, rollfit's real ``Trainer.fit`` (validation, scheduler, logging, checkpoints,
the engine ``trainer.engine: auto`` picks) is timed, then the probe runs as a subprocess
with the same rows and inputs -- twice: as written (torch's default threads) and with
``OMP_NUM_THREADS=1`` (on a shared 2-core machine the default threads can collapse under
load; the faster probe is the baseline, so the ratio is the conservative one). With
``--repeat`` the measurements alternate (rollfit, probe, rollfit, probe, ...); the ratio
uses the medians. On CUDA the same run also times rollfit's original-style eager loop
(``trainer.engine: reference``) and the probe's captured graph (its second line).

rollfit's time is wall-clock time of ``fit`` (its CPU time is printed too; on a loaded
machine the CPU time shows what the code costs). A compiled engine (``big`` on CPU) is
warmed up first: 4 epochs of thread trials, compilation and 2 compiled epochs (printed
separately, with the projected total of a 10,002-epoch run). The probe's rate is read from
the ms/epoch it prints (its epochs/s are rounded to integers). The load average is printed with each result.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from rollfit.config import validate
from rollfit.data.datamodule import HDF5DataModule
from rollfit.data.reader import load_rollouts
from rollfit.data.synthetic import COT_ATTR, DEFAULT_13_NAMES, campaign_rows, write_rollout_file
from rollfit.data.table import RolloutTable
from rollfit.training.logger import SimpleLogger
from rollfit.pipeline.run import build_model
from rollfit.training.step import ThreadChoice
from rollfit.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PROBE = SHARED / "tools" / "speed_probe.py"
U225 = SHARED / "fixtures" / "rollouts" / "u225.h5"
SEED_YAML = """
data:
  in_lbl: ["gait_cadence", "gait_stride"]
  out_lbl: ["cot_ma15"]
  batch_size: 65536
  train_split: 1.0
model:
  residual: true
  layers: [64, 32]
  activation: 'gelu'
trainer:
  max_epochs: 10002
  lr: 0.1
  min_lr: 0.0005
  recon_type: 'huber'
  recon_weight: 10
  grad_weight: 0.01
  l1_weight: 0.001
  l2_weight: 0.001
  log_period: 50
  save_period: 1000
"""
BIG_ROWS = 100_000


# ---- data ----------------------------------------------------------------------------------------
def big_file(data_dir: Path) -> Path:
    """100,000 successful groups x 13 inputs (the campaign generator's surface), written once."""
    path = data_dir / f"c{BIG_ROWS // 1000}k_13.h5"
    if not path.exists():
        t0 = time.perf_counter()
        x, y, _ = campaign_rows(BIG_ROWS, 13, seed=0)
        tmp = path.with_suffix(".tmp.h5")
        write_rollout_file(tmp, x, {COT_ATTR: y})
        tmp.replace(path)
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def big_table_in_memory() -> RolloutTable:
    """The rows ``big_file`` writes (all groups successful), without the file."""
    x, y, _ = campaign_rows(BIG_ROWS, 13, seed=0)
    return RolloutTable(x, y.astype("float32")[:, None], range(BIG_ROWS), [0] * BIG_ROWS, ["(in memory)"],
                        list(DEFAULT_13_NAMES), ["cot_ma15"], [COT_ATTR], n_groups=BIG_ROWS)


def seed_config(case: str, device: str, engine: str) -> Any:
    raw = yaml.safe_load(SEED_YAML)
    if case == "big":
        raw["data"]["in_lbl"] = list(DEFAULT_13_NAMES)
    raw["trainer"].update(device=device, engine=engine, progress=False, report=False)
    return validate(raw, "seed config")


# ---- timing ------------------------------------------------------------------------------------------
def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_rollfit(table, case: str, device: str, engine: str, epochs: int, warm: int) -> dict[str, Any]:
    """Wall and CPU time of ``Trainer.fit`` for ``epochs`` epochs (after ``warm`` untimed ones;
    a compiled engine is warmed up until it has compiled: thread trials, then compilation)."""
    cfg = seed_config(case, device, engine)
    torch.manual_seed(0)
    data = HDF5DataModule(table, cfg.data.batch_size, cfg.data.train_split, 0, device).setup()
    model = build_model(cfg, data)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, cfg.trainer, data, run_dir, SimpleLogger(Path(run_dir) / "logs"))
        if trainer.engine_name == "compiled" and warm:
            warm = 2 * ThreadChoice.TRIALS + 2
        warm_s = 0.0
        if warm:
            cfg.trainer.max_epochs = warm
            t0 = time.perf_counter()
            trainer.fit()
            sync(device)
            warm_s = time.perf_counter() - t0
            trainer.start_epoch = warm
        cfg.trainer.max_epochs = warm + epochs
        before = load()
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = trainer.fit()
        sync(device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"engine": type(trainer.engine).__name__, "mode": trainer.engine_name, "epochs": epochs,
            "wall_s": wall, "cpu_s": cpu, "epochs_per_s": epochs / wall, "cpu_epochs_per_s": epochs / cpu,
            "warm_epochs": warm, "warm_s": warm_s, "final_loss": metrics.get("loss/train"),
            "load_before": before, "load_after": load()}


PROBE_LINE = re.compile(r"^(eager|cudagraph) (\S+) N=(\d+).*?: (\d+) epochs/s \(([\d.]+) ms/epoch\)")


def time_probe(device: str, rows: int, din: int, epochs: int, one_thread: bool) -> dict[str, Any]:
    """Run the probe; its epochs/s (eager, and cudagraph when it prints one)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1") if one_thread else dict(os.environ)
    before = load()
    proc = subprocess.run([sys.executable, str(PROBE), device, str(rows), str(epochs), str(din)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"speed_probe.py failed: {proc.stderr.strip()[-500:]}")
    out = {"threads": "1" if one_thread else "default", "epochs": epochs, "load_before": before,
           "load_after": load(), "lines": proc.stdout.strip().splitlines()}
    for line in out["lines"]:
        m = PROBE_LINE.match(line)
        if m:
            out[m.group(1)] = 1000.0 / float(m.group(5))  # from ms/epoch: the epochs/s it prints are rounded
    return out


# ---- the cases ---------------------------------------------------------------------------------------
def guarded(fn, *args) -> dict[str, Any]:
    """``fn(*args)``; a failure is printed and recorded (a one-shot GPU run keeps its other numbers)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - report and go on
        import traceback

        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}", "epochs_per_s": float("nan"),
                "cpu_epochs_per_s": float("nan"), "mode": "failed", "load_before": load(), "epochs": 0,
                "wall_s": float("nan"), "warm_epochs": 0, "warm_s": 0.0}


def run_case(case: str, args, table, rows: int, din: int) -> dict[str, Any]:
    device = args.device
    epochs = args.epochs if case == "small" else args.big_epochs
    warm = 2 if (case == "big" and device == "cpu") else 0
    rollfit, probes = [], []
    for r in range(args.repeat):
        rollfit.append(guarded(time_rollfit, table, case, device, args.engine, epochs, warm))
        print(f"  [{case} #{r + 1}] rollfit {rollfit[-1]['mode']}: {rollfit[-1]['epochs_per_s']:.1f} epochs/s "
              f"(cpu-time {rollfit[-1]['cpu_epochs_per_s']:.1f}; load {rollfit[-1]['load_before']})", flush=True)
        for one in ((False, True) if device == "cpu" else (False,)):
            probes.append(time_probe(device, rows, din, args.probe_epochs[case], one))
            graph = f"{probes[-1]['cudagraph']:.1f}" if "cudagraph" in probes[-1] else "-"
            print(f"  [{case} #{r + 1}] probe ({probes[-1]['threads']} threads): {probes[-1].get('eager', 0.0):.1f} "
                  f"epochs/s eager, {graph} cudagraph (load {probes[-1]['load_before']})", flush=True)
    result = {"case": case, "rows": rows, "inputs": din, "rollfit": rollfit, "probe": probes}
    if device == "cuda":
        eager_epochs = min(epochs, 1000)
        result["rollfit_eager"] = [guarded(time_rollfit, table, case, device, "reference", eager_epochs, 0)]
        print(f"  [{case}] rollfit original-style eager (engine reference): "
              f"{result['rollfit_eager'][0]['epochs_per_s']:.1f} epochs/s", flush=True)
    return result


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Medians, best values and ratios (rollfit / the faster probe variant)."""
    ours = [r["epochs_per_s"] for r in res["rollfit"]]
    eager = {}
    for p in res["probe"]:
        eager.setdefault(p["threads"], []).append(p.get("eager", 0.0))
    probe_med = max(statistics.median(v) for v in eager.values())
    probe_best = max(max(v) for v in eager.values())
    out = {"rollfit_median": statistics.median(ours), "rollfit_best": max(ours), "probe_eager_median": probe_med,
           "probe_eager_best": probe_best, "ratio_median": statistics.median(ours) / probe_med,
           "ratio_best": max(ours) / probe_best}
    graphs = [p["cudagraph"] for p in res["probe"] if "cudagraph" in p]
    if graphs:
        out["probe_cudagraph_median"] = statistics.median(graphs)
    if res["rollfit"][0]["warm_epochs"]:
        first = res["rollfit"][0]
        per_epoch = 1.0 / out["rollfit_median"]
        out["warm_epochs"] = first["warm_epochs"]
        out["compile_s"] = first["warm_s"]
        out["projected_10002_s"] = first["warm_s"] + (10002 - first["warm_epochs"]) * per_epoch
        out["probe_projected_10002_s"] = 10002 / probe_med
    return out


def print_summary(results: list[dict[str, Any]], args) -> None:
    gpu = f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {args.device}{gpu}")
    print(f"{'case':6} {'rows x in':>11} {'rollfit ep/s (med/best)':>24} {'probe eager ep/s':>18} "
          f"{'ratio med/best':>15}")
    for res in results:
        s = res["summary"]
        print(f"{res['case']:6} {res['rows']:>7} x {res['inputs']:<2} {s['rollfit_median']:>11.1f} / "
              f"{s['rollfit_best']:<10.1f} {s['probe_eager_median']:>18.1f} {s['ratio_median']:>7.2f} / "
              f"{s['ratio_best']:.2f}")
        if "compile_s" in s:
            print(f"       warm-up (thread trials, compilation) + {s['warm_epochs']} epochs: {s['compile_s']:.0f} s; "
                  f"a 10,002-epoch run projected "
                  f"{s['projected_10002_s']:.0f} s vs probe {s['probe_projected_10002_s']:.0f} s")
        if "probe_cudagraph_median" in s:
            print(f"       probe cudagraph {s['probe_cudagraph_median']:.0f} epochs/s")
        if "rollfit_eager" in res:
            e = res["rollfit_eager"][0]
            print(f"       rollfit original-style eager (engine reference): {e['epochs_per_s']:.1f} epochs/s")
        if res["case"] == "small":
            wall = statistics.median(r["wall_s"] for r in res["rollfit"]) * 10002 / res["rollfit"][0]["epochs"]
            print(f"       10,002 epochs of rollfit: {wall:.2f} s of training time")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cases", default="small,big")
    p.add_argument("--engine", choices=["auto", "eager", "compiled", "captured", "reference"], default="auto",
                   help="trainer.engine of the timed runs (the GPU check times captured)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10002, help="epochs of the small case")
    p.add_argument("--big-epochs", type=int, default=None, help="timed epochs of the big case (cpu 30, cuda 300)")
    p.add_argument("--probe-epochs", type=int, default=None,
                   help="the probe's epochs in the small case (default: --epochs on cpu, 2000 on cuda)")
    p.add_argument("--big-source", choices=["file", "memory"], default=None,
                   help="big case rows from the generated file (default on cpu) or built in memory (cuda)")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "rollfit_bench")
    p.add_argument("--out", type=Path, default=None, help="write all measurements as JSON")
    args = p.parse_args(argv)
    if args.big_epochs is None:
        args.big_epochs = 30 if args.device == "cpu" else 300
    small_probe = args.probe_epochs or (args.epochs if args.device == "cpu" else 2000)
    args.probe_epochs = {"small": small_probe, "big": args.big_epochs}
    if not PROBE.exists() or not U225.exists():
        raise SystemExit(f"expected the shared folder beside the checkout ({SHARED}), but it is missing")
    results = []
    for case in args.cases.split(","):
        if case == "small":
            table = load_rollouts(U225, ["gait_cadence", "gait_stride"], ["cot_ma15"])
        elif (args.big_source or ("file" if args.device == "cpu" else "memory")) == "memory":
            table = big_table_in_memory()
        else:
            args.data.mkdir(parents=True, exist_ok=True)
            table = load_rollouts(big_file(args.data), list(DEFAULT_13_NAMES), ["cot_ma15"])
        print(f"{case}: {len(table)} rows x {table.inputs.shape[1]} inputs on {args.device}", flush=True)
        res = run_case(case, args, table, len(table), table.inputs.shape[1])
        res["summary"] = summarize(res)
        results.append(res)
    print_summary(results, args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": args.device, "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
