"""One CLI contract over every command: exit 2, exactly one line on stderr starting
``rollfit <command>: error:``, no traceback, and no torch import before the first error.

Each command gets at least one bad argument, one bad file and one bad value; the cases
need no trained model (a run folder with a placeholder checkpoint passes the path checks),
so they also prove that these errors answer before torch is imported.
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rollfit.cli.args import SEED_MAX, split_overrides
from rollfit.cli.main import build_parser, main, visible_commands

ROOT = Path(__file__).resolve().parents[1]


def fake_run(base: Path) -> Path:
    """A run folder whose checkpoint is a placeholder: enough for every check before loading."""
    run = base / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "ep_000001.ckpt").write_bytes(b"placeholder")
    (run / "config.yaml").write_text("data: {}\nmodel: {}\ntrainer: {}\n")
    return run


def cases(base: Path) -> list[tuple[str, str, list[str]]]:
    """(command, kind, argv) for every command: a bad argument, a bad file and a bad value."""
    run, h5, nope = str(fake_run(base)), str(base / "data.h5"), str(base / "nope.h5")
    Path(h5).write_bytes(b"not read by these cases")
    (base / "bad.yaml").write_text("trainer:\n  max_epochs: -3\n")
    (base / "space.yaml").write_text("trainer.lr: [0.1, 0.01]\n")
    (base / "file").write_text("a file, not a folder")
    r = ["--run", run]
    return [
        ("demo", "argument", ["demo", "--grups", "10"]),
        ("demo", "file", ["demo", "--output", str(base / "file")]),
        ("demo", "value", ["demo", "--groups", "5"]),
        ("train", "argument", ["train", "--hdf5", h5, "--epochs", "3"]),
        ("train", "file", ["train", "--hdf5", nope]),
        ("train", "value", ["train", "--hdf5", h5, "trainer.max_epochs=-1"]),
        ("inspect", "argument", ["inspect", "--hdf5", h5, "--in-label", "x"]),
        ("inspect", "file", ["inspect", "--hdf5", nope]),
        ("inspect", "value", ["inspect", "--hdf5", h5, "--config", str(base / "bad.yaml")]),
        ("predict", "argument", ["predict", *r, "--input", h5]),
        ("predict", "file", ["predict", *r, "--input", nope, "--csv", str(base / "o.csv")]),
        ("predict", "value", ["predict", *r, "--input", h5, "--csv", "o.csv", "--activation", "rleu"]),
        ("evaluate", "argument", ["evaluate", *r, "--folds", "3"]),
        ("evaluate", "file", ["evaluate", "--run", nope]),
        ("evaluate", "value", ["evaluate", *r, "--cv", "1"]),
        ("plot", "argument", ["plot", *r, "--pair", "a,b"]),
        ("plot", "file", ["plot", "--run", nope]),
        ("plot", "value", ["plot", *r, "--hold", "gait_stride=fast"]),
        ("report", "argument", ["report"]),
        ("report", "file", ["report", "--run", nope]),
        ("report", "value", ["report", *r, "--pairs", "a,b,c"]),
        ("export", "argument", ["export", *r, "--format", "c"]),
        ("export", "file", ["export", "--run", nope, "--format", "c", "--file", "m.h"]),
        ("export", "value", ["export", *r, "--format", "onxx", "--file", "m.onnx"]),
        ("optimize", "argument", ["optimize", *r, "--target", "y", "--maximise"]),
        ("optimize", "file", ["optimize", "--run", nope, "--target", "y"]),
        ("optimize", "value", ["optimize", *r, "--target", "y", "--vary", "speed=0.8:1.4:100000000"]),
        ("suggest", "argument", ["suggest", *r, "--n", "4", "--output", "o.csv", "--goals", "explore"]),
        ("suggest", "file", ["suggest", "--run", nope, "--n", "4", "--output", "o.csv"]),
        ("suggest", "value", ["suggest", *r, "--n", "0", "--output", "o.csv"]),
        ("sweep", "argument", ["sweep", "--space", str(base / "space.yaml")]),
        ("sweep", "file", ["sweep", "--space", nope, "--output", str(base / "sw")]),
        ("sweep", "value", ["sweep", "--space", str(base / "space.yaml"), "--output", str(base / "sw"),
                            "--metric", "loss/vall"]),
    ]


def test_every_command_has_the_three_kinds_of_case(tmp_path):
    covered = {(c, k) for c, k, _ in cases(tmp_path)}
    assert covered == {(c, k) for c in visible_commands(build_parser()) for k in ("argument", "file", "value")}


@pytest.mark.parametrize("index", range(33))
def test_error_contract(tmp_path, capsys, index):
    cmd, kind, argv = cases(tmp_path)[index]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and err.startswith(f"rollfit {cmd}: error: "), err
    assert "Traceback" not in err
    assert "version_0" not in {p.name for p in tmp_path.rglob("*")}  # nothing was created


def test_errors_come_before_torch_is_imported(tmp_path):
    """Every case above, in a fresh interpreter: torch must still be absent afterwards."""
    script = textwrap.dedent(f"""
        import io, json, sys, time, contextlib
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from pathlib import Path
        from test_cli_contract import cases
        from rollfit.cli.main import main
        out = []
        for cmd, kind, argv in cases(Path({str(tmp_path)!r})):
            t = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                code = main(argv)
            out.append([cmd, kind, code, time.perf_counter() - t, "torch" in sys.modules])
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    rows = json.loads(proc.stdout)
    assert [r for r in rows if r[2] != 2 or r[4]] == []  # every case: exit 2, torch never imported


def test_a_wrong_flag_answers_fast_in_a_fresh_process(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "rollfit", "train", "--hdf5",
                           str(tmp_path / "nope.h5")], capture_output=True, text=True, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    errors = [ln for ln in lines if not ln.startswith("import time:")]
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith("rollfit train: error: --hdf5 ")
    assert not any(ln.rstrip().endswith("| torch") for ln in lines)


# ----------------------------------------------------------------------------- argparse's own errors
@pytest.mark.parametrize("argv, message", [
    ([], "rollfit: error: COMMAND: expected one of demo, train, inspect, predict, evaluate, plot, report, export, "
         "optimize, suggest, sweep, but got none"),
    (["trian"], "rollfit: error: COMMAND: expected one of demo, train, inspect, predict, evaluate, plot, report, "
                "export, optimize, suggest, sweep, but got 'trian'; did you mean 'train'?"),
    (["evaluate"], "rollfit evaluate: error: expected --run, but it is missing"),
    (["export", "--format", "c"], "rollfit export: error: expected --run, --file, but they are missing"),
    (["train", "--hdf55", "x"], "rollfit train: error: --hdf55: expected an option of rollfit train, but got an "
                                "unknown one; did you mean '--hdf5'?"),
    (["evaluate", "--run", "r", "extra"], "rollfit evaluate: error: 'extra': expected no further arguments, "
                                          "but got this one"),
    (["train", "--resume", "a", "--init-from", "b"], "rollfit train: error: --init-from: expected either --resume "
                                                     "or --init-from, but got both"),
    (["evaluate", "--run"], "rollfit evaluate: error: --run: expected a value, but got none"),
    (["plot", "--run", "r", "--slice"], "rollfit plot: error: --slice: expected one or more values, but got none"),
    (["demo", "--seed", "2**70"], f"rollfit demo: error: --seed: expected an integer from 0 to {SEED_MAX}, "
                                  "but got '2**70'"),
    (["demo", "--seed", str(2**70)], f"rollfit demo: error: --seed: expected an integer from 0 to {SEED_MAX}, "
                                     f"but got {2**70}"),
    (["optimize", "--run", "r", "--target", "y", "--seed", "-1"],
     f"rollfit optimize: error: --seed: expected an integer from 0 to {SEED_MAX}, but got -1"),
    (["sweep", "--space", "s", "--output", "o", "--seed", str(2**70)],
     f"rollfit sweep: error: --seed: expected an integer from 0 to {SEED_MAX}, but got {2**70}"),
    (["train", "--nproc", "0"], "rollfit train: error: --nproc: expected an integer from 1 to 1024, but got 0"),
    (["export", "--run", "r", "--format", "c", "--file", "f", "--tolerance", "nan"],
     "rollfit export: error: --tolerance: expected a relative error > 0, but got 'nan'"),
    (["optimize", "--run", "r", "--target", "y", "--device", "gpu"],
     "rollfit optimize: error: --device: expected cpu, cuda, cuda:N or auto, but got 'gpu'"),
])
def test_usage_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert capsys.readouterr().err == message + "\n"


def test_help_exits_0(capsys):
    assert main(["optimize", "--help"]) == 0
    assert "--vary NAME=LO:HI:STEPS" in capsys.readouterr().out


# ----------------------------------------------------------------------------- train (issue 15)
def test_bare_train_and_config_without_data_are_one_line(tmp_path, capsys):
    assert main(["train"]) == 2
    assert capsys.readouterr().err == ("rollfit train: error: --hdf5: expected the rollout file(s) to train on, but "
                                       "got none; pass --hdf5 PATH (or set data.hdf5_path in the config)\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer:\n  max_epochs: 5\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == (f"rollfit train: error: {cfg}: data.hdf5_path: expected the rollout file(s) "
                                       "to train on, but got none; pass --hdf5 PATH (or set data.hdf5_path in the "
                                       "config)\n")


def test_an_override_after_hdf5_is_an_override_not_a_file(tmp_path, capsys, monkeypatch):
    data = tmp_path / "d.h5"
    data.write_bytes(b"x")
    argv = ["train", "--hdf5", str(data), "trainer.max_epochs=20", "--output", "o", "trainer.lr=0.1"]
    args = build_parser().parse_args(argv)
    split_overrides(args, argv)
    assert args.hdf5 == [str(data)] and args.overrides == ["trainer.max_epochs=20", "trainer.lr=0.1"]
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--hdf5", str(data), "trainer.max_epoch=20"]) == 2
    assert capsys.readouterr().err == ("rollfit train: error: override 'trainer.max_epoch=20': unknown key "
                                       "'trainer.max_epoch'; did you mean 'trainer.max_epochs'?\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]  # no empty rollfit_runs/version_0


def test_a_positional_that_is_not_key_value_is_refused(tmp_path, capsys):
    data = tmp_path / "d.h5"
    data.write_bytes(b"x")
    assert main(["train", "trainer.lr=0.1", str(data)]) == 2
    assert capsys.readouterr().err == (f"rollfit train: error: override '{data}': expected KEY=VALUE, e.g. "
                                       "trainer.max_epochs=200, but got no '=' (a rollout file goes after --hdf5)\n")


def test_overwrite_is_passed_to_the_pipeline(tmp_path, monkeypatch):
    import rollfit.pipeline.run as pipeline

    data = tmp_path / "d.h5"
    data.write_bytes(b"x")
    seen = {}

    def fake_train(cfg, output, **kw):
        seen.update(kw, output=output)
        raise KeyboardInterrupt  # stop here: the contract for Ctrl-C is tested below

    monkeypatch.setattr(pipeline, "train", fake_train)
    assert main(["train", "--hdf5", str(data), "--output", str(tmp_path / "r"), "--overwrite"]) == 130
    assert seen["overwrite"] is True and seen["output"] == str(tmp_path / "r")
    assert main(["train", "--resume", str(fake_run(tmp_path)), "--overwrite"]) == 2


# ----------------------------------------------------------------------------- main's contract
def test_unexpected_errors_and_interrupts_are_one_line(monkeypatch, capsys):
    import rollfit.cli.inspect as inspect_cmd

    def boom(args):
        raise ValueError("something odd")

    monkeypatch.setattr(inspect_cmd, "run", boom)
    assert main(["inspect", "--hdf5", "x"]) == 1
    assert capsys.readouterr().err == ("rollfit inspect: error: internal error: ValueError: something odd (this is a "
                                       "bug in rollfit; run with --debug for the traceback)\n")
    with pytest.raises(ValueError):
        main(["inspect", "--hdf5", "x", "--debug"])

    def denied(args):
        raise PermissionError(13, "Permission denied", "/ro/out.csv")

    monkeypatch.setattr(inspect_cmd, "run", denied)
    assert main(["inspect", "--hdf5", "x"]) == 2
    assert capsys.readouterr().err == ("rollfit inspect: error: /ro/out.csv: expected to read or write it, but got: "
                                       "Permission denied\n")

    def interrupted(args):
        raise KeyboardInterrupt("second SIGINT: aborted")

    monkeypatch.setattr(inspect_cmd, "run", interrupted)
    assert main(["inspect", "--hdf5", "x"]) == 130
    assert capsys.readouterr().err == "rollfit inspect: interrupted\n"


def test_second_ctrl_c_during_shutdown_is_one_line(tmp_path):
    """Ctrl-C, then Ctrl-C again while the first is being handled: one line, exit 130."""
    script = textwrap.dedent("""
        import os, signal, sys, time
        import rollfit.cli.inspect as cmd
        from rollfit.cli.main import main
        def run(args):
            try:
                raise KeyboardInterrupt
            finally:
                pass
        cmd.run = run
        import rollfit.cli.main as m
        real = m._interrupted
        def twice(argv):
            code = real(argv)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while shutting down
            time.sleep(0.1)
            return code
        m._interrupted = twice
        sys.argv = ["rollfit", "inspect", "--hdf5", "x"]
        sys.exit(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 130 and proc.stderr == "rollfit inspect: interrupted\n"


# ----------------------------------------------------------------------------- vocabulary
def test_one_meaning_per_flag_name():
    """A flag name has one metavar and one help text in every command (shared groups),
    except where the help names the command's own default."""
    seen: dict[str, set] = {}
    for name, p in visible_commands(build_parser()).items():
        for a in p._actions:
            for flag in a.option_strings:
                if (name, flag) == ("suggest", "--output"):  # the file of proposed points (issue 13's form)
                    continue
                seen.setdefault(flag, set()).add((a.metavar, a.nargs, a.type.__qualname__ if a.type else None))
    assert {f: s for f, s in seen.items() if len(s) > 1} == {}
    assert "--workers" not in seen and "--samples" in seen  # --samples: samples of a sweep space only
    assert all(seen["--output"] == {("DIR", None, None)} for _ in [0])  # --output: always a folder


def test_shared_groups_are_declared_once():
    import re

    source = "".join(p.read_text() for p in (ROOT / "src" / "rollfit" / "cli").glob("*.py"))
    for flag in ("--run", "--activation", "--hdf5", "--config", "--json", "--output"):
        declared = re.findall(rf'(?:add_argument\(|add_list\(p, )"{flag}"', source)
        assert len(declared) == (1 if flag != "--output" else 5), flag  # --output: train, demo, sweep, suggest, shared


def test_every_command_that_reads_a_run_takes_activation():
    for name, p in visible_commands(build_parser()).items():
        flags = {f for a in p._actions for f in a.option_strings}
        if "--run" in flags:
            assert "--activation" in flags, name


def test_list_flags_take_several_values_and_repeat():
    args = build_parser().parse_args(["optimize", "--run", "r", "--target", "y", "--fix", "a=1", "b=2",
                                      "--fix", "c=3", "--constraint", "a<=b", "--vary", "s=0:1:3", "t=0:1:2"])
    assert args.fix == ["a=1", "b=2", "c=3"] and args.vary == ["s=0:1:3", "t=0:1:2"]
    args = build_parser().parse_args(["inspect", "--hdf5", "a", "b", "--hdf5", "c", "--in-lbl", "x", "y"])
    assert args.hdf5 == ["a", "b", "c"] and args.in_lbl == ["x", "y"]
    lists = {f for p in visible_commands(build_parser()).values() for a in p._actions if a.nargs == "+"
             for f in a.option_strings}
    assert lists == {"--hdf5", "--in-lbl", "--out-lbl", "--pairs", "--slice", "--hold", "--fix", "--bounds",
                     "--constraint", "--vary", "--fixed"}


def test_deprecated_names_still_work_with_a_note(capsys):
    args = build_parser().parse_args(["export", "--run", "r", "--format", "c", "--output", "m.h", "--samples", "9"])
    assert (args.file, args.verify_samples) == ("m.h", 9)
    args = build_parser().parse_args(["evaluate", "--run", "r", "--workers", "2"])
    assert args.concurrent == 2
    args = build_parser().parse_args(["predict", "--run", "r", "--input", "i.csv", "--output", "o.csv"])
    assert args.csv == "o.csv"
    assert capsys.readouterr().err.splitlines() == [
        "rollfit export: warning: --output is deprecated; use --file",
        "rollfit export: warning: --samples is deprecated; use --verify-samples",
        "rollfit evaluate: warning: --workers is deprecated; use --concurrent",
        "rollfit predict: warning: --output is deprecated; use --csv"]


def test_sweep_optimum_is_a_hidden_alias_with_a_note(capsys):
    parser = build_parser()
    assert "sweep-optimum" not in visible_commands(parser)
    assert "sweep-optimum" not in parser.format_help()
    assert main(["sweep-optimum", "--run", "nope", "--target", "y", "--vary", "s=0:1:3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["rollfit sweep-optimum: warning: 'sweep-optimum' is deprecated; use 'rollfit optimize --vary "
                   "NAME=LO:HI:STEPS' (same options, --csv FILE for --output)",
                   "rollfit sweep-optimum: error: nope: expected a run folder or a checkpoint file, but it does not "
                   "exist"]


@pytest.mark.parametrize("vary, message", [
    (["speed=0.8:1.4:100000000"], "--vary: expected at most 10000 sweep points in all, but got 100000000 (speed) = "
                                  "100000000; use fewer STEPS"),
    (["a=0:1:200", "b=0:1:200"], "--vary: expected at most 10000 sweep points in all, but got 200 (a) x 200 (b) = "
                                 "40000; use fewer STEPS"),
    (["a=0:1:1e9"], "--vary a: expected STEPS to be a positive integer, but got '1e9'"),
    (["a=0:inf:3"], "--vary a HI: expected a finite number, but got 'inf'"),
])
def test_vary_is_refused_before_allocating(vary, message):
    from rollfit.cli.optimize import parse_vary
    from rollfit.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_vary(vary)
    assert str(exc.value) == message


def test_vary_times_starts_is_limited():
    from rollfit.cli.optimize import parse_vary
    from rollfit.errors import ConfigError

    assert parse_vary(["s=0.9:1.2:4"]) == {"s": [0.9, 1.0, 1.1, 1.2]}
    with pytest.raises(ConfigError, match=r"^--starts: expected sweep points x starts <= 2000000 \(one batch\), "
                                          r"but got 10000 x 1000; use fewer --starts or STEPS$"):
        parse_vary(["s=0:1:10000"], starts=1000)


def test_a_busy_run_folder_is_refused_before_torch(tmp_path):
    """A second ``rollfit train`` into a folder another process is writing: one line naming the
    holder's pid, before torch is imported (the lock is held here by this same script)."""
    data = tmp_path / "d.h5"
    data.write_bytes(b"x")
    script = textwrap.dedent(f"""
        import os, sys
        from rollfit.runs.folder import RunFolder
        from rollfit.cli.main import main
        RunFolder({str(tmp_path / 'busy')!r}).lock().acquire()
        code = main(["train", "--hdf5", {str(data)!r}, "--output", {str(tmp_path / 'busy')!r}])
        print(code, "torch" in sys.modules, os.getpid())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    code, torch_loaded, pid = proc.stdout.split()
    assert (code, torch_loaded) == ("2", "False")
    assert proc.stderr == (f"rollfit train: error: {tmp_path / 'busy'}: expected a run folder no other process is "
                           f"writing, but it is locked by pid {pid} (rollfit.lock); wait for that run to end or use "
                           f"another --output\n")


def test_a_multi_line_error_shows_its_first_line(monkeypatch, capsys):
    import rollfit.cli.inspect as inspect_cmd
    from rollfit.errors import ConfigError

    def caret(args):
        raise ConfigError("constraint 'a*(2', column 5: expected ')'\n  a*(2\n      ^")

    monkeypatch.setattr(inspect_cmd, "run", caret)
    assert main(["inspect", "--hdf5", "x"]) == 2
    assert capsys.readouterr().err == "rollfit inspect: error: constraint 'a*(2', column 5: expected ')'\n"


def test_an_earlier_demo_is_kept_unless_overwrite(tmp_path, capsys):
    fake_run(tmp_path)  # tmp_path/run holds a run, as an earlier demo leaves it
    assert main(["demo", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"rollfit demo: error: {tmp_path}: expected a new folder for the demo, but it "
                                       "holds an earlier demo's run; replace it with --overwrite, or choose another "
                                       "--output\n")
    assert not (tmp_path / "rollout_data.h5").exists()  # nothing was written


def test_building_the_parser_imports_nothing_heavy():
    """``--help`` and every usage error come from the parser alone: no torch, numpy, pydantic, h5py."""
    code = ("import sys, rollfit.cli.main as m; m.build_parser(); "
            "print(sorted(k for k in ('torch', 'numpy', 'pydantic', 'h5py', 'matplotlib') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_control_characters_from_files_are_shown_escaped_not_sent_to_the_terminal(monkeypatch, capsys):
    """A label read from a checkpoint or a CSV header is data: an escape sequence in it (ESC, CSI,
    a carriage return, a newline) is printed as an escape, so it cannot recolour, rewrite or hide
    the line, and a warning stays one line."""
    import rollfit.cli.inspect as inspect_cmd
    from rollfit.cli.main import _one_line_warning
    from rollfit.errors import DataError

    def hostile(args):
        raise DataError("in.csv: expected a column 'x\x1b[31m\x07\u009b2J' (an input of the run)")

    monkeypatch.setattr(inspect_cmd, "run", hostile)
    assert main(["inspect", "--hdf5", "x"]) == 2
    assert capsys.readouterr().err == ("rollfit inspect: error: in.csv: expected a column 'x\\x1b[31m\\x07\\x9b2J' "
                                       "(an input of the run)\n")
    line = _one_line_warning(UserWarning("column 'x\x1b[2K\rok\nb': 1 of 1 rows outside"), UserWarning, "f.py", 1)
    assert line == "rollfit: warning: column 'x\\x1b[2K\\rok\\nb': 1 of 1 rows outside\n"
