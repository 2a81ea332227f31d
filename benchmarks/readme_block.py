"""README blocks that benchmarks generate: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` is a results table pasted by the benchmark (``--readme``), never typed in."""
from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def paste(name: str, text: str, readme: Path = README) -> None:
    """Replace what ``readme`` holds between the ``name`` block's markers with ``text`` (atomically)."""
    from rollfit.io import atomic_write_text

    content = readme.read_text()
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    i, j = content.index(start) + len(start), content.index(end)
    atomic_write_text(readme, content[:i] + text + content[j:])
