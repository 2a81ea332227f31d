"""A run folder belongs to one run, and every command resolves its paths through RunFolder.

Repros of issue 15 (item 2: training into an existing run mixed two runs, no lock; item 3:
a checkpoint's log name used as a path unchecked; item 9: read-only folders, damaged newest
checkpoints, the default folder left behind by a failed start) and issue 14 (metrics files
named for their rows; a stray checkpoint's outputs went two levels up).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import demo_config
from rollfit.analysis.evaluate import evaluate_run, write_metrics
from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.errors import CheckpointError, DataFileNotFound, OutputError
from rollfit.pipeline.run import resume, train
from rollfit.runs.checkpoint import list_checkpoints, save_checkpoint
from rollfit.runs.folder import RunFolder, open_run
from rollfit.runs.lock import RunLock

QUICK = ["trainer.max_epochs=4", "trainer.save_period=2", "trainer.log_period=1", "trainer.progress=false",
         "trainer.report=false", "data.train_split=0.8", "data.cache=false"]


def _train(demo_file, out, *extra, **kw):
    return train(demo_config(demo_file, QUICK + list(extra)), out, **kw)


# ---- one run per folder --------------------------------------------------------------------
def test_training_into_a_finished_run_is_refused_naming_resume_and_overwrite(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run").run_dir
    before = sorted(p.name for p in list_checkpoints(run))
    with pytest.raises(OutputError) as err:
        _train(demo_file, run, "trainer.max_epochs=2")
    assert str(err.value) == (f"{run}: expected a new or empty run folder, but it holds a run (config.yaml, "
                              f"checkpoints/, logs/); continue it with --resume {run}, or replace it with --overwrite")
    assert sorted(p.name for p in list_checkpoints(run)) == before  # the old run is untouched


def test_overwrite_clears_the_old_run_first(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run", "trainer.max_epochs=6").run_dir
    (run / "metrics_validation.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    result = _train(demo_file, run, "trainer.max_epochs=2", overwrite=True)
    names = [p.name for p in list_checkpoints(run)]
    assert names[-1] == result.last_checkpoint.name and all(int(n[3:9]) < 2 for n in names)  # no ep_000005 left
    loaded = Surrogate.load(run)  # the new run's best.ckpt, not the old run's
    assert loaded.checkpoint == run / "checkpoints" / "best.ckpt" and loaded.config["best_epoch"] < 2
    assert not (run / "metrics_validation.json").exists() and (run / "notes.txt").read_text() == "mine"
    assert len(list((run / "logs").glob("*.json"))) == 2  # one log and its hparams


def test_a_second_writer_fails_at_once_naming_the_holder(demo_file, tmp_path):
    out = tmp_path / "busy"
    holder = RunLock(out / "rollfit.lock").acquire()
    try:
        start = time.monotonic()
        with pytest.raises(OutputError) as err:
            _train(demo_file, out)
        assert time.monotonic() - start < 1.0
        assert str(err.value) == (f"{out}: expected a run folder no other process is writing, but it is locked "
                                  f"by pid {os.getpid()} (rollfit.lock); wait for that run to end or use another "
                                  "--output")
    finally:
        holder.release()
    assert not (out / "rollfit.lock").exists()


def test_a_second_process_cannot_take_a_held_lock(tmp_path):
    """Across processes: the child sees the parent's pid in the one-line error."""
    lock = RunLock(tmp_path / "rollfit.lock").acquire()
    code = ("import sys; from rollfit.runs.lock import RunLock\n"
            f"try:\n    RunLock({str(tmp_path / 'rollfit.lock')!r}).acquire()\nexcept Exception as e:\n"
            "    print(e); sys.exit(2)\n")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        lock.release()
    assert res.returncode == 2 and f"locked by pid {os.getpid()}" in res.stdout


def test_a_stale_lock_of_a_dead_process_is_taken_over(demo_file, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / "stale"
    out.mkdir()
    (out / "rollfit.lock").write_text(dead + "\n")
    result = _train(demo_file, out)
    assert result.last_checkpoint.is_file() and not (out / "rollfit.lock").exists()


def test_a_failed_start_leaves_no_default_run_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    missing = data / "trainer.max_epochs=20"  # an override swallowed as a second file
    with pytest.raises(DataFileNotFound):
        train(demo_config(missing, QUICK))
    assert list(data.iterdir()) == []  # no rollfit_runs/version_0 left behind


def test_resume_holds_the_lock_too(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run").run_dir
    with RunLock(run / "rollfit.lock"):
        with pytest.raises(OutputError, match=f"locked by pid {os.getpid()}"):
            resume(run, ["trainer.max_epochs=6"])


# ---- paths read from a checkpoint stay inside the run --------------------------------------
def test_a_crafted_log_file_name_is_refused_on_resume(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run").run_dir
    newest = list_checkpoints(run)[-1]
    ckpt = torch.load(newest, weights_only=True)
    ckpt["trainer_state"]["log_file"] = "../../x"
    save_checkpoint(newest, ckpt)
    with pytest.raises(CheckpointError) as err:
        resume(run, ["trainer.max_epochs=6"])
    assert str(err.value) == (f"{newest}: trainer_state.log_file: expected a file name inside {run / 'logs'}, "
                              "but got '../../x'")
    assert not (tmp_path / "x").exists() and not (run.parent.parent / "x").exists()


@pytest.mark.parametrize("sub", ["checkpoints", "logs"])
def test_a_run_whose_write_folder_is_a_symlink_is_refused_on_resume(demo_file, tmp_path, sub):
    """A received run folder whose checkpoints/ or logs/ links elsewhere must not make a resume
    write outside the run."""
    run = _train(demo_file, tmp_path / "run").run_dir
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(run / sub), str(elsewhere))
    (run / sub).symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(OutputError) as err:
        resume(run, ["trainer.max_epochs=8"])
    assert str(err.value) == (f"{run / sub}: expected a folder inside the run, but it is a symbolic link to "
                              f"{elsewhere}; a run writes only inside its own folder")
    assert sorted(p.name for p in elsewhere.iterdir()) == before


# ---- finding the run of --run PATH ---------------------------------------------------------
def test_open_run_errors_are_one_line(tmp_path, trained_run):
    with pytest.raises(DataFileNotFound, match=r"nope: expected a run folder or a checkpoint file, but it does "
                                               r"not exist$"):
        open_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: expected a run folder with checkpoints/ep_\*\.ckpt, but "
                                              r"the folder is empty$"):
        open_run(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=rf"checkpoints: expected a run folder, but got its checkpoints/ "
                                              rf"folder; did you mean '{trained_run}'\?$"):
        open_run(trained_run / "checkpoints")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"other: expected a run folder \(config.yaml, checkpoints/ep_\*\.ckpt\)"
                                              r", but found neither; pass a run folder or a checkpoint file$"):
        open_run(tmp_path / "other")
    assert open_run(trained_run, output=tmp_path / "o").metrics("validation") == tmp_path / "o" / "metrics_validation.json"


def test_a_stray_checkpoint_gets_its_outputs_beside_it(trained_run, tmp_path, capsys):
    """`rollfit evaluate --run some/models/cot.ckpt` wrote some/metrics.json, two levels up."""
    models = tmp_path / "some" / "models"
    models.mkdir(parents=True)
    shutil.copy(list_checkpoints(trained_run)[-1], models / "cot.ckpt")
    s = Surrogate.load(models / "cot.ckpt")
    assert s.run_dir == models and s.folder.is_stray
    ev = evaluate_run(s, hdf5=str(Path(s.config["data_summary"]["files"][0])))
    path = write_metrics(s.folder, ev)
    assert path == models / "cot_metrics_rollout_data.json"
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["models"]


def test_evaluate_cli_on_a_stray_checkpoint_writes_beside_it(trained_run, tmp_path, capsys):
    models = tmp_path / "some" / "models"
    models.mkdir(parents=True)
    shutil.copy(list_checkpoints(trained_run)[-1], models / "cot.ckpt")
    assert main(["evaluate", "--run", str(models / "cot.ckpt")]) == 0
    assert f"wrote {models / 'cot_metrics_validation.json'}" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["models"]


def test_report_never_overwrites_the_metrics_of_another_file(trained_run, tmp_path):
    from rollfit.analysis.report import write_run_report

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    data = Surrogate.load(run).config["data_summary"]["files"][0]
    other = tmp_path / "campaign.h5"
    shutil.copy(data, other)
    ev = evaluate_run(run, hdf5=str(other))
    file_metrics = write_metrics(RunFolder(run), ev)
    assert file_metrics.name == "metrics_campaign.json"
    before = file_metrics.read_text()
    write_run_report(run, slices=["gait_cadence"])
    assert file_metrics.read_text() == before
    assert json.loads((run / "metrics_validation.json").read_text())["cot_ma15"]["evaluated_on"] == "validation"


# ---- read-only folders and damaged checkpoints ---------------------------------------------
@pytest.fixture
def read_only_run(trained_run, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    run = tmp_path / "ro"
    shutil.copytree(trained_run, run)
    run.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield run
    run.chmod(stat.S_IRWXU)


def test_evaluate_on_a_read_only_run_prints_and_warns(read_only_run, capsys):
    with pytest.warns(UserWarning, match="the results are printed but not saved; pass --output DIR"):
        assert main(["evaluate", "--run", str(read_only_run)]) == 0
    assert "metrics on" in capsys.readouterr().out


def test_evaluate_prints_and_warns_when_the_metrics_cannot_be_written(trained_run, monkeypatch, capsys):
    """The same as above for root (who can write anywhere): the write itself fails."""
    import rollfit.analysis.evaluate as evaluate_mod

    def refuse(path, obj):
        raise OutputError(f"{path}: could not write, the folder is not writable (Read-only file system)")

    monkeypatch.setattr(evaluate_mod, "atomic_write_json", refuse)
    with pytest.warns(UserWarning, match=r"metrics_validation.json: could not write, the folder is not writable "
                                         r"\(Read-only file system\); the results are printed but not saved; "
                                         "pass --output DIR to save them"):
        assert main(["evaluate", "--run", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "metrics on" in out and "wrote" not in out


def test_plot_on_a_read_only_run_fails_before_drawing_naming_output(read_only_run, tmp_path):
    from rollfit.analysis.plots import make_plots

    with pytest.raises(OutputError, match=r"expected a writable run folder for the outputs, but it is read-only "
                                          r".*; pass --output DIR$"):
        make_plots(read_only_run)
    written = make_plots(read_only_run, slices=["gait_cadence"], output=tmp_path / "out")
    assert all(Path(p).parent == tmp_path / "out" / "plots" for p in written.values())


def test_check_output_names_output_for_an_unwritable_folder(tmp_path, monkeypatch):
    """The same rule without needing a non-root user: the write probe fails."""
    import rollfit.runs.folder as folder_mod

    def refuse(folder):
        raise OutputError(f"{folder}: could not write, the folder is not writable (Read-only file system)")

    monkeypatch.setattr(folder_mod, "check_writable", refuse)
    with pytest.raises(OutputError) as err:
        RunFolder(tmp_path).check_output()
    assert str(err.value) == (f"{tmp_path}: expected a writable run folder for the outputs, but it is read-only "
                              "or not writable (Read-only file system); pass --output DIR")


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "best.ckpt").unlink()  # as with trainer.keep_best=false: the ep_*.ckpt are used
    ckpts = list_checkpoints(run)
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"{ckpts[-1].name}: expected a torch checkpoint, but it could not be read "
                                         r".*; using the next older checkpoint"):
        s = Surrogate.load(run)
    assert s.checkpoint == ckpts[-2]


def test_the_next_writer_removes_orphan_temp_files(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run").run_dir
    orphans = [run / ".config.yaml.abc.tmp", run / "checkpoints" / ".ep_000004.ckpt.x1.tmp"]
    for p in orphans:
        p.write_bytes(b"half")
    resume(run, ["trainer.max_epochs=6"])
    assert not any(p.exists() for p in orphans)


def test_optimize_vary_on_an_unwritable_run_fails_before_computing_naming_csv(trained_run, monkeypatch, capsys):
    import rollfit.analysis.optimize as optimize_mod
    import rollfit.runs.folder as folder_mod

    def refuse(folder):
        raise OutputError(f"{folder}: could not write, the folder is not writable (Read-only file system)")

    def never(*args, **kwargs):
        raise AssertionError("computed although nothing could be saved")

    monkeypatch.setattr(folder_mod, "check_writable", refuse)
    monkeypatch.setattr(optimize_mod, "sweep_optimum", never)
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--vary", "speed=0.9:1.2:4",
                 "--constraint", "gait_stride*gait_cadence=speed"])
    err = capsys.readouterr().err
    assert code == 2 and err.endswith("or not writable (Read-only file system); pass --csv FILE\n")


def test_a_checkpoint_named_from_inside_its_checkpoints_folder_finds_its_run(trained_run, monkeypatch):
    monkeypatch.chdir(trained_run / "checkpoints")
    name = list_checkpoints(trained_run)[-1].name
    folder = RunFolder.of_checkpoint(name)
    assert folder.root == trained_run.resolve() and not folder.is_stray and folder.checkpoint == Path(name)


def test_the_next_report_removes_orphans_of_a_killed_command_but_not_live_ones(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    old, fresh = run / ".report.html.k1ll3d.tmp", run / "plots" / ".loss.png.live.tmp"
    fresh.parent.mkdir(exist_ok=True)
    for p in (old, fresh):
        p.write_bytes(b"half")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with RunLock(run / "rollfit.lock"):  # a run writing: nothing of its is touched
        assert RunFolder(run).clean_orphans() == []
    assert old.exists()
    RunFolder(run).check_output()
    assert not old.exists() and fresh.exists()  # a recent file may be a live write of another command


def test_resume_does_not_write_the_cache_where_a_checkpoint_says(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run").run_dir
    newest = list_checkpoints(run)[-1]
    ckpt = torch.load(newest, weights_only=True)
    elsewhere = tmp_path / "elsewhere"
    ckpt["config"]["run_config"]["data"].update(cache=True, cache_dir=str(elsewhere))
    save_checkpoint(newest, ckpt)
    resume(run, ["trainer.max_epochs=6"])
    assert not elsewhere.exists()


def test_cli_train_into_a_finished_run_is_one_line_and_overwrite_replaces_it(demo_file, tmp_path, capsys):
    run = _train(demo_file, tmp_path / "run").run_dir
    args = ["train", "--hdf5", str(demo_file), "--output", str(run), *QUICK]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"rollfit train: error: {run}: expected a new or empty run folder, but it holds a run (config.yaml, "
                   f"checkpoints/, logs/); continue it with --resume {run}, or replace it with --overwrite\n")
    assert main([*args, "--overwrite"]) == 0
    assert len(list((run / "logs").glob("*_hparams.json"))) == 1


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(demo_file, tmp_path):
    run = _train(demo_file, tmp_path / "run").run_dir
    before = sorted(p.name for p in list_checkpoints(run))
    with pytest.raises(DataFileNotFound):
        train(demo_config(tmp_path / "missing.h5", QUICK), run, overwrite=True)
    assert sorted(p.name for p in list_checkpoints(run)) == before and (run / "config.yaml").is_file()


def test_orphan_cleanup_and_overwrite_never_reach_through_a_symlink(tmp_path):
    """A run folder is data: a symlinked subfolder (crafted, or a user's link to other storage)
    must not let the orphan cleanup delete ``.*.tmp`` files elsewhere, nor --overwrite fail
    half-way (``rmtree`` refuses links) or empty the link's target."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".draft.tmp").write_text("someone's")
    (elsewhere / "keep.json").write_text("{}")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".ep_000001.ckpt.x.tmp").write_bytes(b"half")
    (run / "extra").symlink_to(elsewhere, target_is_directory=True)
    (run / "logs").symlink_to(elsewhere, target_is_directory=True)
    folder = RunFolder(run)
    removed = folder.remove_stale_temp_files()
    assert removed == [run / "checkpoints" / ".ep_000001.ckpt.x.tmp"]
    assert (elsewhere / ".draft.tmp").read_text() == "someone's"
    folder.clear()
    assert not (run / "logs").exists() and not (run / "logs").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == [".draft.tmp", "keep.json"]


def test_a_symlinked_lock_file_is_refused_not_written_through(trained_run, tmp_path, capsys):
    """A received run folder whose rollfit.lock links to another file: taking the lock (train,
    --resume, report's orphan cleanup) truncated that file and wrote a pid into it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "rollfit.lock").symlink_to(victim)
    with pytest.raises(OutputError, match="rollfit.lock"):
        RunLock(run / "rollfit.lock").acquire()
    assert victim.read_text() == "precious"
    main(["report", "--run", str(run)])
    capsys.readouterr()
    assert victim.read_text() == "precious"
