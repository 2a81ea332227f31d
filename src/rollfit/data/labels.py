"""Label resolution: which ``param_state`` column an input label is, which attribute an output is.

Inputs are picked from ``param_state`` by name (``parameter_names`` of each file, so files
that list parameters in different orders still agree). Outputs are param-level attributes;
short aliases used by existing configs (``cot_ma15`` ...) map to their attribute names, and a
user's ``aliases`` mapping extends or overrides the built-in ones. A label that is not an
alias is taken as the attribute name itself (``velocity`` -> attribute ``velocity``).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from rollfit.errors import DataError, did_you_mean, listing

COT_MA_MEAN = "metabolic/cot/MA/mean"

BUILTIN_ALIASES: dict[str, str] = {
    "cot_ma15": COT_MA_MEAN,
    "cot_ma": COT_MA_MEAN,
    "cot_ma3": COT_MA_MEAN,
}


def merged_aliases(aliases: Mapping[str, str] | None = None) -> dict[str, str]:
    """Built-in aliases overridden/extended by the user's ``label -> attribute`` mapping."""
    merged = dict(BUILTIN_ALIASES)
    for label, attr in (aliases or {}).items():
        if not isinstance(label, str) or not isinstance(attr, str) or not label or not attr:
            raise DataError(
                f"aliases: expected non-empty 'label: attribute' strings, but got {label!r}: {attr!r}"
            )
        merged[label] = attr
    return merged


def check_labels(kind: str, labels: Sequence[str]) -> list[str]:
    """The labels as a list, or a DataError if empty, not strings, or repeated."""
    if isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    bad = [lbl for lbl in labels if not isinstance(lbl, str) or not lbl]
    if not labels or bad:
        raise DataError(f"{kind}: expected a non-empty list of label names, but got {labels!r}")
    dupes = sorted({lbl for lbl in labels if labels.count(lbl) > 1})
    if dupes:
        raise DataError(f"{kind}: expected each label once, but got {listing(dupes)} more than once")
    return labels


def resolve_outputs(
    out_lbl: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    available_attrs: Iterable[str] | None = None,
    where: str = "",
) -> list[str]:
    """Attribute name of each output label; with ``available_attrs``, check they exist.

    A label missing from ``available_attrs`` raises a DataError naming ``where`` (file and
    group), the label and attribute, and listing the available attributes closest first.
    """
    table = merged_aliases(aliases)
    attrs = [table.get(lbl, lbl) for lbl in out_lbl]
    if available_attrs is not None:
        available = list(available_attrs)
        for lbl, attr in zip(out_lbl, attrs):
            if attr not in available:
                raise DataError(missing_attr_message(where, lbl, attr, available))
    return attrs


def missing_attr_message(where: str, label: str, attr: str, available: Sequence[str]) -> str:
    """One-line message for an output attribute a group lacks, its attributes closest first."""
    what = f"attribute '{attr}'" + (f" (output '{label}')" if label != attr else "")
    have = listing(sorted(available), attr) if available else "no attributes"
    hint = did_you_mean(label, [*available, *BUILTIN_ALIASES]) if label == attr else ""
    return f"{where}: expected {what}, but the group has no such attribute{hint}; it has: {have}"


def resolve_inputs(in_lbl: Sequence[str], parameter_names: Sequence[str], where: str) -> list[int]:
    """Column of each input label in ``parameter_names``, or a DataError listing the closest."""
    index = {name: i for i, name in enumerate(parameter_names)}
    cols = []
    for lbl in in_lbl:
        if lbl not in index:
            raise DataError(
                f"{where}: expected input '{lbl}' in parameter_names, but it is not there; "
                f"parameter names, closest first: {listing(list(parameter_names), lbl)}"
            )
        cols.append(index[lbl])
    return cols
