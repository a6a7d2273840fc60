"""Learning curves: loss and accuracy (%) per epoch, the mean over each variant's seeds with a band from the
lowest to the highest seed, the tested epoch marked, the baseline drawn last in black so no variant hides it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.ticker import MaxNLocator

from bench.report.canvas import LINESTYLES, new_figure, plain, save
from bench.report.runs import StudyRuns

PANELS = (
    ("train_loss", "train loss", 1),
    ("val_loss", "validation loss", 1),
    ("train_acc", "train accuracy (%)", 100),
    ("val_acc", "validation accuracy (%)", 100),
)


@dataclass
class Curve:
    variant: str
    mean: pd.DataFrame  # per epoch, the mean over seeds (accuracies in %)
    low: pd.DataFrame  # the lowest seed per epoch
    high: pd.DataFrame  # the highest
    seeds: int
    tested: list[int]  # the epochs tested (metrics.best_epoch), one per distinct seed choice


def curve_data(study: StudyRuns) -> dict[str, Curve]:
    """Per variant with per-epoch histories (probes have one row per hyper-parameter candidate: none)."""
    curves = {}
    for v in study.variants:
        runs = [r for r in study.done(v) if r.history is not None and "selected" not in r.history]
        if not runs:
            continue
        columns = ["epoch"] + [c for c, _, _ in PANELS]
        frame = pd.concat([r.history.reindex(columns=columns) for r in runs])
        for column, _, scale in PANELS:
            frame[column] = frame[column].astype(float) * scale
        by = frame.groupby("epoch")
        curves[v] = Curve(
            v, by.mean(), by.min(), by.max(), len(runs), sorted({int(r.metrics.best_epoch) for r in runs})
        )
    return curves


def learning_curves(curves: dict[str, Curve], baseline: str | None, what: str, stem: Path, formats: set[str]):
    """Four panels; one line per variant, its seed band, a star on each tested epoch's validation accuracy."""
    fig = new_figure(11, 7.5)
    fig.suptitle(plain(what))
    axes = fig.subplots(2, 2, sharex=True)
    colors = matplotlib.colormaps["tab10"].colors  # ten colours, then the next line style
    order = [v for v in curves if v != baseline] + ([baseline] if baseline in curves else [])
    for k, name in enumerate(order):
        c = curves[name]
        base = name == baseline
        style = dict(
            color="black" if base else colors[k % len(colors)],
            linestyle="-" if base else LINESTYLES[(k // len(colors)) % len(LINESTYLES)],
            linewidth=2.4 if base else 1.3,
            marker="o" if len(c.mean) < 15 else None,
            markersize=3,
            zorder=3 if base else 2,
        )
        tag = f"{name} (baseline)" if base and name != "baseline" else name
        for ax, (column, _, _) in zip(axes.flat, PANELS):
            ax.plot(
                c.mean.index, c.mean[column], label=plain(f"{tag}, {c.seeds} seeds" if c.seeds > 1 else tag), **style
            )
            if c.seeds > 1:
                ax.fill_between(c.mean.index, c.low[column], c.high[column], color=style["color"], alpha=0.15, lw=0)
        tested = [e for e in c.tested if e in c.mean.index]
        axes[1][1].plot(
            tested, c.mean.loc[tested, "val_acc"], "*", ms=12, color=style["color"], mec="white", zorder=4, gid="tested"
        )
    for ax, (_, label, _) in zip(axes.flat, PANELS):
        ax.set(title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(curves)), fontsize=8)
    save(fig, stem, formats)
    return fig


def curves_caption(curves: dict[str, Curve], baseline: str | None, what: str) -> str:
    several = any(c.seeds > 1 for c in curves.values())
    return (
        "Learning curves: loss and accuracy (%) per epoch, the mean over each variant's seeds"
        + (", the band from the lowest to the highest seed" if several else "")
        + "; a star marks the epoch that was tested (chosen on validation accuracy) on the mean validation curve"
        + (
            f"; the baseline{'' if baseline == 'baseline' else f' ({baseline})'} in thick black, drawn over the rest"
            if baseline in curves
            else ""
        )
        + f". Weights and data: {what}."
    )
