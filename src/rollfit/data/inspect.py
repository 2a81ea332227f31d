"""``rollfit inspect``: what is in rollout files, and what a config would load from them.

A scan reads every usable group once -- its ``param_state`` and every param-level scalar
attribute, never ``cycle_K`` data -- and reports counts, parameter ranges and attribute
ranges. With labels it also runs the real loader (policies ``skip``, no cache) so the user
sees the rows training would get and, if the default ``error`` policy would stop, why.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from h5py import h5a, h5g

from rollfit.data.cache import LoadSettings
from rollfit.data.progress import LoadProgress
from rollfit.data.reader import (
    ChunkTask, FileHeader, PathLike, _cpu_count, _GroupReader, _sigterm_stops_loading, expand_paths, open_file,
    plan_tasks, read_header, run_tasks, load_rollouts,
)
from rollfit.data.table import MAX_SKIPPED_SHOWN, RolloutTable
from rollfit.errors import DataError

AttrStats = dict[str, list]  # name -> [count, min, max]


class _ScanReader(_GroupReader):
    """A group reader that also collects every numeric scalar attribute of usable groups."""

    def __init__(self, fid, task: ChunkTask) -> None:
        super().__init__(fid, task)
        self.attrs: AttrStats = {}

    def _kept(self, g: h5g.GroupID, name: bytes) -> None:
        names: list[bytes] = []
        h5a.iterate(g, lambda n, *_: names.append(n))
        for raw in names:
            stats = self.attrs.setdefault(raw.decode(errors="replace"), [0, math.inf, -math.inf])
            stats[0] += 1
            try:
                value = self._scalar(h5a.open(g, raw), name, raw)
            except DataError:  # text or array attributes are counted, not ranged
                continue
            stats[1], stats[2] = min(stats[1], value), max(stats[2], value)


def scan_chunk(task: ChunkTask) -> tuple[RolloutTable, AttrStats]:
    """Scan one chunk: a table of all parameters of usable rows, and attribute statistics."""
    with open_file(task.path, task.file_groups) as fid:
        reader = _ScanReader(fid, task)
        return reader.run(), reader.attrs


def summarize_rollouts(
    path: PathLike | Sequence[PathLike],
    in_lbl: Sequence[str] | None = None,
    out_lbl: Sequence[str] | None = None,
    aliases: Mapping[str, str] | None = None,
    *,
    workers: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """A plain-dict summary of rollout files (see ``format_summary`` for its text form).

    ``progress``: a bar on stderr as ``load_rollouts`` shows one (None: when stderr is a
    terminal or the scan takes over a second). SIGTERM raises ``LoadInterrupted``.

    Keys: ``files`` (per file: path, groups, successes, failures, skipped), totals
    ``groups``/``successes``/``failures``/``skipped``, ``skipped_reasons``, ``parameters``
    (name -> min/max over usable rows), ``attributes`` (name -> count/min/max) and, when
    labels are given, ``load`` (rows and per-label ranges, or the error a load would raise).
    """
    files = expand_paths(path)
    tables, attrs = [], {}
    names: list[str] = []
    with _sigterm_stops_loading(str(files[0]) + (f" (+{len(files) - 1} more files)" if len(files) > 1 else "")):
        headers = [read_header(f) for f in files]
        with LoadProgress(sum(len(h.groups) for h in headers), len(files), "scanning rollouts", progress) as bar:
            for header in headers:
                table, file_attrs = _scan_file(header, workers, bar)
                tables.append(table)
                names += [n for n in table.in_lbl if n not in names]
                _merge_attrs(attrs, file_attrs)
    summary = _counts(tables)
    summary["parameters"] = _param_ranges(tables, names)
    summary["attributes"] = {k: _range(v[0], v[1], v[2]) for k, v in sorted(attrs.items())}
    if in_lbl or out_lbl:
        summary["load"] = _would_load(files, in_lbl, out_lbl, aliases, workers, progress)
    return summary


def _scan_file(header: FileHeader, workers: int | None,
               progress: LoadProgress | None = None) -> tuple[RolloutTable, AttrStats]:
    """Scan all groups of one file (in parallel chunks when it is big)."""
    names = header.param_names
    settings = LoadSettings(list(names), [], [], "skip", "skip")
    tasks, n_proc = plan_tasks([(0, header, list(range(len(names))))], settings, workers or _cpu_count())
    results = run_tasks(scan_chunk, tasks, n_proc, progress)
    attrs: AttrStats = {}
    for _, a in results:
        _merge_attrs(attrs, a)
    return RolloutTable.concat([t for t, _ in results]), attrs


def _merge_attrs(into: AttrStats, other: AttrStats) -> None:
    """Add attribute statistics of ``other`` to ``into``."""
    for k, (n, lo, hi) in other.items():
        s = into.setdefault(k, [0, math.inf, -math.inf])
        s[0], s[1], s[2] = s[0] + n, min(s[1], lo), max(s[2], hi)


def _range(count: int | None, lo: float, hi: float) -> dict[str, Any]:
    """``{count, min, max}``; min/max None when no numeric value was seen."""
    out: dict[str, Any] = {} if count is None else {"count": int(count)}
    seen = lo <= hi
    out.update(min=float(lo) if seen else None, max=float(hi) if seen else None)
    return out


def _counts(tables: list[RolloutTable]) -> dict[str, Any]:
    """Per-file and total group counts, and the first skip reasons."""
    files = [{"path": t.files[0], "groups": t.n_groups, "successes": t.n_groups - t.n_failed,
              "failures": t.n_failed, "skipped": t.n_skipped} for t in tables]
    total = {k: sum(f[k] for f in files) for k in ("groups", "successes", "failures", "skipped")}
    reasons = [s for t in tables for s in t.skipped][:MAX_SKIPPED_SHOWN]
    return {"files": files, **total, "skipped_reasons": reasons}


def _param_ranges(tables: list[RolloutTable], names: list[str]) -> dict[str, Any]:
    """Min/max of each parameter over usable rows (files may order parameters differently)."""
    out = {}
    for name in names:
        cols = [t.inputs[:, t.in_lbl.index(name)] for t in tables if name in t.in_lbl]
        v = np.concatenate(cols) if cols else np.empty(0, np.float32)
        out[name] = _range(None, float(v.min()) if v.size else math.inf, float(v.max()) if v.size else -math.inf)
    return out


def _would_load(files, in_lbl, out_lbl, aliases, workers, progress=None) -> dict[str, Any]:
    """What ``load_rollouts`` with these labels gives (skip policies), or the error it raises."""
    try:
        t = load_rollouts(files, in_lbl or [], out_lbl or [], aliases=aliases, on_missing="skip",
                          on_nonfinite="skip", cache=False, workers=workers, progress=progress)
    except DataError as exc:
        return {"in_lbl": list(in_lbl or []), "out_lbl": list(out_lbl or []), "error": str(exc)}
    ranges = {lbl: _range(None, float(t.inputs[:, j].min()), float(t.inputs[:, j].max()))
              for j, lbl in enumerate(t.in_lbl)}
    ranges.update({lbl: {**_range(None, float(t.targets[:, j].min()), float(t.targets[:, j].max())),
                         "attribute": attr} for j, (lbl, attr) in enumerate(zip(t.out_lbl, t.out_attr))})
    out = {"in_lbl": t.in_lbl, "out_lbl": t.out_lbl, "rows": len(t), "skipped": t.n_skipped,
           "skipped_reasons": t.skipped, "ranges": ranges}
    if t.n_skipped:
        out["error_with_default_policy"] = t.skipped[0]
    return out


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as text for the terminal (what ``rollfit inspect`` prints)."""
    s = summary
    lines = [f"{len(s['files'])} file(s): {s['groups']} groups, {s['successes']} successful, "
             f"{s['failures']} failed, {s['skipped']} successful but unusable"]
    lines += [f"  {f['path']}: {f['groups']} groups ({f['successes']} ok, {f['failures']} failed, "
              f"{f['skipped']} unusable)" for f in s["files"]]
    lines += [f"  unusable: {r}" for r in s["skipped_reasons"]]
    width = max([len(k) for k in [*s["parameters"], *s["attributes"]]] + [8])
    lines.append("parameters (min .. max over usable rows):")
    lines += [f"  {k:<{width}}  {_num(v['min'])} .. {_num(v['max'])}" for k, v in s["parameters"].items()]
    lines.append("attributes of usable groups (count, min .. max):")
    lines += [f"  {k:<{width}}  {v['count']:>7}  {_num(v['min'])} .. {_num(v['max'])}"
              for k, v in s["attributes"].items()]
    if "load" in s:
        lines += _format_load(s["load"])
    return "\n".join(lines)


def _format_load(load: Mapping[str, Any]) -> list[str]:
    """Text lines for what a config with these labels would load."""
    head = f"loading in_lbl={load['in_lbl']} out_lbl={load['out_lbl']}:"
    if "error" in load:
        return [head, f"  error: {load['error']}"]
    lines = [head, f"  rows: {load['rows']} ({load['skipped']} skipped)"]
    for lbl, r in load["ranges"].items():
        attr = f" (attribute '{r['attribute']}')" if r.get("attribute", lbl) != lbl else ""
        lines.append(f"  {lbl}{attr}: {_num(r['min'])} .. {_num(r['max'])}")
    if "error_with_default_policy" in load:
        lines.append(f"  with on_missing/on_nonfinite='error' (the default) loading stops at: "
                     f"{load['error_with_default_policy']}")
    return lines
