"""Where scripts/setup.sh takes a pinned CPU build of torch from, decided once, without retries.

Usage: python scripts/torch_source.py torch==2.13.0+cpu https://download.pytorch.org/whl/cpu

Prints ``configured`` when a local wheel folder or file:// index among pip's configured
sources (find-links, index-url, extra-index-url from ``pip config list``, where a PIP_*
variable overrides the files as in pip) lists the wheel for this Python and machine; else
``cpu-index`` when the given index answers one request within 5 s; else ``none``. Run with
the venv's Python, so the wheel tags are those of the venv.
"""
from __future__ import annotations

import glob
import os
import platform
import re
import subprocess
import sys
import urllib.parse
import urllib.request

PROBE_TIMEOUT_S = 5


def configured_places() -> list[str]:
    """pip's find-links and index URLs, an environment variable winning over the files."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True).stdout
    options: dict[str, str] = {}
    for scope, option, value in re.findall(r"^(\S*)\.((?:extra-)?index-url|find-links)='([^']*)'", listing, re.M):
        if scope == ":env:" or option not in options:
            options[option] = value
    return [place for value in options.values() for place in value.split()]


def local_folder(place: str) -> str | None:
    """The folder a find-links entry or file:// index names; None for a network location."""
    if place.startswith("file:"):
        return urllib.parse.unquote(urllib.parse.urlparse(place).path)
    return place if "://" not in place else None


def lists_wheel(folder: str, name: str, wheel: re.Pattern) -> bool:
    """Whether a wheel folder, or a simple index's page for ``name`` in it, lists the wheel."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.whl"))]
    page = os.path.join(folder, name, "index.html")
    if os.path.isfile(page):
        with open(page, encoding="utf-8", errors="replace") as fh:
            names += [urllib.parse.unquote(n) for n in re.findall(r">([^<]+\.whl)<", fh.read())]
    return any(wheel.fullmatch(n) for n in names)


def answers(url: str) -> bool:
    """One request, at most ``PROBE_TIMEOUT_S`` seconds, no retry."""
    try:
        urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S).close()
        return True
    except Exception:
        return False


def torch_source(spec: str, cpu_index: str) -> str:
    """``configured``, ``cpu-index`` or ``none`` (see the module doc)."""
    name, _, version = spec.partition("==")
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    wheel = re.compile(rf"{re.escape(name)}-{re.escape(version)}-{tag}-{tag}-\w*{platform.machine()}\.whl", re.I)
    folders = [f for f in map(local_folder, configured_places()) if f and os.path.isdir(f)]
    if any(lists_wheel(f, name, wheel) for f in folders):
        return "configured"
    return "cpu-index" if answers(cpu_index.rstrip("/") + f"/{name}/") else "none"


if __name__ == "__main__":
    print(torch_source(sys.argv[1], sys.argv[2]))
