"""Data-parallel training: 2 gloo processes on CPU reproduce a 1-process run.

Tolerance: each rank's gradient is its mean-loss gradient weighted by its row share, and
the all-reduce sums them; that is the one-process gradient with the float32 sums done in
another order, a relative difference ~1e-7 per step. Adam turns gradients into steps of at
most ~lr, and over these short runs the difference stays at the rounding level (measured:
<= 2e-7 in weights after 40 epochs). We allow 1e-5 absolute in weights and 1e-5 relative in
logged losses: 50x the rounding seen, far below any real error (a missing weight, a rank's
rows counted twice or an un-reduced gradient changes the first logged loss by > 1e-2).

The 2-process runs: one started with torch.multiprocessing (full batch, every file write
recorded per rank), one with ``rollfit train --nproc 2`` (torchrun; mini-batch).
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rollfit.cli import nproc
from rollfit.config import load_config
from rollfit.errors import ConfigError
from rollfit.training import distributed
from rollfit.runs.checkpoint import list_checkpoints
from rollfit.training.logger import find_log, read_rows
from rollfit.pipeline.run import resume, train

EPOCHS = 30
COMMON = [f"trainer.max_epochs={EPOCHS}", "trainer.log_period=5", "trainer.save_period=10", "trainer.lr=0.01",
          "trainer.progress=false", "trainer.report=false", "data.train_split=0.8", "data.cache=false"]
MINI = ["data.batch_size=64"]  # 220 training rows: batches of 64, 64, 64, 28


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, argv: list, record: str) -> None:
    """One rank, as torchrun would start it, recording every file it writes via rollfit.io."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import rollfit.io as rio

    writes, real = [], rio.atomic_open

    @contextlib.contextmanager
    def recording(path, mode="wb"):
        writes.append(str(path))
        with real(path, mode) as fh:
            yield fh

    rio.atomic_open = recording
    from rollfit.cli.main import main

    code = main(argv)
    Path(record, f"rank{rank}.json").write_text(json.dumps({"code": code, "writes": writes}))


def _single(demo_file, out, extra=()):
    cfg = load_config(None, COMMON + list(extra))
    cfg.data.hdf5_path = str(demo_file)
    return train(cfg, out).run_dir


def _rows(run):
    return read_rows(find_log(run))


def _weights(run, epoch=EPOCHS - 1):
    ckpt = torch.load(Path(run) / "checkpoints" / f"ep_{epoch:06d}.ckpt", weights_only=True)
    return ckpt["model_state_dict"]


def _assert_same_run(a, b):
    ra, rb = _rows(a), _rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for key in ("loss/train", "loss/val", "loss/reconstruction", "loss/grad_penalty", "lr"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), (x["step"], key)
    wa, wb = _weights(a), _weights(b)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def full_batch(tmp_path_factory, demo_file):
    """(1-process run, 2-process run, per-rank write records), full batch."""
    tmp = tmp_path_factory.mktemp("dist_full")
    single = _single(demo_file, tmp / "single")
    argv = ["train", "--output", str(tmp / "two"), *COMMON, "--hdf5", str(demo_file)]
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), argv, str(tmp)), nprocs=2, join=True)
    records = [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]
    return single, tmp / "two", records


@pytest.mark.slow
def test_two_processes_full_batch_match_one(full_batch):
    single, two, records = full_batch
    assert [r["code"] for r in records] == [0, 0]
    _assert_same_run(single, two)


@pytest.mark.slow
def test_rank_zero_alone_writes(full_batch):
    single, two, records = full_batch
    assert records[1]["writes"] == []
    written = {Path(p).relative_to(two).as_posix() for p in records[0]["writes"]}
    assert "config.yaml" in written and {f"checkpoints/ep_{e:06d}.ckpt" for e in (0, 10, 20, 29)} <= written
    files = sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file())
    expected = sorted(p.relative_to(single).as_posix() for p in single.rglob("*") if p.is_file())
    assert len(files) == len(expected) and [f for f in files if not f.startswith("logs/")] == \
        [f for f in expected if not f.startswith("logs/")]


@pytest.mark.slow
def test_resume_a_two_process_checkpoint_in_one_process(full_batch, tmp_path):
    single, two, _ = full_batch
    run = Path(shutil.copytree(two, tmp_path / "resumed"))
    for ckpt in list_checkpoints(run):
        if int(ckpt.stem[3:]) > 10:
            ckpt.unlink()
    result = resume(run)
    assert result.resumed_from.name == "ep_000010.ckpt"
    _assert_same_run(two, run)
    _assert_same_run(single, run)


@pytest.mark.slow
def test_nproc_shorthand_mini_batch_matches_one_process(tmp_path, demo_file):
    """`rollfit train --nproc 2` under torchrun, mini-batches: the same global batches as one process."""
    single = _single(demo_file, tmp_path / "single", MINI)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "rollfit", "train", "--nproc", "2", "--output", str(tmp_path / "two"),
                           *COMMON, *MINI, "--hdf5", str(demo_file)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run folder:") == 1  # rank 0 alone reports
    _assert_same_run(single, tmp_path / "two")


# ---- pieces ----------------------------------------------------------------------------------
def test_shares_cover_every_row_once_with_weights_summing_to_one():
    for n, world in [(10, 2), (11, 3), (5, 5), (3, 4), (1, 2)]:
        shares = [distributed.share(n, r, world) for r in range(world)]
        assert sum(s.weight for s in shares) == pytest.approx(1.0)
        rows = np.concatenate([s.positions for s in shares])
        if n >= world:
            assert sorted(rows.tolist()) == list(range(n))
            assert all(s.weight == len(s.positions) / n for s in shares)
        else:  # too few rows to split: every rank takes all, each counted 1/world
            assert all(s.positions.tolist() == list(range(n)) for s in shares)


def test_environment_is_read_and_checked(monkeypatch):
    for k in distributed.ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    assert distributed.env_world() == (0, 1, 0) and distributed.from_env("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match=r"expected 0 <= RANK < WORLD_SIZE, but got RANK=2, WORLD_SIZE=2"):
        distributed.env_world()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match=r"--nproc: expected a plain launch, but this process already runs "
                                          r"under torchrun \(WORLD_SIZE=2\); drop --nproc"):
        nproc.launch(2, ["train"])


def test_nproc_passes_every_other_argument_on():
    from rollfit.cli.main import build_parser

    args = build_parser().parse_args(["train", "--nproc", "2", "--config", "c.yaml", "--output", "out",
                                      "trainer.lr=0.1", "--hdf5", "a.h5", "b.h5"])
    argv = nproc.argv_without(args, args.parser)
    assert argv == ["trainer.lr=0.1", "--config", "c.yaml", "--hdf5", "a.h5", "b.h5", "--output", "out"]
    again = build_parser().parse_args(["train", *argv])
    assert (again.overrides, again.hdf5, again.nproc) == (["trainer.lr=0.1"], ["a.h5", "b.h5"], None)


def test_an_engine_that_skips_opt_step_is_refused():
    """A step engine that updated weights without optimizer.step() (no all-reduce) must not go unnoticed."""
    ctx = distributed.DistContext(0, 2, 0, torch.device("cpu"))
    ctx._reduced = 0

    class Replayed:
        def step(self, x, y, epoch):
            return {"train": torch.zeros(())}

    from rollfit.errors import TrainingError

    engine = Replayed()
    with pytest.raises(TrainingError, match=r"expected the step engine to call optimizer.step\(\) \(where gradients "
                                            r"are all-reduced\), but Replayed did not; use trainer.engine=reference"):
        ctx._checked(engine, lambda: engine.step(torch.zeros(1, 2), torch.zeros(1, 1), 0))
