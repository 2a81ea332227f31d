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
