"""FID / IS / mIS / AM on distributions with known answers and against direct numpy / scipy formulas."""
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from seqmamba.metrics import (am_score, feature_statistics, frechet_distance, inception_score,
                              modified_inception_score, score_samples)


def confident(labels, n_classes=10, eps=0.0):
    p = np.full((len(labels), n_classes), eps / (n_classes - 1))
    p[np.arange(len(labels)), labels] = 1 - eps
    return p


def test_inception_score_of_confident_predictions_spread_evenly_over_10_classes_is_10():
    assert inception_score(confident(np.arange(1000) % 10)) == pytest.approx(10.0, rel=1e-9)


def test_inception_score_of_one_class_or_uniform_predictions_is_1():
    assert inception_score(confident(np.zeros(50, int))) == pytest.approx(1.0, abs=1e-9)
    assert inception_score(np.full((50, 10), 0.1)) == pytest.approx(1.0, abs=1e-9)


def test_fid_of_a_set_with_itself_is_zero_never_negative():
    rng = np.random.default_rng(0)
    for n, d in [(500, 16), (40, 128)]:  # the second: rank-deficient covariance (n < d)
        f = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, d)
        mu, sigma = feature_statistics(f)
        assert frechet_distance(mu, sigma, mu, sigma) == 0.0


def test_fid_matches_scipy_sqrtm_formula_on_random_features():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    b = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12)) + 0.5
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(*feature_statistics(a), *feature_statistics(b)) == pytest.approx(direct, rel=1e-8)


def test_fid_grows_with_a_mean_shift():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((300, 8))
    stats = feature_statistics(f)
    shifted = feature_statistics(f + 3.0)
    assert frechet_distance(*stats, *shifted) == pytest.approx(8 * 9.0, rel=1e-9)  # covariances equal


def test_modified_inception_score_matches_brute_force_pairs():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(10, 0.3), size=60)
    kl = np.array([[scipy.stats.entropy(p[i], p[j]) for j in range(60)] for i in range(60)])
    assert modified_inception_score(p) == pytest.approx(np.exp(kl.mean()), rel=1e-9)


def test_inception_and_am_match_scipy_entropy():
    rng = np.random.default_rng(4)
    ref = rng.dirichlet(np.full(10, 0.5), size=200)
    gen = rng.dirichlet(np.full(10, 0.5), size=100)
    is_direct = np.exp(np.mean([scipy.stats.entropy(g, gen.mean(0)) for g in gen]))
    am_direct = scipy.stats.entropy(ref.mean(0), gen.mean(0)) + np.mean([scipy.stats.entropy(g) for g in gen])
    assert inception_score(gen) == pytest.approx(is_direct, rel=1e-9)
    assert am_score(ref, gen) == pytest.approx(am_direct, rel=1e-9)


def test_score_samples_of_a_set_with_itself():
    rng = np.random.default_rng(5)
    f = rng.standard_normal((100, 6))
    p = confident(np.arange(100) % 10, eps=0.01)
    s = score_samples(f, p, f, p)
    assert s.fid == 0.0 and s.n_samples == 100
    assert s.am == pytest.approx(-(p * np.log(p)).sum(1).mean(), rel=1e-9)  # KL term is 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="rows must sum to 1"):
        inception_score(np.ones((3, 10)))
    with pytest.raises(ValueError, match="n_samples >= 2"):
        feature_statistics(np.ones((1, 4)))
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
