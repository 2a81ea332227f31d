"""``summarize_rollouts`` / ``format_summary`` on files with known content."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from rollfit.data import reader
from rollfit.data.inspect import format_summary, summarize_rollouts
from rollfit.data.synthetic import COT_ATTR, COT_STD_ATTR, DEFAULT_13_NAMES, write_rollout_file
from rollfit.errors import DataError, DataFileNotFound


@pytest.fixture
def two_files(tmp_path):
    """a.h5: 4 groups (1 failed); b.h5 (C style, other parameter order): 3 groups, 1 lacking the output."""
    xa = np.ones((4, 13), np.float32)
    xa[:, 0] = [0.8, 0.9, 1.0, 1.1]
    xa[:, 1] = [1.2, 0.7, 1.0, 1.0]
    a = write_rollout_file(tmp_path / "a.h5", xa, {COT_ATTR: [60, 61, 62, 63], COT_STD_ATTR: [1, 2, 3, 4]},
                           np.array([1, 1, 0, 1], bool), with_cycles=True)
    perm = list(reversed(range(13)))
    xb = np.ones((3, 13), np.float32)
    xb[:, 0] = [0.75, 1.25, 1.0]
    b = write_rollout_file(tmp_path / "b.h5", xb[:, perm], {COT_ATTR: [70, 80, 90], COT_STD_ATTR: [5, 6, 7]},
                           style="cstyle", param_names=[DEFAULT_13_NAMES[i] for i in perm], start_index=4)
    with h5py.File(b, "a") as f:
        del f["param_6.0"].attrs[COT_ATTR]
        f["param_4.0"].attrs["note"] = "text attribute"
    return a, b


def test_counts_ranges_and_attributes(two_files):
    a, b = two_files
    s = summarize_rollouts([a, b])
    assert [(f["path"], f["groups"], f["successes"], f["failures"]) for f in s["files"]] == \
           [(str(a), 4, 3, 1), (str(b), 3, 3, 0)]
    assert (s["groups"], s["successes"], s["failures"], s["skipped"]) == (7, 6, 1, 0)
    assert s["parameters"]["gait_stride"] == {"min": 0.75, "max": 1.25}
    assert s["parameters"]["gait_cadence"] == {"min": pytest.approx(0.7), "max": pytest.approx(1.2)}
    assert s["parameters"]["hip_stiffness"] == {"min": 1.0, "max": 1.0}
    assert s["attributes"][COT_ATTR] == {"count": 5, "min": 60.0, "max": 80.0}
    assert s["attributes"][COT_STD_ATTR] == {"count": 6, "min": 1.0, "max": 7.0}
    assert s["attributes"]["note"] == {"count": 1, "min": None, "max": None}
    assert "load" not in s
    json.dumps(s)  # plain data only (the CLI's --json)


def test_what_a_config_would_load(two_files):
    a, b = two_files
    s = summarize_rollouts([a, b], ["gait_cadence", "gait_stride"], ["cot_ma15"])
    load = s["load"]
    assert (load["rows"], load["skipped"]) == (5, 1)
    assert load["ranges"]["cot_ma15"] == {"min": 60.0, "max": 80.0, "attribute": COT_ATTR}
    assert load["ranges"]["gait_stride"] == {"min": 0.75, "max": 1.25}
    assert load["error_with_default_policy"].startswith(f"{b}: param_6.0: expected attribute 'metabolic/cot/MA/mean'")
    text = format_summary(s)
    assert "2 file(s): 7 groups, 6 successful, 1 failed, 0 successful but unusable" in text
    assert "  rows: 5 (1 skipped)" in text
    assert "  cot_ma15 (attribute 'metabolic/cot/MA/mean'): 60 .. 80" in text
    assert "with on_missing/on_nonfinite='error' (the default) loading stops at: " in text


def test_label_errors_are_reported_not_raised(two_files):
    a, _ = two_files
    s = summarize_rollouts(a, ["gait_cadense"], ["cot_ma15"])
    assert s["load"]["error"].startswith(f"{a}: expected input 'gait_cadense' in parameter_names")
    assert "  error: " + s["load"]["error"] in format_summary(s)


def test_unusable_groups_are_listed(tmp_path):
    path = write_rollout_file(tmp_path / "r.h5", None, {COT_ATTR: [1.0, 2.0, 3.0]})
    with h5py.File(path, "a") as f:
        del f["param_1/param_state"]
    s = summarize_rollouts(path)
    assert (s["successes"], s["skipped"]) == (3, 1)
    assert s["skipped_reasons"] == [f"{path}: param_1: expected a 'param_state' dataset, but the group has none"]
    assert s["attributes"][COT_ATTR]["count"] == 2
    assert "  unusable: " + s["skipped_reasons"][0] in format_summary(s)


def test_format_lists_parameters_and_attributes(two_files):
    text = format_summary(summarize_rollouts(two_files[0]))
    lines = text.splitlines()
    assert lines[0] == "1 file(s): 4 groups, 3 successful, 1 failed, 0 successful but unusable"
    assert any(line.split() == ["gait_stride", "0.8", "..", "1.1"] for line in lines)
    assert any(line.split() == [COT_ATTR, "3", "60", "..", "63"] for line in lines)


def test_big_file_is_scanned_in_parallel_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "PARALLEL_MIN_GROUPS", 10)
    monkeypatch.setattr(reader, "MIN_CHUNK_GROUPS", 5)
    x = np.ones((30, 13), np.float32)
    x[:, 0] = np.linspace(0.7, 1.3, 30)
    path = write_rollout_file(tmp_path / "r.h5", x, {COT_ATTR: np.arange(30.0)})
    s1, s2 = summarize_rollouts(path, workers=1), summarize_rollouts(path, workers=2)
    assert s1 == s2 and s2["attributes"][COT_ATTR] == {"count": 30, "min": 0.0, "max": 29.0}


def test_bad_paths_raise(tmp_path):
    with pytest.raises(DataFileNotFound):
        summarize_rollouts(tmp_path / "nope.h5")
    (tmp_path / "x.h5").write_text("no")
    with pytest.raises(DataError, match="expected an HDF5 file"):
        summarize_rollouts(tmp_path / "x.h5")


def test_fixture_summary(fixtures_dir):
    s = summarize_rollouts(fixtures_dir / "rollouts" / "r120_cycles.h5", ["gait_cadence"], ["cot_ma15"])
    assert (s["groups"], s["failures"], s["load"]["rows"]) == (120, 7, 113)
    assert "cycle_idx" not in s["attributes"]
