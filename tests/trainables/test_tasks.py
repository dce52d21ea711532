"""The task types' metrics in numpy (trainables/tasks.py) against the libraries they replace in
a trial worker: sklearn's macro F1, scipy's Pearson and Spearman (ties included)."""

import numpy as np
import pytest
import torch

from trainables.tasks import TASK_TYPES, average_ranks, macro_f1, pearson


@pytest.mark.parametrize("seed", range(20))
def test_macro_f1_is_sklearns(seed):
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    size = int(rng.integers(1, 40))
    y = rng.integers(0, n, size)
    # some labels never true, some never predicted, some neither (n + 1 of them in all)
    p = rng.integers(0, max(1, n - 1), size) if seed % 3 == 0 else rng.integers(0, n, size)
    want = f1_score(y, p, average="macro", labels=np.arange(n + 1), zero_division=0)
    assert macro_f1(y, p, n + 1) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_pearson_and_spearman_are_scipys(seed):
    from scipy import stats

    rng = np.random.default_rng(seed)
    size = int(rng.integers(3, 60))
    a = rng.normal(size=size)
    b = 0.5 * a + rng.normal(size=size)
    if seed % 2:  # ties, as a rating scale or a collapsed regressor gives them
        a, b = np.round(a, 0), np.round(b, 1)
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0], abs=1e-12)
    assert np.array_equal(average_ranks(a), stats.rankdata(a))
    assert pearson(average_ranks(a), average_ranks(b)) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def test_the_regression_metrics_on_the_labels_scale():
    from scipy import stats

    class Data:
        target_std, target_mean = 2.0, 5.0

    p = [torch.tensor([0.1, -1.0, 0.5]), torch.tensor([2.0, 0.5])]
    y = [torch.tensor([0.0, -0.5, 1.0]), torch.tensor([1.5, 0.2])]
    got = TASK_TYPES["regression"].metrics(p, y, Data())  # type: ignore[arg-type]
    pp, yy = torch.cat(p).double().numpy() * 2 + 5, torch.cat(y).double().numpy() * 2 + 5
    assert got["pearson"] == pytest.approx(stats.pearsonr(pp, yy)[0], abs=1e-12)
    assert got["spearman"] == pytest.approx(stats.spearmanr(pp, yy)[0], abs=1e-12)
    assert got["mse"] == pytest.approx(float(np.mean((pp - yy) ** 2)))
    flat = TASK_TYPES["regression"].metrics([torch.zeros(4)], y[:1] + [torch.zeros(1)], Data())  # type: ignore[arg-type]
    assert flat["pearson"] == flat["spearman"] == 0.0  # a constant prediction: no correlation, not NaN
