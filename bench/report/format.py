"""Numbers and tables as text: metric columns, mean ± std, p-values, markdown and LaTeX tables."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.report.runs import Run


@dataclass(frozen=True)
class Metric:
    label: str
    path: tuple  # where it lives in the run's RunMetrics
    scale: float  # 100 for fractions shown as percent
    decimals: int | None  # None: 3 significant digits


# The results table's metric columns, in order (the candidates column, text, goes after val acc).
METRICS = (
    Metric("test acc (%)", ("test", "accuracy"), 100, 2),
    Metric("precision (%)", ("test", "precision_macro"), 100, 2),
    Metric("recall (%)", ("test", "recall_macro"), 100, 2),
    Metric("F1 (%)", ("test", "f1_macro"), 100, 2),
    Metric("val acc (%)", ("best_val_acc",), 100, 2),
    Metric("train time (s)", ("train_seconds",), 1, None),
    Metric("images/s", ("train_images_per_sec",), 1, None),
)
TEST_ACC, VAL_ACC = METRICS[0], METRICS[4]


def value(run: Run, metric: Metric) -> float:
    v = run.metrics
    for key in metric.path:
        v = getattr(v, key)
    return float(v) * metric.scale


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single run)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def mean_of(runs: list[Run], metric: Metric) -> float:
    return mean_std([value(r, metric) for r in runs])[0]


def cell(x) -> str:
    """A figure as a reader takes it in at a glance: three significant digits, never an exponent (1,600, not
    1.6e+03), thousands separated; blank where a row has none."""
    if x is None or isinstance(x, str):
        return x or ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, numbers.Integral):
        return f"{x:,}"
    if math.isnan(x):
        return ""
    return f"{float(f'{x:.3g}'):,.12g}" if math.isfinite(x) else str(x)


def fmt_num(x: float, decimals: int | None) -> str:
    if decimals is None:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return f"{x:,.{decimals}f}"


def fmt_mean_std(values: list[float], decimals: int | None) -> str:
    m, s = mean_std(values)
    return fmt_num(m, decimals) if np.isnan(s) else f"{fmt_num(m, decimals)} ± {fmt_num(s, decimals)}"


def fmt_p(p: float | None) -> str:
    if p is None or np.isnan(p):
        return "—"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


@dataclass
class Table:
    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to mark
    notes: list[str] = field(default_factory=list)
    align: str = ""  # one of l/r per column
    wrap: dict[int, str] = field(default_factory=dict)  # LaTeX only: column -> width of a wrapping column

    def markdown(self) -> str:
        escaped = [[md(c) for c in row] for row in self.rows]
        cells = [
            [f"**{c}**" if (i, j) in self.bold and c else c for j, c in enumerate(row)] for i, row in enumerate(escaped)
        ]
        colalign = ["right" if a == "r" else "left" for a in self.align]
        return pd.DataFrame(cells, columns=[md(c) for c in self.columns]).to_markdown(
            index=False, disable_numparse=True, colalign=colalign
        )

    def latex(self) -> str:
        # wrapping columns may also break after "=", "/" and "_" (long overrides such as model.freeze=stem-layer3,
        # a weights file's path), which LaTeX would otherwise run into the next column
        escaped = [[breakable(tex(c)) if j in self.wrap else tex(c) for j, c in enumerate(row)] for row in self.rows]
        cells = [
            [f"\\textbf{{{c}}}" if (i, j) in self.bold and c else c for j, c in enumerate(row)]
            for i, row in enumerate(escaped)
        ]
        spec = "".join(
            f">{{\\raggedright\\arraybackslash}}p{{{self.wrap[j]}}}" if j in self.wrap else a
            for j, a in enumerate(self.align)
        )
        return pd.DataFrame(cells, columns=[tex(c) for c in self.columns]).to_latex(
            index=False, escape=False, column_format=spec
        )


TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "–": "--",
    "—": "---",
    "×": r"$\times$",
    "→": r"$\to$",
    "<": r"$<$",
    ">": r"$>$",
    "|": r"$|$",
    "“": "``",
    "”": "''",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "†": r"\dag{}",
    "‡": r"\ddag{}",
    "[": "{[}",  # a cell starting with [ right after \\ would be read as the row's spacing argument
    "]": "{]}",
}


MD_SPECIAL = set("\\`*_[]<>|$~")  # what GitHub markdown would act on inside a line


def md(text: str) -> str:
    """User text shown literally in GitHub markdown (names like '*a*', 'x|y' or '$5' included)."""
    return "".join("\\" + ch if ch in MD_SPECIAL else ch for ch in str(text))


def breakable(escaped: str) -> str:
    """LaTeX text (already escaped) that may break after "=", "/" and "_"."""
    for mark in ("=", "/", r"\_"):
        escaped = escaped.replace(mark, mark + r"\allowbreak{}")
    return escaped


def tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in str(text))
