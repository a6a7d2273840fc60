"""Figures for `bench report`, each saved as PNG (for the markdown page) and PDF (for LaTeX):
the data each figure shows (`make_figures`), then the drawing.

Figures are drawn on their own Agg canvas (no pyplot), so nothing depends on a display or
leaks global state between reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.canvas import LINESTYLES, new_figure, plain, save
from bench.report.curves import curve_data, curves_caption, learning_curves
from bench.report.describe import is_random_init, made_with
from bench.report.format import TEST_ACC, VAL_ACC, mean_of, mean_std, value
from bench.report.runs import StudyRuns
from bench.util import flatten, fmt_value


def make_figures(
    study: StudyRuns, variant: str, out: Path, formats: set[str], baseline: str | None = None
) -> dict[str, str]:
    """Write the confusion matrix, learning curves, accuracy against compute and data-size figures; returns
    {figure name: caption}. Every title and caption says what weights and data made it."""
    made = {}
    runs = study.done(variant)
    matrix = np.sum([r.metrics.test.confusion_matrix for r in runs], axis=0)
    classes = [c.class_ for c in runs[0].metrics.test.per_class]
    what = made_with(study, [variant])
    confusion(matrix, classes, f"{variant}: test confusion matrix\n{what}", out / "confusion", formats)
    made["confusion"] = (
        f"Confusion matrix of '{variant}' on the test set, normalised per true class "
        f"(rows sum to 1; {len(runs)} seed(s) pooled). Weights and data: {what}."
    )

    if curves := curve_data(study):
        what = made_with(study, list(curves))
        learning_curves(curves, baseline, what, out / "learning_curves", formats)
        made["learning_curves"] = curves_caption(curves, baseline, what)
    points = compute_points(study)
    if not points.empty:
        what = made_with(study, list(points["variant"]))
        accuracy_vs_compute(points, what, out / "accuracy_vs_time", formats)
        left_out = [v for v in study.variants if study.done(v) and v not in set(points["variant"])]
        made["accuracy_vs_time"] = (
            "Test accuracy against the estimated compute of a run (bench.cost: tera multiply-adds, a frozen "
            "backbone's pass over the images charged to every run that uses it, cached or not, so cache hits do not "
            "make a recipe look cheap); grey rings mark the recipes that no cheaper recipe beats on mean validation "
            "accuracy, and a grey line joins them where there are several: chosen on validation, never on test. "
            f"Weights and data: {what}."
            + (f" Left out (no compute estimate from their stored config): {', '.join(left_out)}." if left_out else "")
        )
    sizes = data_size_points(study)
    if not sizes.empty:
        made["data_size"] = data_size_figure(sizes, made_with(study), out / "data_size", formats)
    return made


def compute_points(study: StudyRuns) -> pd.DataFrame:
    """(variant, tera multiply-adds, test acc mean and std, val acc, pretrained) per variant whose compute bench.cost
    can estimate from its stored config."""
    from bench.config import RunConfig
    from bench.cost import estimate_tflops

    points = []
    for v in study.variants:
        if not (runs := study.done(v)):
            continue
        try:
            tmacs = float(np.mean([estimate_tflops(RunConfig.model_validate(r.config or {})) for r in runs]))
        except (ValueError, KeyError, TypeError, RuntimeError):  # an old or foreign record: the caption names it
            continue
        acc_mean, acc_std = mean_std([value(r, TEST_ACC) for r in runs])
        points.append(
            {
                "variant": v,
                "tmacs": tmacs,
                "acc": acc_mean,
                "acc_std": acc_std,
                "val": mean_of(runs, VAL_ACC),
                "pretrained": not is_random_init(study, v),
            }
        )
    return pd.DataFrame(points)


SIZE_KEYS = ("data.limit_train", "data.train_fraction")


def data_size_points(study: StudyRuns) -> pd.DataFrame:
    """(recipe, n_train, seed, acc) of every finished run whose recipe was trained on at least two data sizes;
    a recipe is everything in the run's configuration but the data-size keys and the seed, named by the
    settings in which the recipes differ."""
    rows = []
    for v in study.variants:
        for r in study.done(v):
            cfg = {k: x for k, x in flatten(r.config or {}).items() if k not in (*SIZE_KEYS, "seed")}
            rows.append(
                {
                    "cfg": cfg,
                    "key": repr(sorted(cfg.items())),
                    "n_train": r.metrics.n_train,
                    "seed": r.seed,
                    "acc": value(r, TEST_ACC),
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[frame.groupby("key")["n_train"].transform("nunique") >= 2]
    if frame.empty:
        return frame
    recipes = frame.drop_duplicates("key").cfg.tolist()
    varying = [k for k in dict.fromkeys(k for c in recipes for k in c) if len({repr(c.get(k)) for c in recipes}) > 1]

    def name(cfg: dict) -> str:
        return ", ".join(f"{k.split('.')[-1]}={fmt_value(cfg.get(k))}" for k in varying) or "the study's recipe"

    frame["recipe"] = frame.cfg.map(name)
    return frame[["recipe", "n_train", "seed", "acc"]]


def data_size_figure(points: pd.DataFrame, what: str, stem: Path, formats: set[str]) -> str:
    """Test accuracy against training images, a line per recipe (mean over seeds), a band from the lowest to
    the highest seed; returns the caption."""
    fig = new_figure(8, 5.5)
    ax = fig.add_subplot()
    for i, (recipe, runs) in enumerate(points.groupby("recipe", sort=False)):
        by = runs.groupby("n_train")["acc"]
        mean, low, high = by.mean(), by.min(), by.max()
        ax.plot(
            mean.index, mean.values, marker="o", color=f"C{i % 10}", ls=LINESTYLES[i // 10 % 4], label=plain(recipe)
        )
        ax.fill_between(mean.index, low.values, high.values, color=f"C{i % 10}", alpha=0.2, lw=0)
    ax.set_xscale("log")
    title = plain(f"would more data help?\n{what}")
    ax.set(xlabel="training images (log scale)", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    save(fig, stem, formats)
    seeds = points.groupby(["recipe", "n_train"]).size()
    return (
        "Test accuracy against the number of training images (stratified subsets, each inside the next; the same "
        "validation and test images throughout): one line per recipe, the mean over its seeds, the band from the "
        f"lowest to the highest seed ({seeds.min()}-{seeds.max()} seeds a point). Weights and data: {what}."
    )


def confusion(matrix: np.ndarray, classes: list[str], title: str, stem: Path, formats: set[str]) -> list[Path]:
    """Confusion matrix normalised per true class: row i shows where class i's images went."""
    counts = np.asarray(matrix, dtype=float)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.5, 0.5 * len(classes) + 2)
    fig = new_figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set(
        xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=plain(title)
    )
    ax.set_xticklabels([plain(c) for c in classes], rotation=45, ha="right")
    ax.set_yticklabels([plain(c) for c in classes])
    if len(classes) <= 15:  # beyond that the numbers no longer fit in their cells
        for (i, j), v in np.ndenumerate(rows):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
    return save(fig, stem, formats)


def cheapest_on_validation(points: pd.DataFrame) -> list[str]:
    """The variants no cheaper one beats on mean validation accuracy, cheapest first (the test set plays no part)."""
    points = points.sort_values(["tmacs", "val"], ascending=[True, False])
    return list(points[points["val"] > points["val"].cummax().shift(fill_value=-np.inf)]["variant"])


def accuracy_vs_compute(points: pd.DataFrame, what: str, stem: Path, formats: set[str]) -> list[Path]:
    """Test accuracy against estimated compute per variant; the line joins the recipes that no cheaper
    recipe beats on validation accuracy (which recipe buys accuracy cheapest, chosen without the test set).

    points: variant, tmacs, acc, acc_std (percent), val (percent), pretrained
    """
    points = points.sort_values(["tmacs", "val"], ascending=[True, False])  # the order the step line is drawn in
    fig = new_figure(8, 5.5)
    ax = fig.add_subplot()
    for pretrained, marker in ((True, "o"), (False, "s")):
        sel = points[points["pretrained"] == pretrained]
        if len(sel):
            ax.errorbar(
                sel["tmacs"],
                sel["acc"],
                yerr=sel["acc_std"].fillna(0),
                fmt=marker,
                capsize=3,
                mfc="C0" if pretrained else "none",
                color="C0" if pretrained else "C3",
                label="pretrained" if pretrained else "random init",
            )
    frontier = points[points["variant"].isin(cheapest_on_validation(points))]
    ax.step(frontier["tmacs"], frontier["acc"], where="post", color="0.5", linewidth=1, zorder=0)
    ax.scatter(  # a ring, so that a frontier of one recipe shows too
        frontier["tmacs"],
        frontier["acc"],
        s=160,
        facecolors="none",
        edgecolors="0.5",
        zorder=0,
        label="no cheaper recipe is better on validation",
    )
    for (_, p), y in zip(points.iterrows(), label_heights(points["tmacs"], points["acc"])):
        ax.annotate(plain(p["variant"]), (p["tmacs"], y), xytext=(6, 0), textcoords="offset points", fontsize=7,
                    va="center")  # fmt: skip
    positive = points["tmacs"][points["tmacs"] > 0]
    if len(positive) and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
    ax.set(
        xlabel="estimated compute per run (tera multiply-adds)",
        ylabel="test accuracy (%)",
        title=plain(f"test accuracy against compute (mean ± std over seeds)\n{what}"),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save(fig, stem, formats)


def label_heights(x: pd.Series, y: pd.Series, gap: float = 0.035) -> list[float]:
    """Where each point's label goes: at its own height, pushed up where labels of points at nearly the same x
    would overlap (at least `gap` of the y range apart), in the points' order."""
    span = (y.max() - y.min()) or 1.0
    heights = dict(zip(y.index, y))
    placed: list[tuple[float, float]] = []
    for i in y.sort_values().index:
        h = heights[i]
        for px, ph in placed:
            if abs(px - x[i]) <= 0.02 * ((x.max() - x.min()) or 1.0) and abs(h - ph) < gap * span:
                h = ph + gap * span
        placed.append((x[i], h))
        heights[i] = h
    return [heights[i] for i in y.index]


def layers(arch: str) -> int | None:
    """resnet50 -> 50; None when the name carries no depth."""
    digits = re.findall(r"\d+", arch.rpartition(":")[2])
    return int(digits[-1]) if digits else None


def depth_figure(rows: list[dict], what: str, data: str, stem: Path, formats: set[str]) -> str | None:
    """Test accuracy on the study's data per depth, one point per depth; returns the caption. Pretrained
    backbones: against the paper's ImageNet top-1 error for that depth. All random init: against depth,
    since no ImageNet weights were loaded and their error would say nothing about these backbones."""
    # ImageNet weights of the libraries, beside the paper's ImageNet error; other weights (a file, bench's own
    # CIFAR-10 backbone) have no ImageNet error that describes them
    pretrained = [
        r
        for r in rows
        if r["weights"].partition(":")[0] in ("torchvision", "timm")
        and str(r.get("paper_table", "")).startswith("imagenet")
        and r["paper_top1_error"] is not None
    ]
    random = [r for r in rows if r["weights"] == "none"]
    against_error = bool(pretrained)
    shown = pretrained if against_error else [r for r in random if layers(r["arch"])]
    if not shown:  # other weights only (a file): no axis this figure can honestly put them on
        return None
    fig = new_figure(7, 5)
    ax = fig.add_subplot()
    kinds = list(dict.fromkeys(r.get("head", "mlp") for r in shown))
    named = set()
    for i, kind in enumerate(kinds):
        series = [r for r in shown if r.get("head", "mlp") == kind]
        xs = [r["paper_top1_error"] if against_error else layers(r["arch"]) for r in series]
        accs = [np.asarray(r["acc"]) for r in series]
        order = np.argsort(xs)
        x, mean = np.asarray(xs)[order], np.array([accs[j].mean() for j in order])
        err = [accs[j].std(ddof=1) if len(accs[j]) > 1 else 0 for j in order]
        head = f"head: {kind}" + (" (the lab's)" if kind == "mlp" else "")
        ax.errorbar(x, mean, yerr=err, fmt="o-", capsize=3, color=f"C{i % 10}", label=plain(head))
        for r, xi, yi in zip([series[j] for j in order], x, mean):
            if r["arch"] not in named:  # each depth named once
                named.add(r["arch"])
                ax.annotate(plain(r["arch"]), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8)
    if len(kinds) > 1:
        ax.legend(fontsize=8, loc="best")
    if against_error:
        ax.invert_xaxis()  # better ImageNet models to the right
        xlabel, title = "He et al. (2016) ImageNet top-1 error, 10-crop (%)", "ImageNet-pretrained depths, transferred"
    else:
        xlabel, title = "layers", "random-init backbones by depth, no ImageNet weights"
    ax.set(
        xlabel=xlabel,
        ylabel=plain(f"{data} test accuracy (%)"),
        title=plain(f"{title} (mean ± std over seeds)\n{what}"),
    )
    ax.grid(alpha=0.3)
    save(fig, stem, formats)
    series = (
        f" One series per head (model.head.kind): {', '.join(kinds)}, the lab's head being mlp."
        if len(kinds) > 1
        else ""
    )
    if not against_error:
        archs = ", ".join(dict.fromkeys(plain(r["arch"]) for r in random))
        return (
            f"{data} test accuracy of each depth (mean ± std over seeds) against its number of layers. Every "
            f"backbone here is RANDOM INIT ({archs}): no ImageNet weights "
            "were loaded, so this is not transfer, and the paper's ImageNet errors (depth table) do not describe "
            f"these backbones.{series} Weights and data: {what}."
        )
    left_out = list(dict.fromkeys(plain(r["arch"]) for r in random))
    return (
        f"{data} test accuracy of each pretrained depth (mean ± std over seeds) against the ImageNet top-1 error He "
        "et al. (2016) report for it (Tables 2 and 3); better ImageNet models to the right."
        + (f" Left out, being random init: {', '.join(left_out)}." if left_out else "")
        + f"{series} Weights and data: {what}."
    )
