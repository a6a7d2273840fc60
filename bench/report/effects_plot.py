"""The ablation effects as a forest plot: Δ test accuracy with its interval per variant against the baseline,
drawn from `tables.effects` (the one effects computation; nothing is recomputed here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench import stats
from bench.report.canvas import new_figure, plain, save
from bench.report.describe import label, made_with
from bench.report.runs import StudyRuns
from bench.report.tables import Effect, effects


@dataclass(frozen=True)
class Point:
    variant: str  # the row's label, as in the tables
    diff: float  # points
    low: float
    high: float
    significant: bool  # Holm-adjusted p < 0.05, seed level
    seed_level: bool  # False: one seed, the interval covers test-set noise (and the baseline's spread) only


def forest_points(found: list[Effect], study: StudyRuns) -> list[Point]:
    """One point per compared variant, in the table's order (variants without a comparison are left out)."""
    return [
        Point(
            label(study, e.variant),
            100 * c.diff,
            100 * c.ci_low,
            100 * c.ci_high,
            c.significant(p_adjusted=e.p_holm),
            c.seed_level,
        )
        for e in found
        if (c := e.comparison) is not None
    ]


def effects_figure(
    study: StudyRuns, baseline: str, stem: Path, formats: set[str], found: list[Effect] | None = None
) -> str | None:
    """Draw the forest plot of `found` (the effects table's, else computed here); its caption, or None when no
    variant could be compared with the baseline."""
    found = effects(study, baseline) if found is None else found
    points = forest_points(found, study)
    if not points:
        return None
    compared = [e.variant for e in found if e.comparison is not None]
    what = made_with(study, [baseline, *compared])
    ci = f"{100 * stats.CONFIDENCE:.0f}%"
    save(forest(points, baseline, what), stem, formats)
    one_seed = [p.variant for p in points if not p.seed_level]
    return (
        f"Change in test accuracy against '{baseline}' per variant (points), with its {ci} interval, the numbers of "
        "the ablation-effects table. Red: significant after Holm's adjustment (p < 0.05, seed level); blue: not "
        "significant; filled: a seed-level comparison"
        + (f"; hollow: one seed ({', '.join(one_seed)}), never marked significant" if one_seed else "")
        + f". The dashed line is no change. Weights and data: {what}."
    )


def forest(points: list[Point], baseline: str, what: str) -> Figure:
    """One row per point, the first at the top: the interval as a bar, Δ as a dot (red: significant after Holm;
    hollow: one seed, not a seed-level comparison), a dashed line at no change."""
    fig = new_figure(8, 1.6 + 0.38 * len(points))
    ax = fig.add_subplot()
    ys = list(range(len(points)))[::-1]
    for y, p in zip(ys, points):
        color = "C3" if p.significant else "C0"
        ax.errorbar(p.diff, y, xerr=[[p.diff - p.low], [p.high - p.diff]], fmt="none", ecolor=color, capsize=3)
        ax.plot(p.diff, y, "o", color=color, mfc=color if p.seed_level else "white", ms=7, mew=1.5, gid="delta")
    ax.axvline(0, color="0.3", lw=1, ls="--", zorder=0)
    ax.set_yticks(ys, [plain(p.variant) for p in points])
    ax.set(
        xlabel=plain(f"Δ test accuracy against '{baseline}' (points), {100 * stats.CONFIDENCE:.0f}% CI"),
        title=plain(f"ablation effects against '{baseline}'\n{what}"),
        ylim=(-0.7, len(points) - 0.3),
    )
    ax.grid(alpha=0.3, axis="x")
    kinds = [
        ("C3", "C3", "significant after Holm", any(p.significant for p in points)),
        ("C0", "C0", "not significant", any(p.seed_level and not p.significant for p in points)),
        ("C0", "white", "one seed (not seed level)", any(not p.seed_level for p in points)),
    ]
    handles = [Line2D([], [], ls="", marker="o", color=c, mfc=f, ms=7, mew=1.5, label=t) for c, f, t, on in kinds if on]
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig
