"""``rollfit inspect``: summarize rollout file(s) and show what a config would load."""
from __future__ import annotations

ORDER = 2

import argparse
import json

from .main import add_debug


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarize rollout file(s)", description=(
        "Summarize rollout files: groups, successes, failures, parameter names, attributes and value "
        "ranges; with labels (or --config), what training would load."))
    p.add_argument("--hdf5", nargs="+", required=True, metavar="PATH", help="rollout file(s), a directory or a glob")
    p.add_argument("--in-lbl", nargs="+", metavar="LABEL", help="input labels to check")
    p.add_argument("--out-lbl", nargs="+", metavar="LABEL", help="output labels to check")
    p.add_argument("--config", help="take labels and aliases from this config")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_debug(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..data.inspect import format_summary, summarize_rollouts

    in_lbl, out_lbl, aliases = args.in_lbl, args.out_lbl, None
    if args.config:
        cfg = load_config(args.config)
        in_lbl, out_lbl, aliases = in_lbl or cfg.data.in_lbl, out_lbl or cfg.data.out_lbl, cfg.data.aliases
    path = args.hdf5 if len(args.hdf5) > 1 else args.hdf5[0]
    summary = summarize_rollouts(path, in_lbl=in_lbl, out_lbl=out_lbl, aliases=aliases)
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0
