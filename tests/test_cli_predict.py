"""``rollfit predict`` on hostile or unusual CSV files: one-line errors naming the file and
line (or row), refusal of non-finite inputs, one warning per column outside the training range."""
import subprocess
import sys

import pytest

from rollfit.cli.main import main
from rollfit.cli.predict import FIELD_LIMIT, read_csv, range_warnings

HEADER = b"gait_cadence,gait_stride,note\n"


def _predict(run, src, out):
    return main(["predict", "--run", str(run), "--input", str(src), "--csv", str(out)])


@pytest.mark.parametrize("content, message", [
    (HEADER + "1.0,1.1,caf\u00e9\n".encode("latin-1"),
     "line 2: expected UTF-8 text, but got the byte 0xe9 (save the file as UTF-8)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "line 3: expected a text CSV file, but got binary data (a NUL byte)"),
    (HEADER + b"1.0,1.1,ok\n1.0,1.1," + b"x" * (FIELD_LIMIT + 1) + b"\n",
     f"line 3: expected fields of at most {FIELD_LIMIT} characters, but got a longer one"),
    (HEADER + b'1.0,1.1,"unclosed\n', None),
])
def test_unreadable_csv_is_one_line_naming_file_and_line(tmp_path, content, message):
    from rollfit.errors import DataError

    src = tmp_path / "in.csv"
    src.write_bytes(content)
    if message is None:  # an unclosed quote runs to the end of the file: still a table, one row
        header, rows = read_csv(src)
        assert header == ["gait_cadence", "gait_stride", "note"] and len(rows) == 1
        return
    with pytest.raises(DataError) as exc:
        read_csv(src)
    assert str(exc.value) == f"{src}: {message}"


def test_unreadable_csv_through_the_cli_before_loading_the_model(trained_run, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_bytes(HEADER + "1.0,1.1,caf\u00e9\n".encode("latin-1"))
    assert _predict(trained_run, src, tmp_path / "out.csv") == 2
    assert capsys.readouterr().err == (f"rollfit predict: error: {src}: line 2: expected UTF-8 text, but got the "
                                       "byte 0xe9 (save the file as UTF-8)\n")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("cell", ["nan", "inf", "-inf", "1e400", "NaN"])
def test_non_finite_inputs_are_refused_with_the_row(trained_run, tmp_path, capsys, cell):
    src = tmp_path / "in.csv"
    src.write_text(f"gait_cadence,gait_stride\n1.0,1.1\n1.0,{cell}\n")
    assert _predict(trained_run, src, tmp_path / "out.csv") == 2
    assert capsys.readouterr().err == (f"rollfit predict: error: {src}: row 2, column 'gait_stride': expected a "
                                       f"finite number, but got '{cell}'\n")
    assert not (tmp_path / "out.csv").exists()


def test_range_warnings_once_per_column():
    import numpy as np

    x = np.array([[1.0, 0.5], [1.0, 2.0], [1.0, 1.0]])
    bounds = {"a": (0.9, 1.1), "b": (0.8, 1.2)}
    assert range_warnings(x, ["a", "b"], bounds) == [
        "column 'b': 2 of 3 rows outside the training range [0.8, 1.2] (min 0.5, max 2); predictions there are "
        "extrapolations"]
    assert range_warnings(x[:, :1], ["a"], bounds) == []
    assert "estimated training range (mean +- 2 std)" in range_warnings(x, ["a", "b"], bounds, estimated=True)[0]


def test_predict_warns_once_per_column_outside_the_training_range(trained_run, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("gait_cadence,gait_stride\n1.0,5.0\n1.0,6.0\n1.0,1.0\n0.01,7.0\n")
    proc = subprocess.run([sys.executable, "-m", "rollfit", "predict", "--run", str(trained_run), "--input", str(src),
                           "--csv", str(tmp_path / "out.csv")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert len(warned) == 2 and warned[0].startswith("rollfit: warning: column 'gait_cadence': 1 of 4 rows outside "
                                                     "the training range [")
    assert warned[1].startswith("rollfit: warning: column 'gait_stride': 3 of 4 rows outside the training range [")
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 5
