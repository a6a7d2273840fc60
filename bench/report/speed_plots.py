"""Figures of `bench speed`'s pages, drawn from the tables it writes (kernels.csv, speed.csv), so a page's
figure and its table hold the same numbers: what each choice reaches as a share of the machine's matmul
throughput, what the feature cache saves."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from bench.report.canvas import new_figure, plain
from bench.report.format import cell

PICKED, OTHER = "C0", "0.78"  # the choice a run takes, the others
ROW_IN = 0.22  # inches per bar


def _rows(table: pd.DataFrame, gains: dict | None = None) -> list[tuple[str, pd.DataFrame]]:
    """[(heading, its rows)] per variant and pass, in the table's order; a heading ends with what `gains`
    ({(variant, pass): text}, the writer's words for the pick's speed over torch's default) says of it."""

    def heading(variant, what) -> str:
        gain = (gains or {}).get((variant, what))
        return f"{variant} · {what}" + (f": {gain}" if gain else "")

    return [(heading(variant, what), g) for (variant, what), g in table.groupby(["variant", "pass"], sort=False)]


def _panel(ax, groups: list[tuple[str, pd.DataFrame]], value: str, note, log: bool = False) -> None:
    """One bar per row of each group under a bold heading, the picked bar in colour, `note(row)` beside each; on
    a log axis where `log` (optimizer steps of 0.3 and 40 ms side by side)."""
    y, ticks, labels = 0, [], []
    top = max(g[value].max() for _, g in groups)
    low = min(g[value].min() for _, g in groups) / 3 if log else 0  # where a bar starts on a log axis
    for heading, g in groups:
        ax.annotate(  # just off the axis, on white where it crosses a grid or reference line
            plain(heading),
            (low, y),
            xytext=(3, 0),
            textcoords="offset points",
            weight="bold",
            va="center",
            ha="left",
            fontsize=8.5,
            gid="heading",
            bbox={"fc": "white", "ec": "none", "pad": 0.3},
        )
        y += 1
        for r in g.itertuples(index=False):
            v = getattr(r, value)
            bar = ax.barh(y, v - low, left=low, height=0.72, color=PICKED if r.picked else OTHER)
            bar.patches[0].set_gid("picked" if r.picked else "other")
            x = v * 1.08 if log else v + top * 0.01
            ax.text(x, y, note(r), va="center", fontsize=7.5, bbox={"fc": "white", "ec": "none", "pad": 0.3})
            ticks.append(y)
            labels.append(plain(r.choice))
            y += 1
        y += 0.4
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(y - 0.6, -0.8)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(low, top * 6)
    else:
        ax.set_xlim(0, top * 1.35)  # room for the notes
    ax.grid(alpha=0.3, axis="x")


def kernels_figure(table: pd.DataFrame, device: str, peak: float, what: str, gains: dict | None = None) -> Figure:
    """kernels.csv as bars: each pass's choices as a percentage of the float32 matmul's GFLOP/s (the dashed line:
    the matmul itself), the optimizer steps in milliseconds; the choice a run picks in colour, and in each heading
    what `gains` ({(variant, pass): text}, speed.gain_words) says of its speed over torch's default."""
    passes = table[table["pass"].isin(["forward", "train step"])]
    steps = table[~table["pass"].isin(["forward", "train step"])]
    groups, step_groups = _rows(passes, gains), _rows(steps, gains)
    n_pass = sum(len(g) + 1.4 for _, g in groups)
    n_step = sum(len(g) + 1.4 for _, g in step_groups)
    fig = new_figure(8.5, 1.8 + ROW_IN * (n_pass + n_step))
    axes = fig.subplots(2, 1, height_ratios=[n_pass, max(n_step, 1)]) if step_groups else [fig.add_subplot()]

    def per_pass(r) -> str:
        return f"{cell(r.img_s)} img/s, {cell(r.gflop_s)} GFLOP/s"

    _panel(axes[0], groups, "pct_of_matmul", per_pass)
    axes[0].axvline(100, color="0.3", lw=1, ls="--", zorder=0)
    axes[0].text(100, -0.8, " matmul", va="top", ha="left", fontsize=7.5, color="0.3")
    axes[0].set_xlabel(f"% of the float32 matmul's throughput ({peak:.0f} GFLOP/s = 100%)")
    if step_groups:
        _panel(axes[1], step_groups, "ms", lambda r: f"{cell(r.ms)} ms", log=True)
        axes[1].set_xlabel("optimizer step over every parameter, ms, log scale (shorter is faster)")
    fig.suptitle(plain(f"Memory format, BatchNorm folding and optimizer step on {device}\n{what}"), fontsize=10)
    fig.legend(
        handles=[Patch(color=PICKED, label="what a run picks"), Patch(color=OTHER, label="the other choices")],
        fontsize=8,
        loc="outside lower center",
        ncols=2,
    )
    return fig


def _ratio(v, col: str) -> str:
    """The table's own ratio for the feature-cache bar: how much less time than the backbone every epoch."""
    x = getattr(v, "uncached_over_cached", float("nan"))
    return f"{cell(x)}x less than the backbone every epoch" if col == "wall_s" and pd.notna(x) else ""


def cache_figure(table: pd.DataFrame, device: str, what: str) -> Figure | None:
    """speed.csv's frozen variants as bars of wall time: the backbone every epoch, the feature cache (the whole
    run), one bare forward pass over the same images; None when no variant has them."""
    cols = {"uncached_s": "backbone every epoch", "wall_s": "feature cache (the whole run)"}
    cols["forward_pass_s"] = "one bare forward pass (not folded)"
    frozen = table.dropna(subset=["uncached_s"]) if "uncached_s" in table else table.iloc[:0]
    if frozen.empty:
        return None
    rows = [
        (f"{v.variant} ({v.resolution} px)", label, getattr(v, col), col == "wall_s", _ratio(v, col))
        for v in frozen.itertuples(index=False)
        for col, label in cols.items()
    ]
    fig = new_figure(8.5, 1.6 + ROW_IN * (len(rows) + 1.4 * len(frozen)))
    ax = fig.add_subplot()
    long = pd.DataFrame(rows, columns=["variant", "choice", "s", "picked", "ratio"])
    _panel(
        ax,
        [(variant, g) for variant, g in long.groupby("variant", sort=False)],
        "s",
        lambda r: f"{cell(r.s)} s" + (f" ({r.ratio})" if r.ratio else ""),
    )
    ax.set_xlabel("seconds, whole variant (shorter is faster)")
    fig.suptitle(plain(f"The feature cache against the backbone every epoch on {device}\n{what}"), fontsize=10)
    return fig
