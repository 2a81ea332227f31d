"""``RunFolder``: the one place that knows where a run's files live.

Layout (the original pipeline's, plus rollfit's outputs)::

    <run>/config.yaml                  the validated config actually used
    <run>/logs/regression_hdf5_*.json  metrics log (+ _hparams.json)
    <run>/checkpoints/ep_NNNNNN.ckpt   checkpoints (resume continues from the newest)
    <run>/checkpoints/best.ckpt        the lowest validation loss (the model commands use);
                                       the only checkpoint of kinds fitted in one go (GPs)
    <run>/plots/*.png, <run>/report.html
    <run>/metrics_<rows>.json          metrics named for what they were computed on
    <run>/rollfit.lock                 held by the one process writing the run

A checkpoint outside such a folder (a "stray" checkpoint, e.g. ``models/cot.ckpt``) gets its
outputs beside it, prefixed with its stem (``models/cot_metrics_validation.json``), never in
an unrelated folder two levels up. Every path read from a file (a checkpoint's log name) is
confined to the folder with ``inside``. This module imports no torch: the CLI resolves
``--run`` through it before the heavy imports.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Optional

from ..errors import CheckpointError, DataFileNotFound, OutputError
from ..io import check_writable
from .lock import RunLock

CONFIG_FILE = "config.yaml"
LOGS_DIR = "logs"
CKPT_DIR = "checkpoints"
PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
BEST_FILE = "best.ckpt"  # checkpoints/best.ckpt: the model every command loads when it exists
LOCK_FILE = "rollfit.lock"
ORPHAN_AGE_S = 60.0  # a temporary file unchanged this long belongs to no live write
_EPOCH_RE = re.compile(r"ep_(\d+)\.ckpt$")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's ``checkpoints/ep_*.ckpt`` files, oldest epoch first."""
    found = [(int(m.group(1)), p) for p in (Path(run_dir) / CKPT_DIR).glob("ep_*.ckpt")
             if (m := _EPOCH_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def best_checkpoint(run_dir: str | Path) -> Path:
    """``<run>/checkpoints/best.ckpt`` (whether or not it exists)."""
    return Path(run_dir) / CKPT_DIR / BEST_FILE


def has_checkpoint(run_dir: str | Path) -> bool:
    """True when the run has a checkpoint to load: an ``ep_*.ckpt`` or ``best.ckpt``."""
    return bool(list_checkpoints(run_dir)) or best_checkpoint(run_dir).is_file()


def _safe_part(text: str) -> str:
    """``text`` reduced to characters safe in a file name (letters, digits, ``._-+``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "data"


class RunFolder:
    """A run folder (``root``), or the folder beside a stray checkpoint (``prefix`` set).

    ``checkpoint`` is the checkpoint file the user named, if any (else ``best.ckpt`` when
    the run has one, else the newest ``ep_*.ckpt``: ``checkpoint.newest_readable``).
    """

    def __init__(self, root: str | Path, checkpoint: Optional[str | Path] = None, prefix: str = "",
                 out: Optional[str | Path] = None):
        self.root = Path(root)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.prefix = prefix
        self.out = Path(out) if out is not None else self.root  # where plots, metrics and report go

    # ---- the files -------------------------------------------------------------------
    config = property(lambda self: self.root / CONFIG_FILE, doc="the run's config.yaml")
    logs = property(lambda self: self.root / LOGS_DIR, doc="the metrics log folder")
    checkpoints = property(lambda self: self.root / CKPT_DIR, doc="the checkpoint folder")
    lock_path = property(lambda self: self.root / LOCK_FILE, doc="the lock file of the writing process")
    best = property(lambda self: best_checkpoint(self.root), doc="checkpoints/best.ckpt (lowest validation loss)")

    @property
    def plots(self) -> Path:
        """The PNG folder (``<stem>_plots`` beside a stray checkpoint)."""
        return self.out / f"{self.prefix}{PLOTS_DIR}"

    @property
    def report(self) -> Path:
        """The run's report.html."""
        return self.out / f"{self.prefix}{REPORT_FILE}"

    def metrics(self, rows: str) -> Path:
        """``metrics_<rows>.json``: ``rows`` says what they were computed on (``validation``,
        ``training``, ``cv`` or a data file's stem), so one evaluation never overwrites another."""
        return self.out / f"{self.prefix}metrics_{_safe_part(rows)}.json"

    @property
    def is_stray(self) -> bool:
        """True for a checkpoint outside a run folder (outputs go beside it)."""
        return bool(self.prefix)

    def list_checkpoints(self) -> list[Path]:
        """``checkpoints/ep_*.ckpt``, oldest first (a stray folder has only its own file);
        ``best.ckpt`` is not among them (see ``best``)."""
        return [self.checkpoint] if self.is_stray and self.checkpoint else list_checkpoints(self.root)

    def run_markers(self) -> list[str]:
        """What shows that a run lives here: config.yaml, checkpoints, logs (empty: none)."""
        marks = [CONFIG_FILE] if self.config.is_file() else []
        if has_checkpoint(self.root):
            marks.append(f"{CKPT_DIR}/")
        if self.logs.is_dir() and any(self.logs.iterdir()):
            marks.append(f"{LOGS_DIR}/")
        return marks

    def inside(self, folder: Path, name: str, where: str) -> Path:
        """``folder/name`` for a plain file name read from a file; anything that could leave
        the folder (separators, ``..``, absolute paths) is refused naming ``where``."""
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{where}: expected a file name inside {folder}, but got {name!r}")
        return folder / name

    # ---- writing ---------------------------------------------------------------------
    def lock(self) -> RunLock:
        """The lock that one process holds for the run's whole life (train, resume)."""
        return RunLock(self.lock_path)

    def probe(self) -> None:
        """Create the run folder and its write folders, checking they are writable and really
        the run's (a received run whose checkpoints/ or logs/ links elsewhere is refused)."""
        for folder in (self.checkpoints, self.logs):
            if folder.is_symlink():
                raise OutputError(f"{folder}: expected a folder inside the run, but it is a symbolic link to "
                                  f"{Path(os.readlink(folder))}; a run writes only inside its own folder")
        for folder in (self.root, self.checkpoints, self.logs):
            check_writable(folder)

    def clear(self) -> None:
        """Delete an old run's files (``--overwrite``): checkpoints, logs, plots, metrics,
        report and config (``metrics*.json`` includes the ``metrics.json`` of older rollfit
        versions). Other files in the folder are left alone."""
        for d in (self.checkpoints, self.logs, self.plots):
            if d.is_symlink():  # a link is removed, never followed: its target is not the run's
                d.unlink()
            elif d.is_dir():
                shutil.rmtree(d)
        for f in [self.config, self.report, *self.root.glob("metrics*.json")]:
            f.unlink(missing_ok=True)

    def remove_stale_temp_files(self, older_than: float = 0.0) -> list[Path]:
        """Delete temporary files a killed process left (``.<name>.*.tmp``, write probes) in
        the run folder and its subfolders (not through a symlink: its target is not the run's);
        only those unchanged for ``older_than`` seconds."""
        if not self.root.is_dir():
            return []
        removed, now = [], time.time()
        for folder in [self.root, *(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())]:
            for p in [*folder.glob(".*.tmp"), *folder.glob(".rollfit-probe.*")]:
                with contextlib.suppress(OSError):
                    if p.is_file() and now - p.stat().st_mtime >= older_than:
                        p.unlink()
                        removed.append(p)
        return removed

    def clean_orphans(self) -> list[Path]:
        """Remove temporary files of killed commands when no run is writing the folder (the
        lock is free): a live writer's files are never touched; recent ones are left too."""
        lock = self.lock()
        try:
            lock.acquire()
        except OutputError:  # a run writes here (its temporary files are live), or the folder is read-only
            return []
        try:
            return self.remove_stale_temp_files(older_than=ORPHAN_AGE_S)
        finally:
            lock.release()

    def check_output(self, way_out: str = "--output DIR") -> Path:
        """The output folder (``out``), checked writable before anything is computed, so a
        read-only run folder costs no work: the error names ``way_out`` (the flag to use).
        Orphan temporary files of killed commands are removed here (the next writer)."""
        try:
            check_writable(self.out)
        except OutputError as exc:
            if self.out != self.root:
                raise
            raise OutputError(f"{self.out}: expected a writable run folder for the outputs, but it is read-only "
                              f"or not writable ({str(exc).rsplit('(', 1)[-1].rstrip(')')}); "
                              f"pass {way_out}") from None
        if self.out == self.root:
            self.clean_orphans()
        return self.out

    def with_output(self, out: str | Path) -> "RunFolder":
        """The same run with its outputs (plots, metrics, report) written under ``out``."""
        return RunFolder(self.root, self.checkpoint, self.prefix, out)

    # ---- finding the folder ------------------------------------------------------------
    @classmethod
    def of_checkpoint(cls, path: str | Path) -> "RunFolder":
        """The run folder of a checkpoint file: ``<run>`` for ``<run>/checkpoints/x.ckpt``
        when ``<run>`` has config.yaml or logs/, else the folder beside it (stray)."""
        p = Path(path)
        parent = p.resolve().parent
        run = parent.parent
        if parent.name == CKPT_DIR and ((run / CONFIG_FILE).is_file() or (run / LOGS_DIR).is_dir()):
            return cls(p.parent.parent if p.parent.name == CKPT_DIR else run, checkpoint=p)  # "ep.ckpt" inside it
        return cls(p.parent, checkpoint=p, prefix=f"{_safe_part(p.stem)}_")

    @classmethod
    def at(cls, path: str | Path) -> "RunFolder":
        """The run of ``--run PATH`` (a run folder or a checkpoint file), or a one-line error
        for a missing path, an empty folder, a folder without checkpoints or a checkpoints/ folder."""
        p = Path(path)
        if p.is_file():
            return cls.of_checkpoint(p)
        if not p.exists():
            raise DataFileNotFound(f"{p}: expected a run folder or a checkpoint file, but it does not exist")
        if not p.is_dir():
            raise CheckpointError(f"{p}: expected a run folder or a checkpoint file, but got neither")
        folder = cls(p)
        if has_checkpoint(p):  # ep_*.ckpt, or best.ckpt alone (a GP run)
            return folder
        if p.name == CKPT_DIR and has_checkpoint(p.parent):
            raise CheckpointError(f"{p}: expected a run folder, but got its {CKPT_DIR}/ folder; "
                                  f"did you mean '{p.parent}'?")
        if not any(p.iterdir()):
            raise CheckpointError(f"{p}: expected a run folder with {CKPT_DIR}/ep_*.ckpt, but the folder is empty")
        if folder.run_markers():
            raise CheckpointError(f"{p}: expected a run folder with {CKPT_DIR}/ep_*.ckpt, but found no checkpoint "
                                  "(the run stopped before its first save)")
        raise CheckpointError(f"{p}: expected a run folder ({CONFIG_FILE}, {CKPT_DIR}/ep_*.ckpt), but found neither; "
                              "pass a run folder or a checkpoint file")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r}{', checkpoint=' + repr(str(self.checkpoint)) if self.checkpoint else ''})"


def open_run(path: str | Path, output: Optional[str | Path] = None) -> RunFolder:
    """``--run PATH`` [``--output DIR``] as a RunFolder (for the CLI); outputs go to ``output``
    when given. Errors are one line (see ``RunFolder.at``)."""
    folder = RunFolder.at(path)
    return folder.with_output(output) if output is not None else folder
