from math import comb

import numpy as np
import pytest

from bench.stats import compare, mcnemar_exact, paired_bootstrap


def binomial_two_sided(b, c):
    """McNemar's exact p by hand: twice the smaller binomial tail of Bin(b + c, 1/2), at most 1."""
    n = b + c
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def test_mcnemar_matches_hand_computed_binomial():
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024)  # 2 * (1 + 10 + 45) / 2^10
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024)  # symmetric
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0  # the classifiers never disagree: no evidence
    for b, c in [(30, 12), (101, 77), (1, 20)]:
        assert mcnemar_exact(b, c) == pytest.approx(binomial_two_sided(b, c), rel=1e-9)


def test_bootstrap_is_deterministic_contains_the_difference_and_has_the_right_width():
    rng = np.random.default_rng(1)
    n = 4000
    a = rng.random(n) < 0.80
    b = a.copy()
    flip = rng.random(n) < 0.15  # B disagrees with A on ~15% of the images
    b[flip] = ~b[flip]
    observed = a.mean() - b.mean()
    low, high = paired_bootstrap(a, b, seed=0)
    assert (low, high) == paired_bootstrap(a, b, seed=0)
    assert (low, high) != paired_bootstrap(a, b, seed=1)
    assert low < observed < high
    # A percentile interval of a mean of 4,000 paired differences is close to the normal one.
    d = a.astype(float) - b.astype(float)
    half = 1.96 * d.std() / np.sqrt(n)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_of_identical_classifiers_is_a_point():
    a = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    assert paired_bootstrap(a, a, resamples=200) == (0.0, 0.0)


def test_compare_counts_discordant_pairs_and_averages_seeds():
    a = np.array([[1, 1, 1, 1, 0, 0, 1, 1],   # seed 0
                  [1, 1, 1, 0, 0, 0, 1, 1]], dtype=bool)  # seed 1
    b = np.array([[1, 0, 0, 1, 1, 0, 0, 1]], dtype=bool)
    c = compare(a, b, resamples=500)
    assert (c.a_only, c.b_only) == (3, 1)  # first seeds: A alone right on images 1, 2, 6; B alone on 4
    assert c.p_value == pytest.approx(mcnemar_exact(3, 1)) == pytest.approx(binomial_two_sided(3, 1))
    assert c.acc_a == pytest.approx((6 / 8 + 5 / 8) / 2)  # mean accuracy over A's two seeds
    assert c.acc_b == pytest.approx(4 / 8)
    assert c.diff == pytest.approx(c.acc_a - c.acc_b)
    assert c.ci_low <= c.diff <= c.ci_high
    assert (c.n_images, c.seeds_a, c.seeds_b, c.resamples) == (8, 2, 1, 500)
    assert compare(a, b, resamples=500) == c  # seeded: the same call gives the same interval


def test_verdict_needs_both_the_interval_and_the_test():
    rng = np.random.default_rng(0)
    b = rng.random(2000) < 0.7
    a = b | (rng.random(2000) < 0.3)  # A fixes ~30% of B's mistakes and breaks nothing
    assert compare(a, b).verdict("A", "B").startswith("A is better than B")
    assert compare(b, a).verdict("B", "A").startswith("B is worse than A")
    assert compare(a, a).verdict("A", "A2").startswith("no clear difference")


def test_compare_rejects_different_numbers_of_images():
    with pytest.raises(ValueError, match="different numbers of test images"):
        compare(np.ones(5, bool), np.ones(6, bool))
