"""Split and normalization statistics (the seed's edge cases: one row, constant columns)."""
import numpy as np
import pytest

from rollfit.data.datamodule import normalization_stats, split_indices


def test_stats_use_biased_std_and_replace_zero_std():
    v = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, std = normalization_stats(v)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # biased std of [1,3] is 1; constant column -> 1.0


def test_one_row_file_works():
    mean, std = normalization_stats(np.array([[2.5, -1.0]]))
    np.testing.assert_allclose(mean, [2.5, -1.0])
    np.testing.assert_allclose(std, [1.0, 1.0])


def test_split_all_means_train_is_val():
    tr, va = split_indices(10, 1.0, 0)
    assert tr.tolist() == va.tolist() == list(range(10))


def test_split_is_seeded_disjoint_and_complete():
    tr, va = split_indices(100, 0.8, 7)
    assert len(tr) == 80 and len(va) == 20 and not set(tr) & set(va) and set(tr) | set(va) == set(range(100))
    assert split_indices(100, 0.8, 7)[0].tolist() == tr.tolist()
    assert split_indices(100, 0.8, 8)[0].tolist() != tr.tolist()


@pytest.mark.parametrize("n", [2, 3])
def test_split_keeps_a_row_on_each_side(n):
    tr, va = split_indices(n, 0.99, 0)
    assert len(tr) >= 1 and len(va) >= 1


def test_tiny_units_are_not_constant():
    """Issue 15: targets in units of 1e-9 kept std 1.0 (absolute 1e-8 cut), so they trained to nothing."""
    rng = np.random.default_rng(0)
    v = np.stack([rng.uniform(1e-9, 3e-9, 50), rng.uniform(-1, 1, 50) * 1e-9], axis=1).astype(np.float32)
    mean, std = normalization_stats(v, ["cot_nano", "stride_nano"])
    np.testing.assert_allclose(std, v.astype(np.float64).std(axis=0), rtol=1e-5)
    z = (v - mean) / std
    assert 0.5 < z.std(axis=0).min() and z.std(axis=0).max() < 2


def test_constant_column_is_relative_and_warns_once_naming_the_label():
    v = np.array([[1000.0, 1.0], [1000.0 + 1e-5, 2.0], [1000.0, 3.0]])
    with pytest.warns(UserWarning) as rec:
        _, std = normalization_stats(v, ["mass", "speed"])
    assert std[0] == 1.0 and std[1] != 1.0
    assert len(rec) == 1
    text = str(rec[0].message)
    assert "column 'mass': expected values that vary, but got a constant column" in text and "\n" not in text


def test_setup_warns_about_a_constant_target():
    from rollfit.data.datamodule import HDF5DataModule
    from rollfit.data.table import RolloutTable

    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    t = RolloutTable(x, np.full((3, 1), 7.0, np.float32), np.arange(3), np.zeros(3), ["f"], ["a", "b"], ["cot"], ["cot"])
    with pytest.warns(UserWarning, match="column 'cot'"):
        dm = HDF5DataModule(t).setup()
    assert dm.target_std.tolist() == [1.0]
