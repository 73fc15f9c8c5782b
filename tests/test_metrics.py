"""Metrics against independent computations and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from dermsynth.config import schema_defaults
from dermsynth.metrics.classification import classification_report
from dermsynth.metrics.generative import (KID_SEED, KID_SUBSETS, alpha_precision_beta_recall, authenticity, fid, kid,
                                          memorisation, precision_recall)


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


@pytest.mark.parametrize("n_real, n_fake, dim", [(20, 20, 32), (12, 7, 64), (40, 16, 2048), (500, 300, 32)])
def test_the_sample_form_of_the_frechet_distance_equals_the_covariance_form(n_real, n_fake, dim):
    from dermsynth.metrics.generative import frechet_distance_psd, frechet_distance_samples
    rng = np.random.default_rng(n_real * dim)
    real = rng.normal(size=(n_real, dim)) @ rng.normal(size=(dim, dim)) / 8
    fake = rng.normal(size=(n_fake, dim)) @ rng.normal(size=(dim, dim)) / 8 + 0.3
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (real, fake)]
    expected = frechet_distance_psd(*stats[0], *stats[1])
    assert frechet_distance_samples(real, fake) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_samples(real, real) == pytest.approx(0.0, abs=1e-9 * np.trace(stats[0][1]))


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
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    noise = np.random.default_rng(9).uniform(-8, 8, size=(300, 32))
    precision, recall = precision_recall(real, np.vstack([features(300, seed=2), noise]), k=3)
    assert 0.35 < precision < 0.6 and recall > 0.5


def test_authenticity_and_memorisation(features):
    real = features(500, seed=1)
    copies = real[:200] + 1e-6
    assert authenticity(real, copies) < 0.02
    assert authenticity(real, features(500, seed=2)) > 0.35
    report = memorisation(real, np.vstack([copies[:5], features(5, seed=3)]), copy_ratio=0.1)
    assert report["copy"] == [True] * 5 + [False] * 5
    assert report["nearest_real"][:5] == list(range(5))


def test_alpha_precision_beta_recall(features):
    real = features(800, seed=1)
    same = alpha_precision_beta_recall(real, features(800, seed=2), k=3)
    shifted = alpha_precision_beta_recall(real, features(800, shift=1.0, seed=2), k=3)
    assert same["alpha_precision"] > 0.8 and same["beta_recall"] > shifted["beta_recall"]
    assert shifted["alpha_precision"] < same["alpha_precision"] - 0.2


# --- against direct implementations of the documented formulas (scipy distances, numpy) --------------------

def test_classification_report_fields_against_numpy():
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c", "d", "e", "f"]
    y = rng.choice([0, 1, 3, 4], size=60)  # class c (2) never occurs in the truth, f (5) neither
    probs = rng.dirichlet(np.ones(6), 60)
    probs[:, 4] *= 0.01  # class e is (almost) never predicted
    probs[:, 5] = 0.0  # class f is never predicted either
    probs /= probs.sum(axis=1, keepdims=True)
    report = classification_report(list(y), probs.tolist(), classes)
    predicted = probs.argmax(axis=1)
    assert report["n"] == 60 and report["accuracy"] == pytest.approx((predicted == y).mean())
    counts = np.array([[np.sum((y == t) & (predicted == p)) for p in range(6)] for t in range(6)])
    assert report["confusion"]["classes"] == classes and report["confusion"]["counts"] == counts.tolist()
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.where(rows > 0, counts / np.maximum(rows, 1), 0.0)
    np.testing.assert_allclose(report["confusion"]["normalised"], normalised.round(6), atol=0)
    for k, name in enumerate(classes):
        entry = report["per_class"][name]
        assert entry["support"] == int((y == k).sum())
        assert entry["recall"] == pytest.approx((predicted[y == k] == k).mean() if (y == k).any() else 0.0)
        expected_precision = (y[predicted == k] == k).mean() if (predicted == k).any() else 0.0  # zero_division=0
        assert entry["precision"] == pytest.approx(expected_precision)
    assert np.isnan(report["per_class"]["c"]["auc"]) and report["per_class"]["e"]["precision"] == 0.0
    present = [k for k in range(6) if (y == k).any()]
    assert report["per_class"]["f"] == {"recall": 0.0, "precision": 0.0, "auc": report["per_class"]["f"]["auc"],
                                        "support": 0}
    assert report["balanced_accuracy"] == pytest.approx(np.mean([(predicted[y == k] == k).mean() for k in present]))
    assert report["mean_auc"] == pytest.approx(np.mean([_auc_mann_whitney(probs[y == k, k], probs[y != k, k])
                                                        for k in present]))
    assert "binary_auc" not in report
    all_positive = classification_report([1, 1, 1], [[.2, .8], [.6, .4], [.3, .7]], ["benign", "malignant"])
    assert np.isnan(all_positive["per_class"]["malignant"]["auc"]) and np.isnan(all_positive["mean_auc"])
    assert np.isnan(all_positive["binary_auc"])
    with pytest.raises(ValueError, match=r"probabilities have shape \(3, 2\), expected \(3, 3\)"):
        classification_report([0, 1, 2], [[.5, .5]] * 3, ["a", "b", "c"])


def _kth_radius_scipy(x: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial.distance import cdist
    return np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself


def test_precision_recall_against_scipy_knn_manifolds(features):
    from scipy.spatial.distance import cdist
    real, fake = features(150, seed=1) + 3.0, features(120, shift=0.4, seed=2) + 3.0
    for k in (3, 5):
        real_r, fake_r = _kth_radius_scipy(real, k), _kth_radius_scipy(fake, k)
        precision = np.mean((cdist(fake, real) <= real_r[None, :]).any(axis=1))
        recall = np.mean((cdist(real, fake) <= fake_r[None, :]).any(axis=1))
        ours = precision_recall(real, fake, k=k)
        assert ours == pytest.approx((precision, recall), abs=1e-12)
        assert 0.2 < precision < 1.0  # neither trivially 0 nor 1
    # on the manifold's boundary counts as inside (≤): integer points at unit spacing
    line = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    assert precision_recall(line, np.array([[5.0], [7.0]]), k=1) == (0.5, pytest.approx(0.4))  # < would give (0, 0.2)


def _alpha_beta_numpy(real, fake, k=3, levels=20):
    """Alaa et al. 2022 as documented: α-precision from distances to the real centre, β-recall from the
    real points whose nearest synthetic point lies within their k-NN radius and inside the β-support."""
    from scipy.spatial.distance import cdist
    alphas = np.linspace(1 / levels, 1, levels)
    real_radius = np.linalg.norm(real - real.mean(0), axis=1)
    fake_distance = np.linalg.norm(fake - real.mean(0), axis=1)
    fake_radius = np.linalg.norm(fake - fake.mean(0), axis=1)
    to_fake = cdist(real, fake)
    nearest = to_fake.argmin(axis=1)
    close = to_fake.min(axis=1) <= _kth_radius_scipy(real, k)
    p_curve = np.array([np.mean(fake_distance <= np.quantile(real_radius, a)) for a in alphas])
    matched = fake_radius[nearest]
    r_curve = np.array([np.mean(close & (matched <= np.quantile(matched, a))) for a in alphas])
    return alphas, p_curve, r_curve


def test_alpha_precision_beta_recall_against_numpy(features):
    real, fake = features(300, seed=1) + 2.0, features(240, shift=0.3, seed=2) + 2.0  # off the origin
    ours = alpha_precision_beta_recall(real, fake, k=3)
    alphas, p_curve, r_curve = _alpha_beta_numpy(real, fake)
    assert ours["alphas"] == alphas.round(4).tolist() and len(ours["alphas"]) == 20
    assert ours["alpha_precision_curve"] == p_curve.round(4).tolist()
    assert ours["beta_recall_curve"] == r_curve.round(4).tolist()
    assert ours["alpha_precision"] == pytest.approx(1 - 2 * np.abs(p_curve - alphas).mean(), abs=1e-12)
    assert ours["beta_recall"] == pytest.approx(1 - 2 * np.abs(r_curve - alphas).mean(), abs=1e-12)
    other = alpha_precision_beta_recall(real, fake, k=5, levels=10)
    alphas, p_curve, r_curve = _alpha_beta_numpy(real, fake, k=5, levels=10)
    assert other["beta_recall"] == pytest.approx(1 - 2 * np.abs(r_curve - alphas).mean(), abs=1e-12)


def test_memorisation_and_authenticity_against_hand_made_distances():
    """1-D features: reals at 0, 10 and 30 (1-NN distances 10, 10, 20)."""
    real = np.array([[0.0], [10.0], [30.0]])
    samples = np.array([[1.0], [-10.0], [31.0], [22.0]])
    report = memorisation(real, samples, copy_ratio=0.1)
    assert report["nearest_real"] == [0, 0, 2, 2]
    assert report["distance"] == [1.0, 10.0, 1.0, 8.0]
    assert report["ratio"] == [0.1, 1.0, 0.05, 0.4]
    assert report["copy"] == [False, False, True, False]  # a ratio equal to the threshold is not a copy
    assert report["copies"] == 1 and report["copy_ratio_threshold"] == 0.1
    small = memorisation(real / 100, samples / 100, copy_ratio=0.1)  # distances below 1: the same ratios
    np.testing.assert_allclose(small["ratio"], [0.1, 1.0, 0.05, 0.4])
    # authenticity: farther from the nearest real than that real's own 1-NN distance (equal is not farther)
    assert authenticity(real, samples) == 0.0
    assert authenticity(real, np.array([[-10.5], [31.0]])) == 0.5


def test_kid_defaults_are_clean_fids_protocol():
    """100 subsets (a method constant) of at most `evaluation.kid_subset` images (1000 in the schema), seed 0."""
    size = schema_defaults("evaluation")["kid_subset"]
    assert (KID_SUBSETS, KID_SEED, size) == (100, 0, 1000)
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 4)), rng.normal(size=(30, 4)) + 0.1  # subsets of 30 of the 40 reals
    default = kid(real, fake, size)
    assert default == kid(real, fake, subsets=100, subset_size=1000, seed=0)
    assert default != kid(real, fake, subsets=99, subset_size=1000, seed=0)
    assert default != kid(real, fake, subsets=100, subset_size=1000, seed=1)
    real, fake = rng.normal(size=(1001, 4)), rng.normal(size=(1001, 4)) + 0.1  # one subset: 1000 of 1001
    assert kid(real, fake, size, subsets=1) != kid(real, fake, subsets=1, subset_size=1001)
