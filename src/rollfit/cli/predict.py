"""``rollfit predict``: a trained run's predictions for the inputs in a CSV or rollout HDF5 file.

Input CSV: a header row naming the columns; the run's input labels must be among them,
other columns (``param_idx``, notes...) are passed through unchanged. Input HDF5: the
successful rows of a rollout file, read as the run read its data (``param_idx`` and, for
several files, ``file`` are passed through). Output CSV: the input columns, then one column
per output label (``<label>_pred`` when the input already has a column of that name).
Pandas is not needed: the ``csv`` module and numpy do the work.
"""
from __future__ import annotations

ORDER = 3

import argparse
import csv
import io
from pathlib import Path
from typing import Any, Sequence

from .main import add_debug

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict outputs for inputs in a CSV or rollout file", description=(
        "Predict a trained run's outputs (original units) for the inputs in a CSV file (columns named by the "
        "run's input labels; other columns are passed through) or a rollout HDF5 file; write a CSV."))
    p.add_argument("--run", required=True, metavar="DIR", help="run folder (newest checkpoint) or a checkpoint file")
    p.add_argument("--input", required=True, metavar="FILE", help="input CSV or rollout HDF5 file")
    p.add_argument("--output", required=True, metavar="FILE", help="output CSV (written atomically)")
    p.add_argument("--activation", help="activation of an original-pipeline run that does not record it")
    add_debug(p)
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- CSV in and out
def is_hdf5(path: str | Path) -> bool:
    """True when the file starts with the HDF5 signature (whatever its extension)."""
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_MAGIC


def read_csv(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows (as strings) of a CSV file; blank lines are ignored."""
    from ..errors import DataError

    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
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
    """(N, len(names)) float array of the named columns; one-line errors for missing or bad cells."""
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
                out[i, j] = float(row[c])
            except ValueError:
                raise DataError(f"{path}: row {i + 1}, column '{name}': expected a number, "
                                f"but got {row[c]!r}") from None
    return out


def output_columns(header: Sequence[str], out_lbl: Sequence[str]) -> list[str]:
    """Prediction column names: the labels, with ``_pred`` added where an input column has that name."""
    return [f"{lbl}_pred" if lbl in header else lbl for lbl in out_lbl]


def format_number(value: Any) -> str:
    """A float with enough digits to round-trip a float32 prediction exactly."""
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


def predict_file(surrogate, input_path: str | Path, output_path: str | Path) -> int:
    """Write the predictions for ``input_path`` (CSV or rollout HDF5) to ``output_path``; returns rows."""
    from ..errors import DataFileNotFound
    from ..io import atomic_write_text

    p = Path(input_path)
    if not p.is_file():
        raise DataFileNotFound(f"{p}: expected an input CSV or rollout HDF5 file, but it does not exist")
    if is_hdf5(p):
        header, cells, x = hdf5_input(surrogate, p)
    else:
        header, cells = read_csv(p)
        x = numeric_columns(p, header, cells, surrogate.in_lbl)
    pred = surrogate.predict(x) if len(x) else []
    rows = [list(c) + [format_number(v) for v in pred[i]] for i, c in enumerate(cells)]
    atomic_write_text(output_path, csv_text(header + output_columns(header, surrogate.out_lbl), rows))
    return len(rows)


def run(args: argparse.Namespace) -> int:
    from ..analysis.surrogate import Surrogate

    s = Surrogate.load(args.run, activation=args.activation)
    n = predict_file(s, args.input, args.output)
    print(f"wrote {n} rows with predicted {', '.join(s.out_lbl)} to {args.output}")
    return 0
