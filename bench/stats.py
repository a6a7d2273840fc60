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
So SE^2 = s_d^2 / n + V_common / N, but never below var_i dbar_i / N: the variance the test images
alone imply for these very networks (with one seed, McNemar's paired-binomial variance), which
s_d^2, an estimate on n - 1 degrees of freedom, can undershoot by luck - down to 0 when every seed
happens to gain the same number of images. The interval is mean +- t(n-1, 1-alpha/2) * SE and the
p-value the two-sided t test on n-1 degrees of freedom (conservative when the image terms dominate).

With one seed of A no seed-level test exists and nothing is claimed. Against a baseline with several
seeds, the difference is A's accuracy minus the mean of the baseline's seeds, and its interval adds
the baseline's seed spread twice over: once for the mean of its n seeds and once for A's single
seed, assumed to vary as much (the t interval for one new observation against a sample mean, on
n-1 degrees of freedom). With one seed on both sides the interval covers test-set noise only.
Per-seed McNemar exact p-values and discordant counts are shown but never decide.

A table compares many variants, so some "significant" rows would appear by luck. Holm's step-down
adjustment (Holm 1979) controls the family-wise error rate - the chance of even one false claim in
the table - under any dependence between the tests, which matters because every row shares one
baseline. It is uniformly more powerful than Bonferroni, which makes the same promise; Benjamini-
Hochberg only bounds the expected share of false claims, weaker than what "significant" implies.

Rejected: a random-effects meta-analysis over seeds (DerSimonian-Laird, each seed weighted by its
own paired variance, normal reference) gives intervals 5-7x narrower at 2 seeds, but its
between-seed variance from 2-3 seeds is so noisy that with 1 point of seed noise its family-wise
error is 0.4-0.9 (tests/test_stats.py measures it); Hartung-Knapp's correction brings back the t
interval's width.

References: T. G. Dietterich (1998), "Approximate statistical tests for comparing supervised
classification learning algorithms", Neural Computation 10(7). X. Bouthillier et al. (2021),
"Accounting for variance in machine learning benchmarks", MLSys. S. Holm (1979), "A simple
sequentially rejective multiple test procedure", Scandinavian Journal of Statistics 6(2).
R. DerSimonian, N. Laird (1986), "Meta-analysis in clinical trials", Controlled Clinical Trials 7(3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm
from scipy.stats import t as student_t

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    n_images: int
    n_seeds: int  # seeds of A: paired with B's row by row, or A's one seed against B's seed mean
    acc_a: float  # mean over the compared seeds
    acc_b: float
    diff: float  # acc_a - acc_b
    ci_low: float
    ci_high: float
    se: float
    df: int | None  # t degrees of freedom; None for one seed on both sides (normal interval)
    p_value: float | None  # two-sided paired t; None with one seed of A
    seed_level: bool  # False with one seed of A: nothing is claimed
    per_seed_diff: tuple[float, ...]  # per row of B (A's seed s, or A's one seed, against B's seed s)
    mcnemar_p: tuple[float, ...]  # per row, for display only
    a_only: tuple[int, ...]  # per row: images A gets right and B wrong
    b_only: tuple[int, ...]
    confidence: float
    method: str
    n_seeds_b: int = 0  # seeds of B; n_seeds when paired

    def significant(self, alpha: float = 0.05, p_adjusted: float | None = None) -> bool:
        """True only for a seed-level test whose (adjusted, if given) p-value is below alpha."""
        p = self.p_value if p_adjusted is None else p_adjusted
        return self.seed_level and p is not None and p < alpha

    def verdict(self, a: str, b: str, alpha: float = 0.05, p_adjusted: float | None = None) -> str:
        """One line a reader can quote."""
        pts = f"{100 * self.diff:+.2f} points"
        ci = f"{100 * self.confidence:.0f}% CI {100 * self.ci_low:+.2f} to {100 * self.ci_high:+.2f}"
        if not self.seed_level:
            if self.n_seeds_b > 1:
                where = (
                    f"one seed of {a} against the mean of {b}'s {self.n_seeds_b} seeds ({ci}, with {b}'s seed "
                    f"spread, assuming {a}'s seeds vary as much)"
                )
            else:
                where = f"a single seed ({ci}, covering test-set noise only)"
            return (
                f"{a} vs {b}: {pts} on {where}; one seed cannot separate the recipes from training noise, "
                "so nothing is claimed"
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


def difference_and_se(x: np.ndarray, one_seed_of_a: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean difference and its standard error (module docstring) for x of shape (..., seeds, images),
    values -1/0/1; vectorised over leading axes. one_seed_of_a: each row is A's one seed against B's seed s."""
    n, n_images = x.shape[-2:]
    d = x.mean(-1)
    dbar = x.mean(-2)
    pooled = dbar.var(-1, ddof=1) if n_images > 1 else np.zeros(x.shape[:-2])
    floor = pooled / n_images  # what the test images alone imply for these networks
    if n == 1:
        return d[..., 0], np.sqrt(floor)
    v_common = np.maximum(0.0, pooled - x.var(-2, ddof=1).mean(-1) / n) if n_images > 1 else 0.0
    # A's one seed varies as each of B's seeds does: its variance s_d^2 comes on top of s_d^2 / n for B's mean
    seed_share = d.var(-1, ddof=1) * ((1 + 1 / n) if one_seed_of_a else 1 / n)
    return d.mean(-1), np.sqrt(np.maximum(seed_share + v_common / n_images, floor))


def _as_runs(correct: np.ndarray, name: str) -> np.ndarray:
    out = np.atleast_2d(np.asarray(correct)).astype(bool)
    if out.ndim != 2:
        raise ValueError(f"expected {name} as (seeds, images) booleans, got shape {out.shape}")
    return out


def compare(
    correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = CONFIDENCE, against_mean: bool = False
) -> Comparison:
    """correct_a, correct_b: (seeds, images) booleans; row s of A is paired with row s of B.
    against_mean: A has one seed, B several; A's seed is set against the mean of B's (no claim)."""
    a, b = _as_runs(correct_a, "A"), _as_runs(correct_b, "B")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"different numbers of test images: {a.shape[1]} and {b.shape[1]}")
    if against_mean and (a.shape[0] != 1 or b.shape[0] < 2):
        raise ValueError(
            f"against the seed mean needs one seed of A and several of B, got {a.shape[0]} and {b.shape[0]}"
        )
    if not against_mean and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"different numbers of seeds: A has {a.shape[0]}, B has {b.shape[0]}; "
            "pass only the seeds both have, row s of each being the same seed"
        )
    n, n_images = b.shape
    if n == 0 or n_images == 0:
        raise ValueError(f"nothing to compare: {n} seeds of {n_images} test images")
    x = a.astype(np.int8) - b.astype(np.int8)  # (rows, images), values -1, 0, 1; A's one row broadcast
    diff, se = (float(v) for v in difference_and_se(x, one_seed_of_a=against_mean))
    alpha = 1 - confidence
    if n == 1:
        half, df, p, method = norm.ppf(1 - alpha / 2) * se, None, None, "one seed: test-set noise only"
    else:
        df = n - 1
        half = float(student_t.ppf(1 - alpha / 2, df)) * se
        if against_mean:
            p, method = None, f"one seed against the mean of {n} baseline seeds, with their spread"
        else:
            # se is 0 only when every image has the same difference in every seed: the images are the test
            p = float(2 * student_t.sf(abs(diff) / se, df)) if se > 0 else mcnemar_exact(*_pooled_counts(x))
            method = f"paired t over {n} seeds + shared test-set variance"
    a_only = tuple(int(k) for k in (x == 1).sum(1))
    b_only = tuple(int(k) for k in (x == -1).sum(1))
    return Comparison(
        n_images=n_images,
        n_seeds=a.shape[0],
        acc_a=float(a.mean()),
        acc_b=float(b.mean()),
        diff=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        se=se,
        df=df,
        p_value=p,
        seed_level=n > 1 and not against_mean,
        per_seed_diff=tuple(float(v) for v in x.mean(1)),
        mcnemar_p=tuple(mcnemar_exact(i, j) for i, j in zip(a_only, b_only)),
        a_only=a_only,
        b_only=b_only,
        confidence=confidence,
        method=method,
        n_seeds_b=n,
    )


def _pooled_counts(x: np.ndarray) -> tuple[int, int]:
    """Images whose difference, averaged over seeds, favours A and B: the sign test when nothing varies."""
    dbar = x.mean(0)
    return int((dbar > 0).sum()), int((dbar < 0).sum())


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
