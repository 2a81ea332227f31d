"""``--nproc N``: the same command in N torchrun workers, which report to their launcher
through a status folder, not through torchrun.

A worker that exits non-zero makes torchrun print a traceback, so a worker of ``rollfit
train --nproc N`` writes its exit code and its error line into the folder named by
``ROLLFIT_NPROC_STATUS`` and exits 0; the launcher prints each distinct error line once and
exits with the first non-zero code (130/143 when it was sent a signal itself).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..errors import ConfigError
from ..training.signals import HANDLED

STATUS_ENV = "ROLLFIT_NPROC_STATUS"


def worker_folder() -> Optional[Path]:
    """The launcher's status folder when this process is one of its workers, else None."""
    status = os.environ.get(STATUS_ENV)
    return Path(status) if status and "RANK" in os.environ else None


def report_error(line: str) -> None:
    """An error line: on stderr, or for the launcher to print (once, however many ranks failed)."""
    folder = worker_folder()
    if folder is None:
        print(line, file=sys.stderr)
    else:
        (folder / f"rank_{os.environ['RANK']}.err").write_text(line + "\n")


def worker_exit(code: int) -> int:
    """This process's exit code: ``code``, or 0 in a worker, after leaving ``code`` for the launcher."""
    folder = worker_folder()
    if folder is None:
        return code
    (folder / f"rank_{os.environ['RANK']}.code").write_text(str(code))
    return 0


@contextmanager
def status_folder() -> Iterator[Path]:
    """The launcher's side: a fresh status folder, named in the environment the workers inherit."""
    before = os.environ.get(STATUS_ENV)
    with tempfile.TemporaryDirectory(prefix="rollfit-nproc-") as folder:
        os.environ[STATUS_ENV] = folder
        try:
            yield Path(folder)
        finally:
            if before is None:
                os.environ.pop(STATUS_ENV, None)
            else:
                os.environ[STATUS_ENV] = before


def outcome(folder: Path) -> tuple[list[str], int]:
    """The workers' distinct error lines (rank order) and their first non-zero exit code."""
    def by_rank(p: Path) -> int:
        return int(p.name.split("_")[1].split(".")[0])

    lines = [p.read_text().strip() for p in sorted(folder.glob("rank_*.err"), key=by_rank)]
    codes = [int(p.read_text() or 0) for p in sorted(folder.glob("rank_*.code"), key=by_rank)]
    return list(dict.fromkeys(lines)), next((c for c in codes if c), 0)


# ---- the launcher -------------------------------------------------------------------------
def argv_without(args, parser, skip: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The command-line arguments that produce ``args`` with ``parser``, without ``skip`` options
    (rebuilt from the parser, so options added later are passed on too)."""
    options, positionals = [], []
    for action in parser._actions:
        if action.dest in skip or isinstance(action, argparse._HelpAction):
            continue
        value = getattr(args, action.dest, action.default)
        if value is None or value is False or value == action.default or value is argparse.SUPPRESS:
            continue
        values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        if not action.option_strings:
            positionals += values
        elif action.nargs == 0:
            options.append(action.option_strings[0])
        else:
            options += [action.option_strings[0], *values]
    return positionals + options  # positionals first: an nargs="+" option would swallow them


def launch(nproc: int, command: list[str]) -> int:
    """Run ``python -m rollfit <command>`` in ``nproc`` processes under torchrun (one node,
    a free local port); returns torchrun's exit code (130/143 after SIGINT/SIGTERM). CPU
    threads are split between the processes unless OMP_NUM_THREADS is set."""
    from ..training.distributed import env_world

    if nproc < 1:
        raise ConfigError(f"--nproc: expected an integer >= 1, but got {nproc}")
    if env_world()[1] > 1:
        raise ConfigError("--nproc: expected a plain launch, but this process already runs under torchrun "
                          f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')}); drop --nproc")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "rollfit", *command]
    # torchrun gets its own session, so a terminal's Ctrl-C reaches this process alone; every
    # signal is passed on to the workers (they checkpoint and stop), never to torchrun itself,
    # which would answer with a traceback (the workers report through the status folder).
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    got: list[int] = []

    def forward(signum, frame) -> None:
        got.append(signum)
        for pid in _children(proc.pid) or [proc.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in HANDLED}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + got[0] if got else code  # 130/143 as a one-process run reports


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (torchrun's workers), from Linux's /proc; empty elsewhere."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return found
