"""``rollfit inspect``: summarize rollout file(s) and show what a config would load."""
from __future__ import annotations

ORDER = 2

import argparse
import json

from .args import add_list, check_file, check_paths, command


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "inspect", "hdf5", "config", "json", help="summarize rollout file(s)", description=(
        "Summarize rollout files: groups, successes, failures, parameter names, attributes and value "
        "ranges; with labels (or --config), what training would load. A label that cannot be loaded is "
        "an error (exit code 2) after the summary."))
    add_list(p, "--in-lbl", metavar="LABEL", help="input labels to check")
    add_list(p, "--out-lbl", metavar="LABEL", help="output labels to check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import DataError, DataFileNotFound

    check_paths(args.hdf5)
    check_file(args.config, "--config", "a YAML config file")
    in_lbl, out_lbl, aliases = args.in_lbl, args.out_lbl, None
    if args.config:
        cfg = load_config(args.config)
        in_lbl, out_lbl, aliases = in_lbl or cfg.data.in_lbl, out_lbl or cfg.data.out_lbl, cfg.data.aliases
    elif bool(in_lbl) != bool(out_lbl):  # one side named: the other is what training would use by default
        from ..config import DataConfig

        defaults = DataConfig()
        in_lbl, out_lbl = in_lbl or defaults.in_lbl, out_lbl or defaults.out_lbl
    configured = cfg.data.hdf5_path if args.config else None
    paths = args.hdf5 or ([configured] if isinstance(configured, str) else configured)
    if not paths:
        raise DataFileNotFound("--hdf5: expected rollout file(s) to inspect, but got none (nor data.hdf5_path "
                               "in a --config)")
    from ..data.inspect import format_summary, summarize_rollouts

    summary = summarize_rollouts(paths if len(paths) > 1 else paths[0], in_lbl=in_lbl, out_lbl=out_lbl,
                                 aliases=aliases)
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary), flush=True)
    error = summary.get("load", {}).get("error")
    if error:
        raise DataError(error)
    return 0
