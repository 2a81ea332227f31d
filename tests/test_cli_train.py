"""End to end through the CLI: train, inspect, demo; one-line errors with exit code 2."""
import json
import subprocess
import sys

import pytest
import torch

from rollfit.cli.main import main

FAST = ["trainer.max_epochs=30", "trainer.log_period=10", "trainer.save_period=20", "trainer.progress=false",
        "trainer.report=false", "trainer.lr=0.01"]


def _train(tmp_path, demo_file, *extra):
    out = tmp_path / "run"
    code = main(["train", "--hdf5", str(demo_file), "--output", str(out), *FAST, *extra])
    assert code == 0
    return out


def test_train_writes_the_seed_layout(tmp_path, demo_file):
    out = _train(tmp_path, demo_file)
    assert (out / "config.yaml").is_file()
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["best.ckpt", "ep_000000.ckpt", "ep_000020.ckpt", "ep_000029.ckpt"]
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert len(logs) == 2 and logs[0].startswith("regression_hdf5_") and logs[1].endswith("_hparams.json")
    rows = json.loads((out / "logs" / logs[0]).read_text())
    assert [r["step"] for r in rows] == [0, 10, 20, 29]
    assert {"loss/train", "loss/val", "loss/reconstruction", "loss/l1", "loss/l2", "loss/grad_penalty", "lr"} <= set(rows[0])
    hp = json.loads((out / "logs" / logs[1]).read_text())
    assert hp["trainer"]["max_epochs"] == 30


def test_checkpoint_round_trip_with_the_seed_snippet(tmp_path, demo_file):
    from rollfit.model.network import RegressionNet
    from rollfit.runs.checkpoint import load_model

    out = _train(tmp_path, demo_file)
    checkpoint = torch.load(out / "checkpoints" / "ep_000029.ckpt", weights_only=True)
    assert set(checkpoint) >= {"epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict", "config"}
    config = checkpoint["config"]
    model = RegressionNet(input_dim=config["input_dim"], output_dim=config["output_dim"], layers=config["layers"],
                          input_mean=torch.tensor(config["input_mean"]), input_std=torch.tensor(config["input_std"]),
                          target_mean=torch.tensor(config["target_mean"]), target_std=torch.tensor(config["target_std"]),
                          residual=config["residual"])
    model.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    assert config["target_convention"] == "raw" and config["format_version"] == 1
    assert config["in_lbl"] == ["gait_cadence", "gait_stride"] and config["out_attr"] == ["metabolic/cot/MA/mean"]
    loaded, _, _ = load_model(out)
    x = torch.tensor([[1.0, 1.0], [0.9, 1.1]])
    torch.testing.assert_close(model.predict(x), loaded.predict(x))
    torch.testing.assert_close(model.predict(x), model(x))  # original units, as the original's model(x)


def test_training_reduces_loss(tmp_path, demo_file):
    out = _train(tmp_path, demo_file, "trainer.max_epochs=200", "trainer.log_period=199")
    rows = json.loads(next(p for p in (out / "logs").iterdir() if not p.name.endswith("_hparams.json")).read_text())
    assert rows[-1]["loss/val"] < 0.5 * rows[0]["loss/val"]


def test_config_typo_is_one_line_and_exit_2(tmp_path, demo_file, capsys):
    code = main(["train", "--hdf5", str(demo_file), "--output", str(tmp_path / "r"), "trainer.max_epoch=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("rollfit train: error: override 'trainer.max_epoch=3': unknown key 'trainer.max_epoch'; "
                   "did you mean 'trainer.max_epochs'?\n")
    assert not (tmp_path / "r").exists()


def test_missing_data_file_is_one_line(tmp_path, capsys):
    code = main(["train", "--hdf5", str(tmp_path / "nope.h5"), "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope.h5" in err and "Traceback" not in err


@pytest.mark.slow
def test_unknown_label_error_through_subprocess(tmp_path, demo_file):
    proc = subprocess.run([sys.executable, "-m", "rollfit", "train", "--hdf5", str(demo_file), "--output",
                           str(tmp_path / "r"), "data.in_lbl=[gait_stide]", *FAST], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "gait_stide" in proc.stderr and "gait_stride" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspect_summarizes(demo_file, capsys):
    assert main(["inspect", "--hdf5", str(demo_file), "--in-lbl", "gait_stride", "--out-lbl", "cot_ma15"]) == 0
    out = capsys.readouterr().out
    assert "gait_stride" in out and "metabolic/cot/MA/mean" in out


def test_inspect_with_one_side_named_checks_the_default_other_side(demo_file, capsys):
    assert main(["inspect", "--hdf5", str(demo_file), "--in-lbl", "gait_stride"]) == 0
    out = capsys.readouterr().out
    assert "loading in_lbl=['gait_stride'] out_lbl=['cot_ma15']" in out


def test_demo_runs_quickly(tmp_path, capsys):
    code = main(["demo", "--output", str(tmp_path / "demo"), "--groups", "120", "trainer.max_epochs=40",
                 "trainer.progress=false", "trainer.report=false"])
    assert code == 0
    out = capsys.readouterr().out
    assert "RMSE against the noise-free surface" in out
    assert (tmp_path / "demo" / "run" / "checkpoints").is_dir()


def test_inspect_with_a_wrong_label_is_an_error_on_stderr(demo_file, capsys):
    code = main(["inspect", "--hdf5", str(demo_file), "--in-lbl", "gait_stide", "--out-lbl", "cot_ma15"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("rollfit inspect: error: ")
    assert "gait_stide" in captured.err and "gait_stride" in captured.err
    assert "parameters" in captured.out.lower() or "gait_stride" in captured.out  # the summary is still shown


def test_inspect_takes_the_files_from_the_config(demo_file, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  hdf5_path: {demo_file}\n  in_lbl: [gait_stride]\n  out_lbl: [cot_ma15]\n")
    assert main(["inspect", "--config", str(cfg)]) == 0
    assert "metabolic/cot/MA/mean" in capsys.readouterr().out
    assert main(["inspect"]) == 2
    assert capsys.readouterr().err == ("rollfit inspect: error: --hdf5: expected rollout file(s) to inspect, but got "
                                       "none (nor data.hdf5_path in a --config)\n")


def _nproc_run(tmp_path, demo_file, signals, nproc=("--nproc", "2")):
    """``train --nproc 2`` until its first checkpoint, then ``signals`` to the launcher alone."""
    import signal
    import time

    out = tmp_path / "two"
    proc = subprocess.Popen([sys.executable, "-m", "rollfit", "train", *nproc, "--hdf5", str(demo_file),
                             "--output", str(out), "trainer.max_epochs=1000000", "trainer.save_period=50",
                             "trainer.progress=false", "trainer.report=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((out / "checkpoints").glob("ep_*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.5)
    for s in signals:
        proc.send_signal(getattr(signal, s))
        time.sleep(0.3)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


@pytest.mark.slow
def test_sigterm_under_nproc_ends_with_one_line_and_a_checkpoint(tmp_path, demo_file):
    code, err = _nproc_run(tmp_path, demo_file, ["SIGTERM"])
    assert code == 143 and "Traceback" not in err and "SignalException" not in err, err
    assert err.splitlines()[-1].startswith("rollfit train: interrupted by SIGTERM after epoch ")
    assert "resume with: rollfit train --resume" in err.splitlines()[-1]
    assert err.count("SIGTERM received") == 1, err  # the writing rank alone announces it


@pytest.mark.slow
def test_second_ctrl_c_under_nproc_aborts_with_one_line(tmp_path, demo_file):
    code, err = _nproc_run(tmp_path, demo_file, ["SIGINT", "SIGINT"])
    assert code == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] in ("rollfit train: interrupted",) or \
        err.splitlines()[-1].startswith("rollfit train: interrupted by SIGINT")


def test_a_signal_during_the_all_reduce_stops_every_rank_one_epoch_later(monkeypatch):
    """A rank whose signal lands while it waits in the epoch's all-reduce must not stop alone
    (the other ranks left it without the signal and would wait for it in the next one)."""
    import signal
    import types

    import torch.distributed as dist

    from rollfit.training.distributed import DistContext

    ctx = DistContext(1, 2, 1, torch.device("cpu"))
    guard = types.SimpleNamespace(requested=None)
    train = {"loss": torch.tensor(1.0)}

    def signalled_while_waiting(vec):
        guard.requested = signal.SIGTERM

    monkeypatch.setattr(dist, "all_reduce", signalled_while_waiting)
    ctx.agree(train, torch.tensor(0.5), False, guard)
    assert guard.requested is None  # not in this epoch: the others did not see it
    monkeypatch.setattr(dist, "all_reduce", lambda vec: None)
    ctx.agree(train, torch.tensor(0.5), False, guard)
    assert guard.requested == signal.SIGTERM  # in the next epoch, for every rank


def test_workers_of_nproc_report_to_the_launcher(tmp_path, monkeypatch):
    from rollfit.cli import nproc

    with nproc.status_folder() as folder:
        for rank, code, line in [(1, 2, "rollfit train: error: x"), (0, 2, "rollfit train: error: x"), (2, 0, None)]:
            monkeypatch.setenv("RANK", str(rank))
            if line:
                nproc.report_error(line)
            assert nproc.worker_exit(code) == 0  # torchrun sees success, the launcher the code
        assert nproc.outcome(folder) == (["rollfit train: error: x"], 2)
    monkeypatch.delenv("RANK")
    assert nproc.worker_folder() is None and nproc.worker_exit(2) == 2


@pytest.mark.slow
def test_an_error_in_the_workers_of_nproc_is_one_line(tmp_path, demo_file):
    proc = subprocess.run([sys.executable, "-m", "rollfit", "train", "--nproc", "2", "--hdf5", str(demo_file),
                           "--output", str(tmp_path / "r"), "data.in_lbl=[gait_stide]"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("rollfit train: error: ") and "gait_stide" in proc.stderr


@pytest.mark.slow
def test_second_ctrl_c_in_one_process_aborts_with_one_line(tmp_path, demo_file):
    code, err = _nproc_run(tmp_path, demo_file, ["SIGINT", "SIGINT"], nproc=())
    assert code == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] == "rollfit train: interrupted" or \
        err.splitlines()[-1].startswith("rollfit train: interrupted by SIGINT")
