"""He et al.'s CIFAR-10 experiment (section 4.2) reproduced: Table 6 beside the study's CIFAR networks, every
way their recipe differs from the paper's, and training curves against iterations in the style of Figure 6.

Figure 6 plots the test error during training; bench looks at the test set once, at the end, so the curves
show the validation error (5,000 held-out training images) and say so.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from bench.report.canvas import new_figure, save
from bench.report.describe import data_title, differs_from, references
from bench.report.format import Table, fmt_mean_std
from bench.report.runs import StudyRuns

ARCH_RE = re.compile(r"^cifar_(resnet|plain)(\d+)$")  # bench.config.CIFAR_ARCHS, without importing torch


def cifar_arch(study: StudyRuns, variant: str) -> tuple[str, int] | None:
    """('resnet' | 'plain', depth) for a variant that trains one of He et al.'s CIFAR networks."""
    m = ARCH_RE.match(((study.config(variant) or {}).get("model") or {}).get("arch", ""))
    return (m.group(1), int(m.group(2))) if m else None


def paper_recipe(depth: int) -> dict:
    """Section 4.2's recipe as bench settings (ResNet-110 adds its warm-up)."""
    cifar = references()["he2016"]["cifar_recipe"]
    return {**cifar["settings"], **(cifar["resnet110"] if depth == 110 else {})}


def _recipe_for(config: dict | None, depth: int) -> dict:
    """The paper's recipe, without its milestones where another schedule is named (those follow from it)."""
    recipe = paper_recipe(depth)
    if ((config or {}).get("train") or {}).get("schedule", "multistep") != "multistep":
        recipe.pop("train.milestones")
    return recipe


def table6_row(depth: int) -> dict | None:
    rows = references()["he2016"]["tables"]["cifar10"]["rows"]
    return next((r for r in rows if r["layers"] == depth), None)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def table6_experiment(config: dict | None, classes: list[str]) -> bool:
    """Whether a run is section 4.2's experiment: a CIFAR network trained whole from random weights on CIFAR-10
    (the official set, or an image folder whose classes are CIFAR-10's). The demo's digits, or a network
    pretrained or partly frozen, have no Table 6 row to stand beside, whatever the network."""
    config = config or {}
    data, model = config.get("data") or {}, config.get("model") or {}
    source = data.get("source", "cifar10")
    on_cifar10 = source == "cifar10" or (source == "folder" and classes == CIFAR10_CLASSES)
    return on_cifar10 and model.get("weights", "none") == "none" and model.get("freeze") == "none"


def reproduction_rows(study: StudyRuns) -> list[dict]:
    """One row per finished variant of section 4.2's experiment (table6_experiment): measured test error beside
    Table 6's."""
    rows = []
    for v in study.variants:
        arch, runs = cifar_arch(study, v), study.done(v)
        if not arch or not runs:
            continue
        if not table6_experiment(study.config(v), [c.class_ for c in runs[0].metrics.test.per_class]):
            continue
        kind, depth = arch
        errors = [100 * (1 - r.metrics.test.accuracy) for r in runs]
        ref = table6_row(depth) if kind == "resnet" else None
        paper_err = None if ref is None else ref.get("error_mean", ref["error"])
        last = runs[0].history
        rows.append(
            {
                "variant": v,
                "network": f"{'ResNet' if kind == 'resnet' else 'plain'}-{depth}",
                "kind": kind,
                "depth": depth,
                "seeds": len(runs),
                "errors": errors,
                "paper": ref,
                "paper_error": paper_err,
                "delta": None if paper_err is None else float(np.mean(errors)) - paper_err,
                "iterations": int(last["steps"].iloc[-1]) if last is not None and "steps" in last else None,
                "n_train": runs[0].metrics.n_train,
                "differs": differs_from(study.config(v), _recipe_for(study.config(v), depth), PAPER_WORDS)
                or "the paper's recipe",
                "data": data_title(runs[0]),
            }
        )
    return rows


# How a setting that differs from the paper's is said (the rest: key=value).
PAPER_WORDS = {
    "data.source": {"folder": "another copy of CIFAR-10 (data.source=folder)", "digits": "sklearn digits"},
}


def reproduction_table(study: StudyRuns) -> Table | None:
    rows = reproduction_rows(study)
    if not rows:
        return None
    cifar = references()["he2016"]["tables"]["cifar10"]
    body = []
    for r in rows:
        ref = r["paper"]
        if ref is None:
            paper = "(no Table 6 row: plain nets are in Figure 6 only)"
        elif "error_mean" in ref:
            paper = f"{ref['error_mean']:.2f} ± {ref['error_std']:.2f} (mean of {ref['runs']}; best {ref['error']:.2f})"
        else:
            paper = f"{ref['error']:.2f}"
        body.append(
            [
                r["variant"],
                r["network"],
                str(r["seeds"]),
                fmt_mean_std(r["errors"], 2),
                paper,
                "" if r["delta"] is None else f"{r['delta']:+.2f}",
                f"{r['iterations']:,}" if r["iterations"] else "?",
                f"{r['n_train']:,}" if r["n_train"] else "?",
                r["differs"],
            ]
        )
    return Table(
        "reproduction",
        f"He et al. (CVPR 2016) Table 6 (p. {cifar['page']}) reproduced: CIFAR-10 test error (%) of the networks "
        "trained from scratch here, beside the paper's; the last column lists every setting that differs from the "
        "paper's recipe (section 4.2; 64,000 iterations on 45,000 training images)",
        [
            "variant",
            "network",
            "seeds",
            "test error % (mean ± sd)",
            "He et al. error %",
            "Δ error (points)",
            "iterations",
            "train images",
            "differs from the paper's recipe",
        ],
        body,
        align="lllrlrrrl",
        wrap={4: "2.6cm", 8: "6cm"},
    )


def curve_groups(study: StudyRuns) -> dict[str, list[dict]]:
    """Reproduction rows grouped by training length and size (curves on one x-axis must share them)."""
    groups: dict[str, list[dict]] = {}
    for r in reproduction_rows(study):
        groups.setdefault(f"{r['n_train']}-{r['iterations']}", []).append(r)
    return groups


def figure6(study: StudyRuns, out: Path, formats: set[str]) -> dict[str, str]:
    """One figure per group of CIFAR networks trained alike: {figure name: caption}."""
    made = {}
    groups = sorted(curve_groups(study).values(), key=lambda g: -(g[0]["iterations"] or 0))
    for i, rows in enumerate(groups):
        name = "paper_curves" if i == 0 else f"paper_curves_{i + 1}"
        _draw(study, rows, out / name, formats)
        r0 = rows[0]
        made[name] = (
            f"Training error (dashed) and validation error (solid) against iterations, in the style of He et al.'s "
            f"Figure 6 (plain nets left, ResNets right; the paper plots test error, bench keeps the test set for the "
            f"end): {', '.join(r['network'] for r in rows)} trained from scratch (random init) on "
            f"{r0['n_train']:,} training images of {r0['data']}, {r0['iterations']:,} iterations (the paper: 64,000). "
            "Training error is measured on the augmented batches as they were trained. Dotted lines mark Table 6's "
            "final test error for the same ResNet depth (after 64,000 iterations)."
        )
    return made


def _draw(study: StudyRuns, rows: list[dict], stem: Path, formats: set[str]) -> None:
    kinds = [k for k in ("plain", "resnet") if any(r["kind"] == k for r in rows)]
    fig = new_figure(5.5 * len(kinds) + 0.5, 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0])
    depths = sorted({r["depth"] for r in rows})
    colors = dict(zip(depths, matplotlib.colormaps["tab10"].colors))
    top = 0.0
    for ax, kind in zip(axes, kinds):
        for r in (r for r in rows if r["kind"] == kind):
            h = (
                pd.concat([run.history for run in study.done(r["variant"])])
                .groupby("steps", as_index=False)
                .mean(numeric_only=True)
            )
            train, val = 100 * (1 - h["train_acc"]), 100 * (1 - h["val_acc"])
            top = max(top, float(train.max()), float(val.max()))
            style = dict(color=colors[r["depth"]], marker="o" if len(h) < 15 else None, markersize=3)
            ax.plot(h["steps"], train, linestyle="--", linewidth=1, **style)
            ax.plot(h["steps"], val, linestyle="-", linewidth=2, label=r["network"], **style)
            if r["paper"] is not None:
                ax.axhline(r["paper_error"], color=colors[r["depth"]], linestyle=":", linewidth=1)
        ax.set(title="plain networks" if kind == "plain" else "ResNets", xlabel="iterations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    from matplotlib.lines import Line2D

    styles = [
        Line2D([], [], color="grey", linestyle="--", linewidth=1, label="training error"),
        Line2D([], [], color="grey", linestyle="-", linewidth=2, label="validation error"),
        Line2D([], [], color="grey", linestyle=":", linewidth=1, label="He et al. Table 6 (test)"),
    ]
    fig.legend(handles=styles, loc="outside lower center", ncols=3, fontsize=8)
    axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(0, min(100, top * 1.05) or 100)
    fig.suptitle("From scratch (random init), " + rows[0]["data"], fontsize=9)
    save(fig, stem, formats)
