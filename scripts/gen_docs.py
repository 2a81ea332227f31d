#!/usr/bin/env python3
"""Regenerate the README's config and CLI reference sections from the code.

The config table comes from the pydantic schema (``rollfit.config.reference_table``); the
CLI reference from each subcommand's argparse help. ``--check`` exits non-zero when the
README is out of date (the test suite runs it), so the docs cannot drift from the code.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def cli_reference() -> str:
    """Every subcommand's ``--help`` text, as Markdown."""
    from rollfit.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = []
    for name, p in sub.choices.items():
        p.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
        parts.append(f"### `rollfit {name}`\n\n```text\n{p.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def sections() -> dict[str, str]:
    from rollfit.config import reference_table

    return {"config-reference": reference_table(), "cli-reference": cli_reference()}


def render(text: str) -> str:
    """``text`` with every generated section replaced by its current content."""
    for name, body in sections().items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md: expected markers <!-- {name}:start --> and <!-- {name}:end -->")
        text = pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = ap.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md: generated sections are out of date; run: python scripts/gen_docs.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
