"""``rollfit predict``: a trained run's predictions for the inputs in a CSV or rollout HDF5 file.

Input CSV: a header row naming the columns; the run's input labels must be among them,
other columns (``param_idx``, notes...) are passed through unchanged. Input HDF5: the
successful rows of a rollout file, read as the run read its data (``param_idx`` and, for
several files, ``file`` are passed through). Output CSV: the input columns, then one column
per output label (``<label>_pred`` when the input already has a column of that name), then,
for a model with an uncertainty, one ``<label>_std`` column per output (the standard
deviation of a new observation: mean +- 1.96 std is a 95% interval).
Pandas is not needed: the ``csv`` module and numpy do the work.
"""
from __future__ import annotations

ORDER = 3

import argparse
import csv
import io
from pathlib import Path
from typing import Any, Sequence

from .args import check_run, command, rename

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
FIELD_LIMIT = csv.field_size_limit()  # 131072 characters, the csv module's default


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "predict", "run", "activation", help="predict outputs for inputs in a CSV or rollout file",
                description=(
        "Predict a trained run's outputs (original units) for the inputs in a CSV file (columns named by the "
        "run's input labels; other columns are passed through) or a rollout HDF5 file; write a CSV. A model "
        "with an uncertainty (gp, robust_gp, ensemble) adds a <label>_std column per output after the means. "
        "Inputs must be finite; a column with values outside the training range gets one warning."))
    p.add_argument("--input", required=True, metavar="FILE", help="input CSV (UTF-8) or rollout HDF5 file")
    p.add_argument("--csv", required=True, metavar="FILE", help="output CSV to write (atomically)")
    rename(p, "--output", "--csv")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- CSV in and out
def is_hdf5(path: str | Path) -> bool:
    """True when the file starts with the HDF5 signature (whatever its extension)."""
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_MAGIC


def csv_text_of(path: str | Path) -> str:
    """The text of a CSV file: UTF-8 (a BOM is allowed); binary data or other encodings are
    one-line errors naming the line."""
    from ..errors import DataError

    data = Path(path).read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}: line {line}: expected a text CSV file, but got binary data (a NUL byte)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: line {line}: expected UTF-8 text, but got the byte 0x{data[exc.start]:02x} "
                        f"(save the file as UTF-8)") from None


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows (as strings) of a CSV file; blank lines are ignored."""
    from ..errors import DataError

    reader = csv.reader(io.StringIO(csv_text_of(path), newline=""))
    try:
        return _csv_rows(path, reader)
    except csv.Error as exc:
        line = reader.line_num
        if "field larger" in str(exc):
            raise DataError(f"{path}: line {line}: expected fields of at most {FIELD_LIMIT} characters, "
                            f"but got a longer one") from None
        raise DataError(f"{path}: line {line}: expected CSV, but got {exc}") from None


def _csv_rows(path: str | Path, reader) -> tuple[list[str], list[list[str]]]:
    from ..errors import DataError

    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{path}: expected a CSV file with a header row of column names, but it is empty")
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: expected each column name once, but got '{dupes[0]}' more than once")
    rows = []
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {reader.line_num}: expected {len(header)} fields like the header, "
                            f"but got {len(row)}")
        rows.append(row)
    return header, rows


def numeric_columns(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[str]],
                    names: Sequence[str]):
    """(N, len(names)) float array of the named columns; one-line errors for missing, bad or
    non-finite cells (NaN, inf, 1e400), naming the row."""
    import math

    import numpy as np

    from ..errors import DataError, listing

    out = np.empty((len(rows), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        if name not in header:
            raise DataError(f"{path}: expected a column '{name}' (an input of the run), but it is missing; "
                            f"columns present: {listing(list(header), name)}")
        c = header.index(name)
        for i, row in enumerate(rows):
            try:
                out[i, j] = value = float(row[c])
            except ValueError:
                raise DataError(f"{path}: row {i + 1}, column '{name}': expected a number, "
                                f"but got {row[c][:40]!r}") from None
            if not math.isfinite(value):
                raise DataError(f"{path}: row {i + 1}, column '{name}': expected a finite number, "
                                f"but got {row[c].strip()[:40]!r}")
    return out


def range_warnings(x, in_lbl: Sequence[str], bounds, estimated: bool = False) -> list[str]:
    """One warning per input column with values outside the training range ``bounds``."""
    kind = "estimated training range (mean +- 2 std)" if estimated else "training range"
    out = []
    for j, lbl in enumerate(in_lbl):
        lo, hi = bounds[lbl]
        col = x[:, j]
        n = int(((col < lo) | (col > hi)).sum())
        if n:
            out.append(f"column '{lbl}': {n} of {len(col)} rows outside the {kind} [{lo:.6g}, {hi:.6g}] "
                       f"(min {col.min():.6g}, max {col.max():.6g}); predictions there are extrapolations")
    return out


def output_columns(header: Sequence[str], out_lbl: Sequence[str]) -> list[str]:
    """Prediction column names: the labels, with ``_pred`` added where an input column has that name."""
    return [f"{lbl}_pred" if lbl in header else lbl for lbl in out_lbl]


def std_columns(header: Sequence[str], out_lbl: Sequence[str]) -> list[str]:
    """Uncertainty column names: ``<label>_std``, or ``<label>_pred_std`` where that name is taken
    (by an input column or a prediction column)."""
    taken = set(header) | set(output_columns(header, out_lbl))
    return [f"{lbl}_pred_std" if f"{lbl}_std" in taken else f"{lbl}_std" for lbl in out_lbl]


def format_number(value: Any) -> str:
    """A float with enough digits to round-trip it exactly: 9 significant digits for a float32
    (network predictions), the shortest exact form for a numpy float64 (GP predictions)."""
    if type(value).__name__ == "float64":
        return repr(float(value))
    return f"{float(value):.9g}"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV document (``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- predicting
def hdf5_input(surrogate, path: str | Path) -> tuple[list[str], list[list[str]], Any]:
    """Header, pass-through cells and inputs of the successful rows of a rollout file."""
    from ..analysis.evaluate import load_run_table

    table = load_run_table(surrogate, str(path))
    several = len(table.files) > 1
    header = ["param_idx", *(["file"] if several else []), *surrogate.in_lbl]
    cells = []
    for i in range(len(table)):
        row = [str(int(table.param_idx[i]))]
        if several:
            row.append(str(table.files[table.source[i]]))
        cells.append(row + [format_number(v) for v in table.inputs[i]])
    return header, cells, table.inputs


def predict_file(surrogate, input_path: str | Path, output_path: str | Path, csv_table=None) -> int:
    """Write the predictions for ``input_path`` (CSV or rollout HDF5) to ``output_path``; returns rows.
    A model with an uncertainty adds the ``std_columns`` after the means. ``csv_table``: the
    CSV's (header, rows) when already read. Warns once per input column outside the training range."""
    import warnings

    from ..io import atomic_write_text

    p = Path(input_path)
    check_input(p)
    if is_hdf5(p):
        header, cells, x = hdf5_input(surrogate, p)
    else:
        header, cells = csv_table or read_csv(p)
        x = numeric_columns(p, header, cells, surrogate.in_lbl)
    if len(x):
        for w in range_warnings(x, surrogate.in_lbl, surrogate.bounds, surrogate.bounds_are_estimated):
            warnings.warn(w, stacklevel=2)
    columns = header + output_columns(header, surrogate.out_lbl)
    if surrogate.has_std:
        columns += std_columns(header, surrogate.out_lbl)
        pred, std = surrogate.predict(x, return_std=True) if len(x) else ([], [])
        values = [list(pred[i]) + list(std[i]) for i in range(len(cells))]
    else:
        values = surrogate.predict(x) if len(x) else []
    rows = [list(c) + [format_number(v) for v in values[i]] for i, c in enumerate(cells)]
    atomic_write_text(output_path, csv_text(columns, rows))
    return len(rows)


def check_input(p: Path) -> None:
    from ..errors import DataFileNotFound

    if not p.is_file():
        raise DataFileNotFound(f"{p}: expected an input CSV or rollout HDF5 file, but it does not exist")


def run(args: argparse.Namespace) -> int:
    p = Path(args.input)
    check_run(args.run)
    check_input(p)
    table = None if is_hdf5(p) else read_csv(p)  # encoding and CSV structure, before torch is imported
    from ..analysis.surrogate import Surrogate

    s = Surrogate.load(args.run, activation=args.activation)
    n = predict_file(s, args.input, args.csv, table)
    std = " and their standard deviations" if s.has_std else ""
    print(f"wrote {n} rows with predicted {', '.join(s.out_lbl)}{std} to {args.csv}")
    return 0
