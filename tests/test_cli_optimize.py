"""``rollfit optimize --vary``: the optimum along swept values (what ``sweep-optimum`` did)."""
from rollfit.cli.main import main


def test_optimize_vary_writes_csv_and_plot(trained_run, tmp_path, capsys):
    out = tmp_path / "path" / "speed.csv"
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--vary", "speed=0.9:1.2:4",
                 "--constraint", "gait_stride*gait_cadence=speed", "--starts", "16", "--steps", "300",
                 "--csv", str(out)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("speed,gait_cadence,gait_stride,cot_ma15,objective,feasible")
    assert [float(ln.split(",")[0]) for ln in lines[1:]] == [0.9, 1.0, 1.1, 1.2]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out}\nwrote {out.with_suffix('.png')}\n" in capsys.readouterr().out


def test_optimize_vary_infeasible_points_exit_1(trained_run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    code = main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--vary", "speed=0.9:100:2",
                 "--constraint", "gait_stride*gait_cadence=speed", "--bounds", "gait_stride=0.8:1.2",
                 "gait_cadence=0.8:1.2", "--starts", "4", "--steps", "100", "--csv", str(out), "--no-plot"])
    err = capsys.readouterr().err
    assert code == 1 and "1 of 2 sweep points are infeasible" in err
    assert out.is_file() and not out.with_suffix(".png").exists()


def test_csv_without_vary_is_a_usage_error(trained_run, capsys):
    assert main(["optimize", "--run", str(trained_run), "--target", "cot_ma15", "--csv", "x.csv"]) == 2
    assert capsys.readouterr().err == ("rollfit optimize: error: --csv: expected it only with --vary (it names what "
                                       "--vary writes), but got no --vary\n")
