"""``rollfit predict``: CSV in (named columns, pass-through extras) or rollout HDF5 in, CSV out."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from rollfit.analysis.surrogate import Surrogate
from rollfit.cli.main import main
from rollfit.data.reader import load_rollouts


def _read(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_round_trip_with_pass_through_columns(trained_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.7, 1.3, (25, 2))
    header = ["param_idx", "gait_stride", "note", "gait_cadence"]  # any order, extra columns
    rows = [[str(i), repr(float(x[i, 1])), f"run {i}, \"quoted\"", repr(float(x[i, 0]))] for i in range(25)]
    src = _write(tmp_path / "in.csv", header, rows)
    out = tmp_path / "out" / "pred.csv"
    assert main(["predict", "--run", str(trained_run), "--input", str(src), "--csv", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote 25 rows with predicted cot_ma15 to {out}\n"
    got_header, got_rows = _read(out)
    assert got_header == header + ["cot_ma15"]
    assert [r[:4] for r in got_rows] == rows  # input cells passed through verbatim
    want = Surrogate.load(trained_run).predict({"gait_cadence": x[:, 0], "gait_stride": x[:, 1]})[:, 0]
    np.testing.assert_array_equal(np.array([float(r[4]) for r in got_rows], np.float32), want)
    assert [p.name for p in out.parent.iterdir()] == ["pred.csv"]  # written atomically, no temp file left


def test_rollout_hdf5_input(trained_run, demo_file, tmp_path):
    out = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(trained_run), "--input", str(demo_file), "--csv", str(out)]) == 0
    header, rows = _read(out)
    assert header == ["param_idx", "gait_cadence", "gait_stride", "cot_ma15"]
    table = load_rollouts(demo_file, ["gait_cadence", "gait_stride"], ["cot_ma15"], cache=False)
    assert [int(r[0]) for r in rows] == table.param_idx.tolist()
    np.testing.assert_array_equal(np.array([[float(c) for c in r[1:3]] for r in rows], np.float32), table.inputs)
    want = Surrogate.load(trained_run).predict(table.inputs)[:, 0]
    np.testing.assert_array_equal(np.array([float(r[3]) for r in rows], np.float32), want)


def test_a_column_named_like_an_output_keeps_its_values(trained_run, tmp_path):
    src = _write(tmp_path / "in.csv", ["gait_cadence", "gait_stride", "cot_ma15"], [["1.0", "1.0", "60.5"]])
    out = tmp_path / "out.csv"
    assert main(["predict", "--run", str(trained_run), "--input", str(src), "--csv", str(out)]) == 0
    header, rows = _read(out)
    assert header == ["gait_cadence", "gait_stride", "cot_ma15", "cot_ma15_pred"] and rows[0][2] == "60.5"


@pytest.mark.parametrize("header, rows, message", [
    (["gait_stride", "param_idx"], [["1.0", "3"]],
     "{src}: expected a column 'gait_cadence' (an input of the run), but it is missing; columns present: "
     "'gait_stride', 'param_idx'"),
    (["gait_cadence", "gait_stride"], [["1.0", "1.1"], ["abc", "1.0"]],
     "{src}: row 2, column 'gait_cadence': expected a number, but got 'abc'"),
    (["gait_cadence", "gait_stride"], [["1.0", "1.1", "9"]],
     "{src}: line 2: expected 2 fields like the header, but got 3"),
    ([], [], "{src}: expected a CSV file with a header row of column names, but it is empty"),
])
def test_bad_csv_inputs_are_one_line_errors(trained_run, tmp_path, capsys, header, rows, message):
    src = tmp_path / "in.csv"
    if header:
        _write(src, header, rows)
    else:
        src.write_text("")
    out = tmp_path / "out.csv"
    assert main(["predict", "--run", str(trained_run), "--input", str(src), "--csv", str(out)]) == 2
    assert capsys.readouterr().err == "rollfit predict: error: " + message.format(src=src) + "\n"
    assert not out.exists()


def test_missing_input_file(trained_run, tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    out = tmp_path / "o.csv"
    assert main(["predict", "--run", str(trained_run), "--input", str(missing), "--csv", str(out)]) == 2
    assert capsys.readouterr().err == (f"rollfit predict: error: {missing}: expected an input CSV or rollout HDF5 "
                                       "file, but it does not exist\n")
