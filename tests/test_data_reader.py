"""The rollout reader against files with known content, every FORMAT.md variant and bad input."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from rollfit.data import reader
from rollfit.data.labels import resolve_inputs, resolve_outputs
from rollfit.data.reader import expand_paths, load_rollouts
from rollfit.data.synthetic import COT_ATTR, COT_STD_ATTR, DEFAULT_13_NAMES, write_rollout_file
from rollfit.data.table import RolloutTable
from rollfit.errors import ConfigError, DataError, DataFileNotFound, RollfitError

IN = ["gait_cadence", "gait_stride"]
OUT = ["cot_ma15"]


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Known inputs (n, 13) and outcome values."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.7, 1.3, (n, 13)).astype(np.float32)
    return x, (50.0 + 10.0 * x[:, 0] + 20.0 * x[:, 1]).astype(np.float32)


def _file(tmp_path: Path, name: str = "r.h5", n: int = 6, success=None, seed: int = 0, **kw) -> Path:
    """A rollout file of ``n`` groups with ``_rows`` content; extra keywords go to the writer."""
    x, y = _rows(n, seed)
    outputs = kw.pop("outputs", {COT_ATTR: y, COT_STD_ATTR: y / 50})
    return write_rollout_file(tmp_path / name, x, outputs, success, **kw)


def _load(path, in_lbl=IN, out_lbl=OUT, **kw) -> RolloutTable:
    kw.setdefault("cache", False)
    return load_rollouts(path, in_lbl, out_lbl, **kw)


def _edit(path: Path, fn) -> None:
    """Change a written file with the high-level API (for variants the writer does not make)."""
    with h5py.File(path, "a") as f:
        fn(f)


# ----------------------------------------------------------------------------- variants
@pytest.mark.parametrize("style", ["h5py", "cstyle"])
def test_style_roundtrip_inputs_targets_and_failures(tmp_path, style):
    success = np.array([1, 0, 1, 1, 0, 1], bool)
    path = _file(tmp_path, success=success, style=style)
    x, y = _rows(6)
    t = _load(path, out_lbl=["cot_ma15", COT_STD_ATTR])
    ok = np.flatnonzero(success)
    np.testing.assert_array_equal(t.inputs, x[ok][:, [1, 0]])
    np.testing.assert_allclose(t.targets[:, 0], y[ok], rtol=1e-6)
    np.testing.assert_allclose(t.targets[:, 1], y[ok] / 50, rtol=1e-6)
    assert t.param_idx.tolist() == ok.tolist()
    assert (t.n_groups, t.n_failed, t.n_skipped, len(t)) == (6, 2, 0, 4)
    assert t.out_attr == [COT_ATTR, COT_STD_ATTR] and t.out_lbl == ["cot_ma15", COT_STD_ATTR]
    assert t.source.tolist() == [0] * 4 and t.files == [str(path)]
    assert t.inputs.dtype == np.float32 and t.targets.dtype == np.float32


def test_cstyle_file_is_really_cstyle(tmp_path):
    path = _file(tmp_path, success=np.array([1, 0, 1, 1, 1, 1], bool), style="cstyle")
    with h5py.File(path) as f:
        assert f["parameter_names"].dtype == np.dtype("S32")
        assert "param_1.0" in f and "param_state" not in f["param_1.0"]
        assert f["param_0.0"].attrs["success"].dtype == np.uint8
        assert f["param_0.0"].attrs[COT_ATTR].shape == (1,)


def test_missing_success_means_success(tmp_path):
    t = _load(_file(tmp_path, missing_success=True))
    assert (len(t), t.n_failed) == (6, 0)


@pytest.mark.parametrize("value, ok", [
    (np.int64(0), False), (np.int64(1), True), (np.int32(2), True), (np.array([0], np.int8), False),
    (np.array([True]), True), (np.array([1.0]), True), (np.float32(0.0), False), (np.uint8(1), True),
])
def test_success_kinds(tmp_path, value, ok):
    path = _file(tmp_path, n=2)
    _edit(path, lambda f: f["param_1"].attrs.__setitem__("success", value))
    t = _load(path)
    assert (len(t), t.n_failed) == ((2, 0) if ok else (1, 1))


def test_output_kinds_int_and_float64_scalars(tmp_path):
    path = _file(tmp_path, n=2)
    _edit(path, lambda f: (f["param_0"].attrs.__setitem__(COT_ATTR, np.int64(7)),
                           f["param_1"].attrs.__setitem__(COT_ATTR, np.float64(8.5))))
    assert _load(path).targets[:, 0].tolist() == [7.0, 8.5]


def test_groups_sorted_numerically_and_indices_need_not_be_contiguous(tmp_path):
    order = [10, 2, 0, 100, 1, 11, 3]
    for style in ("h5py", "cstyle"):
        path = _file(tmp_path, f"{style}.h5", n=len(order), indices=order, style=style)
        t = _load(path)
        assert t.param_idx.tolist() == sorted(order)
        x, _ = _rows(len(order))
        np.testing.assert_array_equal(t.inputs[:, 1], x[np.argsort(order), 0])
        assert t.group_names()[:4] == ["param_0", "param_1", "param_2", "param_3"]


def test_other_root_members_are_ignored(tmp_path):
    path = _file(tmp_path, n=3)
    _edit(path, lambda f: (f.create_dataset("muscle_names", data=["a", "b"]), f.create_group("param_x"),
                           f.create_group("paramsets"), f.create_group("param_7.5")))
    with pytest.warns(UserWarning, match=r"r.h5: expected groups named param_N or param_N.0, but got 2 other "
                                         r"member\(s\) named 'param_7.5', 'param_x'; skipping them"):
        assert len(_load(path)) == 3


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize("alias", ["cot_ma15", "cot_ma", "cot_ma3", COT_ATTR])
def test_builtin_aliases(tmp_path, alias):
    t = _load(_file(tmp_path), out_lbl=[alias])
    np.testing.assert_allclose(t.targets[:, 0], _rows(6)[1], rtol=1e-6)
    assert t.out_attr == [COT_ATTR] and t.out_lbl == [alias]


def test_user_aliases_extend_and_override(tmp_path):
    path = _file(tmp_path)
    _edit(path, lambda f: [f[g].attrs.__setitem__("velocity", np.float32(1.25)) for g in f if g.startswith("param_")])
    t = _load(path, out_lbl=["cot_ma15", "speed"], aliases={"cot_ma15": COT_STD_ATTR, "speed": "velocity"})
    assert t.out_attr == [COT_STD_ATTR, "velocity"]
    np.testing.assert_allclose(t.targets[:, 0], _rows(6)[1] / 50, rtol=1e-6)
    assert t.targets[:, 1].tolist() == [1.25] * 6


def test_unknown_input_label_lists_parameter_names_closest_first(tmp_path):
    path = _file(tmp_path)
    with pytest.raises(DataError) as e:
        _load(path, in_lbl=["gait_cadense"])
    msg = str(e.value)
    assert msg.startswith(f"{path}: expected input 'gait_cadense' in parameter_names, but it is not there; "
                          "parameter names, closest first: 'gait_cadence', ")
    assert "\n" not in msg


def test_missing_output_names_file_group_label_and_lists_attributes(tmp_path):
    path = _file(tmp_path)
    with pytest.raises(DataError) as e:
        _load(path, out_lbl=["cot_ma16"])
    assert str(e.value) == (
        f"{path}: param_0: expected attribute 'cot_ma16', but the group has no such attribute; "
        "did you mean 'cot_ma15'?; it has: 'character_mass', 'metabolic/cot/MA/mean', "
        "'metabolic/cot/MA/std', 'num_steps', 'param_idx', 'success'")


def test_missing_aliased_output_lists_closest_attributes_first(tmp_path):
    path = _file(tmp_path, outputs={COT_STD_ATTR: np.ones(6)})
    with pytest.raises(DataError) as e:
        _load(path)
    assert str(e.value) == (
        f"{path}: param_0: expected attribute 'metabolic/cot/MA/mean' (output 'cot_ma15'), but the group has "
        "no such attribute; it has: 'metabolic/cot/MA/std', 'character_mass', 'num_steps', 'param_idx', 'success'")


def test_label_functions_directly():
    assert resolve_outputs(["cot_ma3", "velocity"]) == [COT_ATTR, "velocity"]
    assert resolve_outputs(["cot_ma"], {"cot_ma": "x"}) == ["x"]
    with pytest.raises(DataError) as e:
        resolve_outputs(["cot_ma15"], None, ["metabolic/cot/MA/std", "num_steps"], "f.h5: param_0")
    assert str(e.value) == ("f.h5: param_0: expected attribute 'metabolic/cot/MA/mean' (output 'cot_ma15'), but the "
                            "group has no such attribute; it has: 'metabolic/cot/MA/std', 'num_steps'")
    assert resolve_inputs(["b", "a"], ["a", "b", "c"], "f.h5") == [1, 0]
    with pytest.raises(DataError, match=r"^f\.h5: expected input 'bb' in parameter_names, but it is not there; "
                                        r"parameter names, closest first: 'b', 'a', 'c'$"):
        resolve_inputs(["bb"], ["a", "b", "c"], "f.h5")


@pytest.mark.parametrize("kw, message", [
    (dict(in_lbl=[]), "in_lbl: expected a non-empty list of label names, but got []"),
    (dict(out_lbl=["a", "a"]), "out_lbl: expected each label once, but got 'a' more than once"),
    (dict(aliases={"x": ""}), "aliases: expected non-empty 'label: attribute' strings, but got 'x': ''"),
])
def test_bad_label_arguments(tmp_path, kw, message):
    with pytest.raises(DataError, match="^" + __import__("re").escape(message) + "$"):
        _load(_file(tmp_path), **kw)


@pytest.mark.parametrize("kw, message", [
    (dict(on_missing="ignore"), "on_missing: expected one of 'error', 'skip', but got 'ignore'"),
    (dict(on_nonfinite="drop"), "on_nonfinite: expected one of 'error', 'skip', but got 'drop'"),
    (dict(workers=0), "workers: expected a positive integer, but got 0"),
])
def test_bad_options(tmp_path, kw, message):
    with pytest.raises(ConfigError) as e:
        _load(_file(tmp_path), **kw)
    assert str(e.value) == message


# ----------------------------------------------------------------------------- policies
def _break(path: Path, group: str, how: str) -> None:
    """Damage one successful group the way real files are damaged."""
    def fn(f):
        g = f[group]
        if how == "no_output":
            del g.attrs[COT_ATTR]
        elif how == "no_state":
            del g["param_state"]
        elif how == "short_state":
            del g["param_state"]
            g["param_state"] = np.ones(12, np.float32)
        elif how == "nan_input":
            g["param_state"][1] = np.nan
        elif how == "inf_output":
            g.attrs[COT_ATTR] = np.float32(np.inf)
    _edit(path, fn)


REASONS = {
    "no_output": "param_2: expected attribute 'metabolic/cot/MA/mean' (output 'cot_ma15'), but the group has no "
                 "such attribute; it has: 'metabolic/cot/MA/std', 'character_mass', 'num_steps', 'param_idx', "
                 "'success'",
    "no_state": "param_2: expected a 'param_state' dataset, but the group has none",
    "short_state": "param_2: expected 'param_state' with 13 values (one per parameter name), but got 12",
    "nan_input": "param_2: expected finite values, but got nan for 'gait_cadence'",
    "inf_output": "param_2: expected finite values, but got inf for 'cot_ma15'",
}


@pytest.mark.parametrize("how", sorted(REASONS))
def test_policy_error_names_file_group_and_label(tmp_path, how):
    path = _file(tmp_path)
    _break(path, "param_2", how)
    with pytest.raises(DataError) as e:
        _load(path)
    assert str(e.value) == f"{path}: {REASONS[how]}"


@pytest.mark.parametrize("how", sorted(REASONS))
def test_policy_skip_drops_and_records_the_row(tmp_path, how):
    path = _file(tmp_path)
    _break(path, "param_2", how)
    key = "on_nonfinite" if how in ("nan_input", "inf_output") else "on_missing"
    t = _load(path, **{key: "skip"})
    assert t.param_idx.tolist() == [0, 1, 3, 4, 5]
    assert (t.n_groups, t.n_failed, t.n_skipped) == (6, 0, 1)
    assert t.skipped == [f"{path}: {REASONS[how]}"]
    other = "on_missing" if key == "on_nonfinite" else "on_nonfinite"
    with pytest.raises(DataError):
        _load(path, **{other: "skip"})


def test_first_problem_in_group_order_is_raised(tmp_path):
    path = _file(tmp_path)
    _break(path, "param_4", "no_state")
    _break(path, "param_2", "nan_input")
    with pytest.raises(DataError, match="param_2: expected finite values"):
        _load(path)


def test_nonfinite_value_of_unused_parameter_is_fine(tmp_path):
    path = _file(tmp_path)
    _edit(path, lambda f: f["param_1/param_state"].__setitem__(5, np.nan))
    assert len(_load(path)) == 6


def test_failed_groups_need_nothing(tmp_path):
    path = _file(tmp_path, success=np.array([1, 0, 0, 1, 1, 1], bool), failed_state=False)
    _edit(path, lambda f: f["param_2"].attrs.__setitem__("success", np.array([0], np.uint8)))
    t = _load(path)
    assert (len(t), t.n_failed) == (4, 2)


@pytest.mark.parametrize("attr, value, found", [
    (COT_ATTR, "fast", "a string"), (COT_ATTR, np.array([1.0, 2.0]), "2 values"),
    ("success", "yes", "a string"), ("success", np.array([1, 1], np.uint8), "2 values"),
])
def test_non_scalar_attribute_is_an_error_whatever_the_policy(tmp_path, attr, value, found):
    path = _file(tmp_path)
    _edit(path, lambda f: f["param_3"].attrs.__setitem__(attr, value))
    with pytest.raises(DataError) as e:
        _load(path, on_missing="skip", on_nonfinite="skip")
    expected = "to be a number" if found == "a string" else "to be one number"
    assert str(e.value) == f"{path}: param_3: expected attribute '{attr}' {expected}, but got {found}"


# ----------------------------------------------------------------------------- several files
def test_several_files_map_inputs_by_name(tmp_path):
    a = _file(tmp_path, "a.h5", n=3, seed=1)
    perm = list(reversed(range(13)))
    x, y = _rows(3, seed=2)
    b = write_rollout_file(tmp_path / "b.h5", x[:, perm], {COT_ATTR: y},
                           param_names=[DEFAULT_13_NAMES[i] for i in perm], start_index=3)
    t = _load([a, b])
    np.testing.assert_array_equal(t.inputs[3:], x[:, [1, 0]])
    np.testing.assert_array_equal(t.inputs[:3], _rows(3, seed=1)[0][:, [1, 0]])
    assert t.source.tolist() == [0, 0, 0, 1, 1, 1] and t.files == [str(a), str(b)]
    assert t.param_idx.tolist() == [0, 1, 2, 3, 4, 5] and t.n_groups == 6


def test_several_files_with_different_parameter_names(tmp_path):
    a = _file(tmp_path, "a.h5", n=2)
    names = list(DEFAULT_13_NAMES[:12]) + ["pelvis_mass"]
    b = write_rollout_file(tmp_path / "b.h5", _rows(2)[0], {COT_ATTR: np.ones(2)}, param_names=names)
    with pytest.raises(DataError) as e:
        _load([a, b])
    assert str(e.value) == (f"{a} and {b}: expected the same parameter_names (in any order), but got only in "
                            "the first: 'hip_stiffness'; only in the second: 'pelvis_mass'")


def test_directory_glob_and_list_inputs(tmp_path):
    run = tmp_path / "campaign"
    f1 = _file(run / "run_001", "rollout_data.h5", n=2)
    f0 = _file(run / "run_000", "rollout_data.h5", n=3)
    f2 = _file(run / "extra", "x.hdf5", n=1)
    (run / "notes.txt").write_text("not data")
    assert expand_paths(run) == [f2, f0, f1]
    assert expand_paths(run / "run_000") == [f0]
    assert expand_paths(str(run / "run_*" / "*.h5")) == [f0, f1]
    assert expand_paths([f1, f0, str(f1)]) == [f1, f0]
    t = _load(str(run / "run_*" / "rollout_data.h5"))
    assert (len(t), t.files) == (5, [str(f0), str(f1)])


def test_folder_with_rollout_data_means_that_file_only(tmp_path):
    _file(tmp_path, "other.h5", n=4)
    f = _file(tmp_path, "rollout_data.h5", n=2)
    assert expand_paths(tmp_path) == [f]


# ----------------------------------------------------------------------------- bad files
def test_missing_paths(tmp_path):
    with pytest.raises(DataFileNotFound, match="does not exist") as e:
        _load(tmp_path / "nope.h5")
    assert isinstance(e.value, FileNotFoundError)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataFileNotFound, match=r"expected \.h5/\.hdf5 rollout files in this folder, but got none"):
        _load(tmp_path / "empty_dir")
    with pytest.raises(DataFileNotFound, match="expected files matching this pattern, but got none"):
        _load(str(tmp_path / "*.h5"))
    with pytest.raises(DataFileNotFound, match="expected at least one rollout file"):
        _load([])
    with pytest.raises(DataError, match="^path: expected a file, folder, glob or a list of them, but got None$"):
        _load(None)


def _bad_file(tmp_path: Path, kind: str) -> Path:
    """A file broken in one way."""
    p = tmp_path / f"{kind}.h5"
    if kind == "text":
        p.write_text("param_0,success\n1,true\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        full = _file(tmp_path, "full.h5", n=20)
        p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif kind == "no_names":
        _file(tmp_path, p.name)
        _edit(p, lambda f: f.__delitem__("parameter_names"))
    elif kind == "numeric_names":
        _file(tmp_path, p.name)
        _edit(p, lambda f: (f.__delitem__("parameter_names"), f.create_dataset("parameter_names", data=np.arange(13))))
    elif kind == "no_groups":
        with h5py.File(p, "w") as f:
            f["parameter_names"] = np.array([b"gait_stride", b"gait_cadence"])
    elif kind == "all_failed":
        _file(tmp_path, p.name, n=3, success=np.zeros(3, bool))
    elif kind == "all_skipped":
        _file(tmp_path, p.name, n=2, outputs={COT_STD_ATTR: np.ones(2)})
    elif kind == "group_is_dataset":
        _file(tmp_path, p.name, n=2)
        _edit(p, lambda f: f.create_dataset("param_5", data=np.ones(3)))
    return p


BAD = {
    "text": "expected an HDF5 file, but got one HDF5 cannot open (not HDF5, truncated or corrupt): ",
    "empty": "expected an HDF5 file, but got an empty file (0 bytes)",
    "truncated": "expected an HDF5 file, but got one HDF5 cannot open (not HDF5, truncated or corrupt): ",
    "no_names": "expected a 'parameter_names' dataset at the root, but got none",
    "numeric_names": "expected 'parameter_names' to be a list of strings, but got array(",
    "no_groups": "expected param_N groups at the root, but got none",
    "all_failed": "expected at least one successful group, but all 3 failed",
    "all_skipped": "expected at least one usable row, but all 2 successful groups were skipped; first: ",
    "group_is_dataset": "param_5: expected a group, but got another kind of object",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_give_one_line_data_errors(tmp_path, kind):
    p = _bad_file(tmp_path, kind)
    with pytest.raises(DataError) as e:
        _load(p, on_missing="skip")
    msg = str(e.value)
    assert msg.startswith(f"{p}: {BAD[kind]}"), msg
    assert "\n" not in msg and "Traceback" not in msg


def test_file_is_closed_after_load_and_after_an_error(tmp_path):
    path = _file(tmp_path)
    _load(path)
    with h5py.File(path, "a"):  # would fail if the reader still held it open read-only
        pass
    _break(path, "param_1", "no_state")
    with pytest.raises(DataError):
        _load(path)
    with h5py.File(path, "a"):
        pass


# ----------------------------------------------------------------------------- cycle data
def _poison_cycles(path: Path) -> int:
    """Overwrite the object headers and data chunks of every cycle_K: reading one now fails."""
    spots = []
    with h5py.File(path, "r") as f:
        for g in f.values():
            for name, c in (g.items() if isinstance(g, h5py.Group) else ()):
                if name.startswith("cycle_"):
                    spots += [(h5py.h5o.get_info(c["data"].id).addr, 16),
                              (c["data"].id.get_chunk_info(0).byte_offset, 8),
                              (h5py.h5o.get_info(c.id).addr, 16)]
    with open(path, "r+b") as fh:
        for addr, size in spots:
            fh.seek(addr)
            fh.write(b"\xff" * size)
    return len(spots)


def test_cycle_data_is_never_read(tmp_path):
    x, y = _rows(5)
    path = write_rollout_file(tmp_path / "c.h5", x, {COT_ATTR: y}, with_cycles=True, n_cycles=3)
    clean = _load(path)
    assert _poison_cycles(path) == 5 * 3 * 3
    with pytest.raises(Exception):
        with h5py.File(path, "r") as f:
            f["param_0/cycle_0/data"][()]
    poisoned = _load(path)
    np.testing.assert_array_equal(poisoned.inputs, clean.inputs)
    np.testing.assert_array_equal(poisoned.targets, clean.targets)


def test_cycle_fixture_never_read(fixtures_dir, tmp_path):
    path = tmp_path / "r120.h5"
    shutil.copyfile(fixtures_dir / "rollouts" / "r120_cycles.h5", path)
    os.chmod(path, 0o644)
    clean = _load(path)
    assert _poison_cycles(path) > 0
    np.testing.assert_array_equal(_load(path).targets, clean.targets)
    assert (len(clean), clean.n_failed) == (113, 7)


# ----------------------------------------------------------------------------- fixtures
@pytest.mark.parametrize("name, rows, failed", [
    ("u225.h5", 213, 12), ("u225_cstyle.h5", 205, 20), ("r120_cycles.h5", 113, 7), ("r1k_13d.h5", 938, 62)])
def test_shared_fixtures(fixtures_dir, name, rows, failed):
    path = fixtures_dir / "rollouts" / name
    t = _load(path)
    assert (len(t), t.n_failed, t.n_groups) == (rows, failed, rows + failed)
    with h5py.File(path) as f:
        g = f[next(k for k in f if k.startswith("param_") and int(k[6:].split(".")[0]) == t.param_idx[-1])]
        assert t.targets[-1, 0] == np.float32(np.asarray(g.attrs[COT_ATTR]).ravel()[0])
        assert t.inputs[-1].tolist() == g["param_state"][()][[1, 0]].tolist()
    assert np.all(np.diff(t.param_idx) > 0)


# ----------------------------------------------------------------------------- processes
@pytest.fixture
def small_chunks(monkeypatch):
    """Make the reader use processes for tiny jobs, so parallel paths run in tests."""
    monkeypatch.setattr(reader, "PARALLEL_MIN_GROUPS", 10)
    monkeypatch.setattr(reader, "MIN_CHUNK_GROUPS", 7)


def test_parallel_read_equals_serial(tmp_path, small_chunks):
    a = _file(tmp_path, "a.h5", n=40, success=np.arange(40) % 7 != 3, indices=list(range(40))[::-1])
    b = _file(tmp_path, "b.h5", n=25, seed=3, start_index=100, style="cstyle")
    tasks, n_proc = reader.plan_tasks([(0, reader.read_header(a), [1, 0])], None, 2)
    assert (len(tasks), n_proc) == (6, 2) and sum(len(t.groups) for t in tasks) == 40
    serial, parallel = _load([a, b], workers=1), _load([a, b], workers=2)
    for field in ("inputs", "targets", "param_idx", "source"):
        np.testing.assert_array_equal(getattr(serial, field), getattr(parallel, field))
    assert (parallel.n_groups, parallel.n_failed) == (65, 6)


def test_parallel_read_raises_the_first_error_in_order(tmp_path, small_chunks):
    path = _file(tmp_path, n=60)
    _break(path, "param_50", "no_state")
    _break(path, "param_33", "no_output")
    with pytest.raises(DataError, match=r"param_33: expected attribute"):
        _load(path, workers=2)
    t = _load(path, workers=2, on_missing="skip")
    assert t.n_skipped == 2 and [s.split(": ")[1] for s in t.skipped] == ["param_33", "param_50"]


def test_errors_are_rollfit_errors_not_h5py_tracebacks(tmp_path):
    with pytest.raises(RollfitError):
        _load(_bad_file(tmp_path, "truncated"))


# ----------------------------------------------------------------------------- table
def test_table_subset_concat_and_names(tmp_path):
    a = _load(_file(tmp_path, "a.h5", n=4))
    b = _load(_file(tmp_path, "b.h5", n=3, start_index=10))
    both = RolloutTable.concat([a, b, a])
    assert len(both) == 11 and both.files == a.files + b.files
    assert both.source.tolist() == [0] * 4 + [1] * 3 + [0] * 4
    assert both.n_groups == 11
    sub = both.subset(np.array([4, 0]))
    assert sub.group_names() == ["param_10", "param_0"] and sub.source.tolist() == [1, 0]
    assert len(both.subset(both.param_idx >= 10)) == 3 and len(both.subset(slice(0, 2))) == 2
    with pytest.raises(ValueError, match="one row count"):
        RolloutTable(a.inputs, a.targets[:2], a.param_idx, a.source, a.files, IN, OUT, [COT_ATTR])


def test_forkserver_workers_when_other_threads_run(tmp_path, small_chunks, monkeypatch):
    path = _file(tmp_path, n=30)
    monkeypatch.setattr(reader.threading, "active_count", lambda: 2)  # as if a tqdm/torch thread ran
    assert reader._pool_context().get_start_method() in ("forkserver", "spawn")
    np.testing.assert_array_equal(_load(path, workers=2).inputs, _load(path, workers=1).inputs)


def _die(task) -> None:
    os._exit(3)


def test_dead_worker_is_a_data_error(tmp_path, small_chunks):
    header = reader.read_header(_file(tmp_path, n=30))
    tasks, _ = reader.plan_tasks([(0, header, [1, 0])], None, 2)
    with pytest.raises(DataError, match="expected reader processes to finish, but one died"):
        reader.run_tasks(_die, tasks, 2)


def test_small_jobs_stay_in_this_process(tmp_path, monkeypatch):
    files = [_file(tmp_path, f"{k}.h5", n=5) for k in range(4)]
    tasks, n_proc = reader.plan_tasks([(k, reader.read_header(f), [1, 0]) for k, f in enumerate(files)], None, 2)
    assert (len(tasks), n_proc) == (4, 1)
    monkeypatch.setattr(reader, "ProcessPoolExecutor", None)  # any pool would fail
    assert len(_load(files, workers=2)) == 20
