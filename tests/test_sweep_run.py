"""A small local Ray sweep end to end: 4 trials on the demo file, a few epochs each.

Ray's start-up costs seconds, so one sweep (module scope) serves every assertion. Skipped
when ray is not installed (``pip install "rollfit[ray]"``).
"""
import csv
import json

import pytest

pytest.importorskip("ray", reason='needs ray: pip install "rollfit[ray]"')
pytestmark = pytest.mark.slow  # Ray's start-up: tens of seconds on a loaded 2-core machine

from rollfit.cli.main import main  # noqa: E402
from rollfit.config import load_config  # noqa: E402
from rollfit.runs.checkpoint import list_checkpoints, load_model  # noqa: E402
from rollfit.training.logger import find_log, read_rows  # noqa: E402

EPOCHS, LOG = 30, 10
SPACE = "trainer.lr: {loguniform: [0.003, 0.03]}\nmodel.layers: {choice: [[8], [16, 8]]}\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, demo_file):
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "space.yaml").write_text(SPACE)
    out = tmp / "out"
    code = main(["sweep", "--space", str(tmp / "space.yaml"), "--hdf5", str(demo_file), "--output", str(out),
                 "--samples", "4", "--concurrent", "2", "--grace-epochs", str(LOG),
                 f"trainer.max_epochs={EPOCHS}", f"trainer.log_period={LOG}", "trainer.report=false",
                 "data.train_split=0.8", "data.cache=false"])
    assert code == 0
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows


def test_one_complete_run_folder_per_trial(sweep):
    out, rows = sweep
    trials = sorted(p.name for p in out.glob("trial_*"))
    assert len(trials) == 4 and sorted(r["trial"] for r in rows) == trials
    for row in rows:
        run = out / row["run_dir"]
        cfg = load_config(run / "config.yaml")
        assert cfg.trainer.lr == pytest.approx(float(row["trainer.lr"]))
        assert cfg.model.layers == json.loads(row["model.layers"])
        model, _, ckpt = load_model(run)  # every trial is a usable run folder, stopped early or not
        best = run / "checkpoints" / "best.ckpt"  # a run folder means its best epoch when it has one
        assert model.constructor_args()["layers"] == cfg.model.layers
        assert ckpt == best if best.is_file() else ckpt in list_checkpoints(run)


def test_results_table_matches_what_each_run_logged(sweep):
    out, rows = sweep
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    for row in rows:
        logged = read_rows(find_log(out / row["run_dir"]))
        assert logged[-1]["step"] + 1 == int(row["epochs"])  # reported at every log period, last one last
        assert float(row["loss/val"]) == pytest.approx(logged[-1]["loss/val"], rel=1e-6)
        assert row["status"] == ("completed" if int(row["epochs"]) == EPOCHS else "stopped early")
    done = [float(r["loss/val"]) for r in rows if r["status"] == "completed"]
    assert done == sorted(done) and rows[0]["status"] == "completed"


def test_best_config_is_accepted_by_rollfit_train(sweep, tmp_path):
    out, rows = sweep
    best = load_config(out / "best_config.yaml")
    assert best.trainer.lr == pytest.approx(float(rows[0]["trainer.lr"]))
    assert best.model.layers == json.loads(rows[0]["model.layers"]) and best.trainer.max_epochs == EPOCHS
    code = main(["train", "--config", str(out / "best_config.yaml"), "--output", str(tmp_path / "run"),
                 "trainer.max_epochs=3", "trainer.progress=false"])
    assert code == 0 and list_checkpoints(tmp_path / "run")


def test_summary_and_plot(sweep):
    out, rows = sweep
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["trials"] == 4 and summary["best_trial"] == rows[0]["trial"]
    assert set(summary["importance"]) == {"trainer.lr", "model.layers"}
    assert (out / "sweep_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
