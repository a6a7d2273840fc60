"""Is variant A really better than B? Paired statistics on the same test images.

Both tests pair by image: each image is scored right or wrong under A and under B.
  McNemar's exact test   only the discordant images matter (A right & B wrong, or the reverse);
                         under "no difference" each discordant image is a fair coin, so the
                         p-value is a two-sided binomial test of one count against n/2.
  paired bootstrap       resample images with replacement, keeping each image's pair together,
                         and take the percentile interval of the accuracy difference.
Several seeds: the difference and its interval use each image's correctness averaged over a
variant's seeds (so the difference equals the difference of the mean accuracies); McNemar needs
one right/wrong per image, so it uses the first seed's run of each. The bootstrap captures the
test-set sampling noise; the spread between seeds (training noise) is the results table's std.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

RESAMPLES, CONFIDENCE, SEED = 2000, 0.95, 0


@dataclass(frozen=True)
class Comparison:
    n_images: int
    seeds_a: int  # runs averaged for A's accuracy (McNemar uses the first)
    seeds_b: int
    acc_a: float
    acc_b: float
    diff: float  # acc_a - acc_b
    ci_low: float
    ci_high: float
    a_only: int  # images A gets right and B wrong (first seed of each)
    b_only: int
    p_value: float  # McNemar, exact, two-sided
    confidence: float
    resamples: int

    def verdict(self, a: str, b: str, alpha: float = 0.05) -> str:
        """One line a reader can quote."""
        ci = f"{100 * self.confidence:.0f}% CI {100 * self.ci_low:+.2f} to {100 * self.ci_high:+.2f} points"
        if self.ci_low > 0 and self.p_value < alpha:
            return f"{a} is better than {b}: {100 * self.diff:+.2f} points ({ci}, McNemar p={self.p_value:.2g})"
        if self.ci_high < 0 and self.p_value < alpha:
            return f"{a} is worse than {b}: {100 * self.diff:+.2f} points ({ci}, McNemar p={self.p_value:.2g})"
        return (f"no clear difference between {a} and {b}: {100 * self.diff:+.2f} points ({ci}, "
                f"McNemar p={self.p_value:.2g}); this test set does not separate them")


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    n = a_only + b_only
    if n == 0:
        return 1.0  # the two classifiers agree on every image: no evidence either way
    return float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = RESAMPLES,
                     confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of mean(correct_a - correct_b) over images resampled in pairs."""
    d = np.asarray(correct_a, dtype=float) - np.asarray(correct_b, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(len(d), 1))  # bound memory: ~16 MB of indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def compare(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = RESAMPLES,
            confidence: float = CONFIDENCE, seed: int = SEED) -> Comparison:
    """correct_a, correct_b: (seeds, images) booleans, the same images in the same order."""
    a, b = np.atleast_2d(correct_a).astype(bool), np.atleast_2d(correct_b).astype(bool)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"different numbers of test images: {a.shape[1]} and {b.shape[1]}")
    mean_a, mean_b = a.mean(0), b.mean(0)  # per image, averaged over seeds
    low, high = paired_bootstrap(mean_a, mean_b, resamples, confidence, seed)
    a_only, b_only = int(np.sum(a[0] & ~b[0])), int(np.sum(~a[0] & b[0]))
    return Comparison(n_images=a.shape[1], seeds_a=len(a), seeds_b=len(b), acc_a=float(mean_a.mean()),
                      acc_b=float(mean_b.mean()), diff=float(mean_a.mean() - mean_b.mean()), ci_low=low,
                      ci_high=high, a_only=a_only, b_only=b_only, p_value=mcnemar_exact(a_only, b_only),
                      confidence=confidence, resamples=resamples)
