"""Is variant A really better than B? Seeds are the replicates; the test images are shared.

A study trains each variant once per seed, and seed s of A is paired with seed s of B (same split,
same test images). Let x[s, i] = correct_a[s, i] - correct_b[s, i], which is -1, 0 or 1, and let
d_s = mean_i x[s, i] be seed s's accuracy difference. The reported difference is mean_s d_s. Two
kinds of noise move it. (1) Training noise: another seed gives another network; the spread of d_s
over the n seeds (sample variance s_d^2) measures it, together with each seed's own coin flips on
the test images, so s_d^2 / n is their share of the variance of the mean (Dietterich 1998: the
run, not the image, is the unit of replication). (2) The test set itself: these N images are one
draw of the image population, and an image that suits A better than B does so in every seed, so
the seed spread cannot see it (Bouthillier et al. 2021 count both sources). Its share is
V_common / N, with V_common estimated by one-way random-effects ANOVA over images: dbar_i =
mean_s x[s, i], w_i = var_s x[s, i] (ddof=1), V_common = max(0, var_i dbar_i - mean_i w_i / n).
So SE^2 = s_d^2 / n + V_common / N; the interval is mean +- t(n-1, 1-alpha/2) * SE and the p-value
is the two-sided t test on n-1 degrees of freedom (conservative when V_common dominates). With one
seed no seed-level test exists: the interval covers test-set noise only, there is no p-value, and
nothing is claimed. Per-seed McNemar exact p-values and discordant counts are shown but never decide.

A table compares many variants, so some "significant" rows would appear by luck. Holm's step-down
adjustment (Holm 1979) controls the family-wise error rate - the chance of even one false claim in
the table - under any dependence between the tests, which matters because every row shares one
baseline. It is uniformly more powerful than Bonferroni, which makes the same promise; Benjamini-
Hochberg only bounds the expected share of false claims, weaker than what "significant" implies.

References: T. G. Dietterich (1998), "Approximate statistical tests for comparing supervised
classification learning algorithms", Neural Computation 10(7). X. Bouthillier et al. (2021),
"Accounting for variance in machine learning benchmarks", MLSys. S. Holm (1979), "A simple
sequentially rejective multiple test procedure", Scandinavian Journal of Statistics 6(2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm
from scipy.stats import t as student_t

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    n_images: int
    n_seeds: int  # paired seeds: row s of A against row s of B
    acc_a: float  # mean over the paired seeds
    acc_b: float
    diff: float  # acc_a - acc_b
    ci_low: float
    ci_high: float
    se: float
    df: int | None  # n_seeds - 1; None with one seed (normal interval)
    p_value: float | None  # two-sided paired t; None with one seed
    seed_level: bool  # False with one seed: the interval covers test-set noise only
    per_seed_diff: tuple[float, ...]
    mcnemar_p: tuple[float, ...]  # per seed, for display only
    a_only: tuple[int, ...]  # per seed: images A gets right and B wrong
    b_only: tuple[int, ...]
    confidence: float
    method: str

    def significant(self, alpha: float = 0.05, p_adjusted: float | None = None) -> bool:
        """True only for a seed-level test whose (adjusted, if given) p-value is below alpha."""
        p = self.p_value if p_adjusted is None else p_adjusted
        return self.seed_level and p is not None and p < alpha

    def verdict(self, a: str, b: str, alpha: float = 0.05, p_adjusted: float | None = None) -> str:
        """One line a reader can quote."""
        pts = f"{100 * self.diff:+.2f} points"
        ci = f"{100 * self.confidence:.0f}% CI {100 * self.ci_low:+.2f} to {100 * self.ci_high:+.2f}"
        if not self.seed_level:
            return (
                f"{a} vs {b}: {pts} on a single seed ({ci}, covering test-set noise only); "
                f"one seed cannot separate the recipes from training noise, so nothing is claimed"
            )
        stat = f"{self.method}, p={self.p_value:.2g}"
        if p_adjusted is not None:
            stat += f", adjusted p={p_adjusted:.2g}"
        if self.significant(alpha, p_adjusted):
            return f"{a} is {'better' if self.diff > 0 else 'worse'} than {b}: {pts} ({ci}, {stat})"
        return f"no clear difference between {a} and {b}: {pts} ({ci}, {stat}); not significant at {alpha:g}"


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    n = a_only + b_only
    if n == 0:
        return 1.0  # the two classifiers agree on every image: no evidence either way
    return float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)


def compare(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = CONFIDENCE) -> Comparison:
    """correct_a, correct_b: (seeds, images) booleans; row s of A is paired with row s of B."""
    a, b = np.atleast_2d(correct_a).astype(bool), np.atleast_2d(correct_b).astype(bool)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"expected (seeds, images) arrays, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"different numbers of test images: {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"different numbers of seeds: A has {a.shape[0]}, B has {b.shape[0]}; "
            "pass only the seeds both have, row s of each being the same seed"
        )
    n, n_images = a.shape
    if n == 0 or n_images == 0:
        raise ValueError(f"nothing to compare: {n} seeds of {n_images} test images")
    x = a.astype(np.int8) - b.astype(np.int8)  # (seeds, images), values -1, 0, 1
    d = x.mean(1)  # per-seed accuracy difference
    diff, alpha = float(d.mean()), 1 - confidence
    if n == 1:
        se = float(x[0].std(ddof=1) / math.sqrt(n_images)) if n_images > 1 else 0.0
        half, df, p, method = norm.ppf(1 - alpha / 2) * se, None, None, "one seed: test-set noise only"
    else:
        dbar, w = x.mean(0), x.var(0, ddof=1)
        v_common = max(0.0, float(dbar.var(ddof=1)) - float(w.mean()) / n) if n_images > 1 else 0.0
        se = math.sqrt(float(d.var(ddof=1)) / n + v_common / n_images)
        df = n - 1
        half = float(student_t.ppf(1 - alpha / 2, df)) * se
        if se > 0:
            p = float(2 * student_t.sf(abs(diff) / se, df))
        else:  # every seed and image agrees on the difference: no noise to test against
            p = 1.0 if diff == 0 else 0.0
        method = f"paired t over {n} seeds + shared test-set variance"
    a_only = tuple(int(k) for k in (x == 1).sum(1))
    b_only = tuple(int(k) for k in (x == -1).sum(1))
    return Comparison(
        n_images=n_images,
        n_seeds=n,
        acc_a=float(a.mean()),
        acc_b=float(b.mean()),
        diff=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        se=se,
        df=df,
        p_value=p,
        seed_level=n > 1,
        per_seed_diff=tuple(float(v) for v in d),
        mcnemar_p=tuple(mcnemar_exact(i, j) for i, j in zip(a_only, b_only)),
        a_only=a_only,
        b_only=b_only,
        confidence=confidence,
        method=method,
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values in input order; None entries stay None and are not counted."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    if any(not 0 <= p <= 1 for p, _ in present):
        raise ValueError(f"p-values must lie in [0, 1]: {list(p_values)}")
    out: list[float | None] = [None] * len(p_values)
    m, running = len(present), 0.0
    for k, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - k) * p))  # monotone: never below an earlier step
        out[i] = running
    return out
