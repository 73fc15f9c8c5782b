"""Metrics against independent computations and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from dermsynth.metrics.classification import classification_report
from dermsynth.metrics.generative import (alpha_precision_beta_recall, authenticity, fid, kid, memorisation,
                                          precision_recall)


# --- classification ------------------------------------------------------------------------------

def test_balanced_accuracy_and_auc_by_hand():
    # 3 classes; truth 0,0,0,0,1,1,2,2 ; predictions 0,0,0,1,1,2,2,2
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    probs = np.array([[.9, .05, .05], [.8, .1, .1], [.6, .3, .1], [.3, .6, .1],
                      [.2, .7, .1], [.1, .3, .6], [.1, .1, .8], [.2, .2, .6]])
    report = classification_report(y, probs, ["a", "b", "c"])
    # recalls: a 3/4, b 1/2, c 2/2 → balanced accuracy 0.75; accuracy 6/8
    assert report["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert report["accuracy"] == pytest.approx(6 / 8)
    # AUC of class b (scores .05,.1,.3,.6 | .7,.3 | .1,.2 for negatives/positives): positives {.7, .3},
    # negatives {.05, .1, .3, .6, .1, .2}: pairs won 6 + 4 + 0.5 (tie) = 10.5 of 12
    assert report["per_class"]["b"]["auc"] == pytest.approx(10.5 / 12)
    assert report["per_class"]["a"]["precision"] == pytest.approx(1.0)
    assert report["confusion"]["counts"] == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]


def _auc_mann_whitney(positive: np.ndarray, negative: np.ndarray) -> float:
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return wins / (len(positive) * len(negative))


def test_random_predictions_match_direct_numpy_computation():
    rng = np.random.default_rng(0)
    k, n = 7, 500
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    report = classification_report(y, probs, [str(i) for i in range(k)])
    predicted = probs.argmax(1)
    recalls = [(predicted[y == c] == c).mean() for c in range(k)]
    assert report["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    for c in range(k):
        expected = _auc_mann_whitney(probs[y == c, c], probs[y != c, c])
        assert report["per_class"][str(c)]["auc"] == pytest.approx(expected)
    assert report["mean_auc"] == pytest.approx(np.mean([_auc_mann_whitney(probs[y == c, c], probs[y != c, c])
                                                        for c in range(k)]))


def test_binary_report_and_absent_class():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[.8, .2], [.4, .6], [.3, .7], [.6, .4]])
    report = classification_report(y, probs, ["benign", "malignant"])
    assert report["binary_auc"] == pytest.approx(_auc_mann_whitney(np.array([.7, .4]), np.array([.2, .6])))
    only_one_class = classification_report(np.array([0, 0]), np.array([[.9, .1], [.2, .8]]), ["benign", "malignant"])
    assert np.isnan(only_one_class["per_class"]["malignant"]["auc"])


# --- generative ---------------------------------------------------------------------------------

def _frechet_numpy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(32, 32)) / 6
    return lambda n, shift=0.0, seed=0: (np.random.default_rng(seed).normal(size=(n, 32)) @ mixing + shift)


def test_fid_matches_a_direct_computation_and_grows_with_the_shift(features):
    real = features(2000, seed=1)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-6)
    values = [fid(real, features(2000, shift=s, seed=2)) for s in (0.0, 0.1, 0.3, 1.0)]
    assert values == sorted(values) and values[0] < values[-1] / 50
    fake = features(2000, shift=0.3, seed=2)
    assert fid(real, fake) == pytest.approx(_frechet_numpy(real, fake), rel=1e-4)


def test_symmetric_form_equals_clean_fid_when_well_conditioned_and_works_when_singular(features):
    from dermsynth.metrics.generative import frechet_distance_psd
    real, fake = features(2000, seed=1), features(2000, shift=0.3, seed=2)
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (real, fake)]
    assert frechet_distance_psd(*stats[0], *stats[1]) == pytest.approx(fid(real, fake), rel=1e-6)
    few_real, few_fake = features(20, seed=1), features(20, shift=0.5, seed=2)  # 20 samples, 32 dimensions
    assert abs(fid(few_real, few_real)) < 1e-6 * np.trace(np.cov(few_real, rowvar=False))
    assert fid(few_real, few_fake) > fid(few_real, features(20, seed=3))


def _kid_unbiased_numpy(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m = len(x)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def _mmd2_unbiased_by_sums(x: np.ndarray, y: np.ndarray) -> float:
    """MMD² with the cubic polynomial kernel k(a, b) = (a·b/d + 1)³, written as explicit sums over pairs:
    mean k over distinct pairs within x, within y, minus twice the mean k over all cross pairs."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return within - 2 * cross


def test_kid_is_the_unbiased_mmd_estimator_and_grows_with_the_shift(features):
    real, fake = features(300, seed=1), features(300, shift=0.2, seed=2)
    assert kid(real, fake, subsets=1, subset_size=300) == pytest.approx(_kid_unbiased_numpy(real, fake), rel=1e-9)
    small_real, small_fake = real[:40], fake[:40]
    assert kid(small_real, small_fake, subsets=1, subset_size=40) == pytest.approx(
        _mmd2_unbiased_by_sums(small_real, small_fake), rel=1e-9)
    values = [kid(real, features(300, shift=s, seed=3), subsets=20, subset_size=200) for s in (0.0, 0.2, 0.5)]
    assert values == sorted(values) and values[0] < values[-1] / 10


def test_kid_averages_the_mmd_of_random_subsets_of_the_stated_size(features):
    """clean-fid's sampling, seeded: per subset, `subset_size` generated rows then `subset_size` real rows,
    drawn without replacement from numpy's global generator; KID is the mean MMD² over the subsets."""
    real, fake = features(50, seed=1), features(45, shift=0.3, seed=2)
    for size, subsets, seed in ((12, 3, 0), (20, 2, 7)):
        rng = np.random.RandomState(seed)
        expected = []
        for _ in range(subsets):
            x = fake[rng.choice(len(fake), size, replace=False)]
            y = real[rng.choice(len(real), size, replace=False)]
            expected.append(_mmd2_unbiased_by_sums(x, y))
        assert kid(real, fake, subsets=subsets, subset_size=size, seed=seed) == pytest.approx(np.mean(expected),
                                                                                              rel=1e-9)
    # whatever the sampling order: subsets smaller than the sets vary with the seed, whole sets do not
    assert len({round(kid(real, fake, subsets=1, subset_size=10, seed=s), 12) for s in range(4)}) == 4
    whole = {round(kid(real[:45], fake, subsets=1, subset_size=45, seed=s), 12) for s in range(3)}
    assert whole == {round(_kid_unbiased_numpy(fake, real[:45]), 12)}


def test_kid_leaves_numpys_global_generator_as_it_found_it(features):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    kid(features(30, seed=1), features(30, seed=2), subsets=3, subset_size=10, seed=4)
    assert np.random.rand() == expected


def test_precision_recall_identical_sets_and_half_noise(features):
    real = features(600, seed=1)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    noise = np.random.default_rng(9).uniform(-8, 8, size=(300, 32))
    precision, recall = precision_recall(real, np.vstack([features(300, seed=2), noise]))
    assert 0.35 < precision < 0.6 and recall > 0.5


def test_authenticity_and_memorisation(features):
    real = features(500, seed=1)
    copies = real[:200] + 1e-6
    assert authenticity(real, copies) < 0.02
    assert authenticity(real, features(500, seed=2)) > 0.35
    report = memorisation(real, np.vstack([copies[:5], features(5, seed=3)]))
    assert report["copy"] == [True] * 5 + [False] * 5
    assert report["nearest_real"][:5] == list(range(5))


def test_alpha_precision_beta_recall(features):
    real = features(800, seed=1)
    same = alpha_precision_beta_recall(real, features(800, seed=2))
    shifted = alpha_precision_beta_recall(real, features(800, shift=1.0, seed=2))
    assert same["alpha_precision"] > 0.8 and same["beta_recall"] > shifted["beta_recall"]
    assert shifted["alpha_precision"] < same["alpha_precision"] - 0.2
