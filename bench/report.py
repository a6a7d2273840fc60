"""`bench report` and `bench compare`: the results store as tables, figures and one page per study.

    reports/<study>/report.md                 tables inline, figures linked, provenance
                    report.tex                standalone article: \\input's the tables, the PDFs
                    tables/<name>.md|.tex     results, effects, per_class, references
                    figures/<name>.png|.pdf   confusion, learning_curves, accuracy_vs_time
Run folders are read directly. A finished run whose metrics.json or predictions.csv is missing
or unreadable is named in a warning and left out; failed and pending runs are shown as such.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench import figures, stats


class ReportError(Exception):
    """A report or comparison that cannot be made; the message says how to fix it."""


# ---- reading the store ------------------------------------------------------------------------

@dataclass
class Run:
    variant: str
    seed: int
    run_id: str
    overrides: dict
    state: str  # done | failed | running | pending | damaged
    detail: str = ""
    config: dict | None = None
    metrics: dict | None = None
    history: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None

    @property
    def correct(self) -> np.ndarray:
        return (self.predictions["pred"] == self.predictions["label"]).to_numpy()


@dataclass
class StudyRuns:
    name: str
    file: str
    description: str
    command: str
    runs: list[Run]
    warnings: list[str] = field(default_factory=list)

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.runs))

    def done(self, variant: str) -> list[Run]:
        return sorted((r for r in self.runs if r.variant == variant and r.state == "done"), key=lambda r: r.seed)

    def of(self, variant: str) -> list[Run]:
        return [r for r in self.runs if r.variant == variant]


def study_names(root: Path) -> list[str]:
    return sorted(p.stem for p in (Path(root) / "studies").glob("*.json"))


def load_study(root: Path, name: str) -> StudyRuns:
    root = Path(root)
    path = root / "studies" / f"{name}.json"
    try:
        spec = json.loads(path.read_text())
        variants = spec["variants"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"cannot read {path} ({e}); re-run `bench run` on the study file to rewrite it") from None
    warnings: list[str] = []
    runs = [_read_run(root, v, warnings) for v in variants]
    return StudyRuns(spec.get("study", name), spec.get("file", ""), spec.get("description", ""),
                     spec.get("command", ""), runs, warnings)


def _read_json(path: Path):
    return json.loads(path.read_text())


def _read_run(root: Path, v: dict, warnings: list[str]) -> Run:
    d = root / "runs" / v["run_id"]
    run = Run(v["name"], v["seed"], v["run_id"], v.get("overrides", {}), "pending")
    try:
        run.config = _read_json(d / "config.json")["config"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        status = _read_json(d / "status.json")
        run.state = status["state"]
    except (OSError, ValueError, KeyError, TypeError):
        return run  # never started, or killed before it wrote anything
    if run.state == "failed":
        run.detail = f"{status.get('error', 'failed')}: {str(status.get('detail', '')).splitlines()[0] if status.get('detail') else ''}".rstrip(": ")
    if run.state != "done":
        return run

    def damaged(what: str, e: Exception) -> Run:
        warnings.append(f"run {d} ({run.variant}, seed {run.seed}): {what} ({type(e).__name__}: {e}); run left out")
        run.state, run.detail = "damaged", what
        return run

    try:
        run.metrics = _read_json(d / "metrics.json")
        float(run.metrics["test"]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return damaged("metrics.json missing or unreadable", e)
    try:
        p = pd.read_csv(d / "predictions.csv")
        if not {"index", "label", "pred"} <= set(p.columns) or p[["label", "pred"]].isna().any().any():
            raise ValueError(f"columns {list(p.columns)[:5]}... or empty cells")
        if "n_test" in run.metrics and len(p) != run.metrics["n_test"]:
            raise ValueError(f"{len(p)} rows, metrics.json says {run.metrics['n_test']} test images")
        run.predictions = p.sort_values("index").reset_index(drop=True)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
        return damaged("predictions.csv missing or unreadable", e)
    try:
        run.history = pd.read_csv(d / "history.csv")
        run.history["epoch"]  # noqa: B018 (a KeyError here means the file is not a history)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
        warnings.append(f"run {d} ({run.variant}, seed {run.seed}): history.csv unreadable ({e}); "
                        "left out of the learning curves only")
        run.history = None
    return run


# ---- numbers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    label: str
    path: tuple  # where it lives in metrics.json
    scale: float  # 100 for fractions shown as percent
    decimals: int | None  # None: 3 significant digits
    better: str | None  # "max" | "min" | None (not ranked)


# The results table's metric columns, in order.
METRICS = (
    Metric("test acc (%)", ("test", "accuracy"), 100, 2, "max"),
    Metric("precision (%)", ("test", "precision_macro"), 100, 2, "max"),
    Metric("recall (%)", ("test", "recall_macro"), 100, 2, "max"),
    Metric("F1 (%)", ("test", "f1_macro"), 100, 2, "max"),
    Metric("best val acc (%)", ("best_val_acc",), 100, 2, "max"),
    Metric("epochs", ("epochs",), 1, 0, None),
    Metric("train time (s)", ("train_seconds",), 1, None, "min"),
    Metric("images/s", ("train_images_per_sec",), 1, None, "max"),
)
TEST_ACC = METRICS[0]


def value(run: Run, metric: Metric) -> float:
    v = run.metrics
    for key in metric.path:
        v = v[key]
    return float(v) * metric.scale


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single run)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def fmt_num(x: float, decimals: int | None) -> str:
    if decimals is None:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return f"{x:,.{decimals}f}"


def fmt_mean_std(values: list[float], decimals: int | None) -> str:
    m, s = mean_std(values)
    return fmt_num(m, decimals) if np.isnan(s) else f"{fmt_num(m, decimals)} ± {fmt_num(s, decimals)}"


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


# ---- tables -----------------------------------------------------------------------------------

@dataclass
class Table:
    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to mark
    notes: list[str] = field(default_factory=list)
    align: str = ""  # one of l/r per column

    def markdown(self) -> str:
        cells = [[f"**{c}**" if (i, j) in self.bold and c else c.replace("|", "\\|") for j, c in enumerate(row)]
                 for i, row in enumerate(self.rows)]
        colalign = ["right" if a == "r" else "left" for a in self.align]
        return pd.DataFrame(cells, columns=self.columns).to_markdown(index=False, disable_numparse=True,
                                                                     colalign=colalign)

    def latex(self) -> str:
        cells = [[f"\\textbf{{{tex(c)}}}" if (i, j) in self.bold and c else tex(c) for j, c in enumerate(row)]
                 for i, row in enumerate(self.rows)]
        return pd.DataFrame(cells, columns=[tex(c) for c in self.columns]).to_latex(
            index=False, escape=False, column_format=self.align)


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "—": "---", "×": r"$\times$", "→": r"$\to$"}


def tex(text: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def what_differs(study: StudyRuns, variant: str, baseline: str | None) -> str:
    """The settings that differ from the baseline run's (from the stored configs when both
    exist, else the variant's overrides of the study defaults)."""
    if variant == baseline:
        return "(baseline)"
    own = next((r.config for r in study.of(variant) if r.config), None)
    base = next((r.config for r in study.of(baseline) if r.config), None) if baseline else None
    if own and base:
        a, b = _flat(own), _flat(base)
        diff = {k: a.get(k) for k in sorted(set(a) | set(b)) if k != "seed" and a.get(k) != b.get(k)}
    else:
        diff = study.of(variant)[0].overrides
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in diff.items()) or "(same settings)"


def status(study: StudyRuns, variant: str) -> str:
    """'3 done', '2 done, 1 failed', 'failed: diverged', 'pending'."""
    runs = study.of(variant)
    counts = pd.Series([r.state for r in runs]).value_counts()
    if counts.get("done", 0) == 0 and len(counts) == 1 and runs[0].detail:
        return f"{runs[0].state}: {runs[0].detail}"
    order = ["done", "failed", "damaged", "running", "pending"]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts)


def is_random_init(study: StudyRuns, variant: str) -> bool:
    runs = study.done(variant)
    if runs:
        return not all(r.metrics.get("pretrained", True) for r in runs)
    cfg = next((r.config for r in study.of(variant) if r.config), None)
    return bool(cfg) and cfg.get("model", {}).get("weights") == "none"


def label(study: StudyRuns, variant: str) -> str:
    return f"{variant} [random init]" if is_random_init(study, variant) else variant


def results_table(study: StudyRuns, baseline: str | None) -> Table:
    columns = ["variant", "what differs", "runs"] + [m.label for m in METRICS]
    rows, means = [], []
    for v in study.variants:
        done = study.done(v)
        row = [label(study, v), what_differs(study, v, baseline), status(study, v)]
        row += [fmt_mean_std([value(r, m) for r in done], m.decimals) if done else "—" for m in METRICS]
        rows.append(row)
        means.append([mean_std([value(r, m) for r in done])[0] if done else np.nan for m in METRICS])
    bold = set()
    means = np.asarray(means, dtype=float).reshape(len(rows), len(METRICS))
    for j, m in enumerate(METRICS):
        col = means[:, j]
        if m.better and np.isfinite(col).any():
            best = np.nanmax(col) if m.better == "max" else np.nanmin(col)
            bold |= {(i, 3 + j) for i in np.flatnonzero(np.isclose(col, best))}
    return Table("results", "Results per variant: mean ± std over its finished seeds (sample std); "
                 "macro-averaged precision, recall and F1 on the test set; best value per column in bold.",
                 columns, rows, bold, align="lll" + "r" * len(METRICS))


def check_same_test_set(a: Run, b: Run) -> str | None:
    """Why the two runs' test sets differ, or None when they are the same images in the same order."""
    da, db = (a.config or {}).get("data", {}), (b.config or {}).get("data", {})
    keys = ["source", "path", "limit_test"] + (["split_seed"] if da.get("limit_test") or db.get("limit_test") else [])
    diffs = [f"data.{k} {da.get(k)!r} vs {db.get(k)!r}" for k in keys if da.get(k) != db.get(k)]
    if diffs:
        return ", ".join(diffs)
    la, lb = a.predictions["label"].to_numpy(), b.predictions["label"].to_numpy()
    if len(la) != len(lb):
        return f"{len(la)} vs {len(lb)} test images"
    if (la != lb).any():
        return "the test labels differ image by image"
    return None


def paired(study: StudyRuns, a: str, b: str, **kw) -> stats.Comparison:
    """McNemar and bootstrap for two variants' finished runs (raises ReportError on mismatch)."""
    runs_a, runs_b = study.done(a), study.done(b)
    for r in runs_a[1:] + runs_b:
        if why := check_same_test_set(runs_a[0], r):
            raise ReportError(f"'{a}' (seed {runs_a[0].seed}) and '{r.variant}' (seed {r.seed}) were tested on "
                              f"different test images ({why}); a paired comparison needs the same test set: "
                              "compare variants with the same data settings")
    return stats.compare(np.stack([r.correct for r in runs_a]), np.stack([r.correct for r in runs_b]), **kw)


def effects_table(study: StudyRuns, baseline: str) -> Table:
    columns = ["variant", "what differs", "Δ test acc (points)", "95% CI (points)", "images won / lost",
               "McNemar p", "seeds"]
    rows, bold = [], set()
    for v in study.variants:
        if v == baseline:
            continue
        head = [label(study, v), what_differs(study, v, baseline)]
        if not study.done(v):
            rows.append(head + ["—", "—", "—", "—", status(study, v)])
            continue
        try:
            c = paired(study, v, baseline)
        except ReportError:
            rows.append(head + ["—", "different test images", "—", "—", status(study, v)])
            continue
        if (c.ci_low > 0 or c.ci_high < 0) and c.p_value < 0.05:
            bold.add((len(rows), 2))
        rows.append(head + [f"{100 * c.diff:+.2f}", f"{100 * c.ci_low:+.2f} to {100 * c.ci_high:+.2f}",
                            f"{c.a_only} / {c.b_only}", fmt_p(c.p_value), f"{c.seeds_a} vs {c.seeds_b}"])
    return Table("effects", f"Change in test accuracy against '{baseline}', paired on the same test images. "
                 "Δ and its 95% bootstrap interval (2,000 resamples of the test images) use each image's "
                 "correctness averaged over a variant's seeds. Won / lost: test images the variant gets right "
                 "and the baseline wrong, and the reverse; they and McNemar's exact two-sided p-value compare "
                 "the first seed's run of each. Bold: interval excludes 0 and p < 0.05.",
                 columns, rows, bold, align="llrrrrr")


def per_class_table(study: StudyRuns, variant: str) -> Table:
    runs = study.done(variant)
    per_class = [pd.DataFrame(r.metrics["test"]["per_class"]) for r in runs]
    rows = []
    for i, c in enumerate(per_class[0]["class"]):
        cells = [fmt_mean_std([100 * pc.loc[i, k] for pc in per_class], 2) for k in ("precision", "recall", "f1")]
        rows.append([str(c)] + cells + [str(int(per_class[0].loc[i, "support"]))])
    return Table("per_class", f"Per-class test metrics of '{variant}' (mean ± std over {len(runs)} seed(s)).",
                 ["class", "precision (%)", "recall (%)", "F1 (%)", "support"], rows, align="lrrrr")


def references() -> dict:
    return yaml.safe_load(resources.files("bench").joinpath("references.yaml").read_text())


def references_table(study: StudyRuns) -> Table:
    refs = references()
    paper, lab = refs["he2016"], refs["lab_report"]
    rows = []
    for t in paper["tables"].values():
        where = f"Table {t['table']}, p. {t['page']}"
        for r in t["rows"]:
            if "top1_error" in r:
                rows.append([paper["short"], f"{r['model']} (ImageNet-trained)", t["evaluated_on"], "", "", "",
                             f"{r['top1_error']:.2f} top-1 / {r['top5_error']:.2f} top-5", where])
            else:
                model = f"{r['model']} ({r['params_m']}M params, from scratch)"
                acc, err = f"{100 - r['error']:.2f}", f"{r['error']:.2f}"
                if "error_mean" in r:
                    acc += f" (best of {r['runs']}; mean {100 - r['error_mean']:.2f} ± {r['error_std']:.2f})"
                    err += f" ({r['error_mean']:.2f} ± {r['error_std']:.2f})"
                rows.append([paper["short"], model, t["evaluated_on"], "", "", acc, err, where])
    rng = {k: f"{lo}–{hi}" for k, (lo, hi) in lab["accuracy"].items()}
    rows.append([lab["short"], f"{lab['model']}: {lab['recipe']}", lab["evaluated_on"], rng["train"], rng["val"],
                 rng["test"], "", lab["where"] or "page not available"])
    for kind, variant in best_by_kind(study).items():
        runs = study.done(variant)
        cell = lambda get: fmt_mean_std([100 * get(r.metrics) for r in runs], 2)  # noqa: E731
        rows.append(["this study", f"best {kind}: {label(study, variant)}", runs[0].metrics.get("dataset", ""),
                     cell(lambda m: m["final_train_acc"]), cell(lambda m: m["final_val_acc"]),
                     cell(lambda m: m["test"]["accuracy"]), "", "results table"])
    notes = ["Paper CVPR page numbers are derived from the arXiv v1 layout and not checked against the "
             "proceedings (see bench/references.yaml); the lab report gives ranges.",
             "This study: train and validation accuracy at the last epoch (as Keras prints them), test accuracy "
             "of the selected epoch; mean ± std over seeds."]
    return Table("references", "This study beside He et al. (CVPR 2016) and the lab report. "
                 + paper["citation"], ["source", "model / recipe", "evaluated on", "train acc (%)", "val acc (%)",
                                        "test acc (%)", "error (%)", "where"], rows, notes=notes, align="lllrrrrl")


def best_by_kind(study: StudyRuns) -> dict[str, str]:
    """The best variant (mean test accuracy) per kind: frozen backbone, fine-tuned, from scratch."""
    best: dict[str, tuple[float, str]] = {}
    for v in study.variants:
        runs = study.done(v)
        if not runs:
            continue
        freeze = (runs[0].config or {}).get("model", {}).get("freeze", "backbone")
        kind = "frozen" if freeze == "backbone" else "from scratch" if is_random_init(study, v) else "fine-tuned"
        acc = mean_std([value(r, TEST_ACC) for r in runs])[0]
        if kind not in best or acc > best[kind][0]:
            best[kind] = (acc, v)
    return {k: best[k][1] for k in ("frozen", "fine-tuned", "from scratch") if k in best}


def best_variant(study: StudyRuns) -> str | None:
    scored = [(mean_std([value(r, TEST_ACC) for r in study.done(v)])[0], v) for v in study.variants if study.done(v)]
    return max(scored)[1] if scored else None


# ---- figures ----------------------------------------------------------------------------------

def make_figures(study: StudyRuns, variant: str, out: Path, formats: set[str]) -> dict[str, str]:
    """Write the three figures; returns {figure name: caption}."""
    made = {}
    runs = study.done(variant)
    matrix = np.sum([r.metrics["test"]["confusion_matrix"] for r in runs], axis=0)
    classes = [c["class"] for c in runs[0].metrics["test"]["per_class"]]
    figures.confusion(matrix, classes, f"{variant}: test confusion matrix", out / "confusion", formats)
    made["confusion"] = (f"Confusion matrix of '{variant}' on the test set, normalised per true class "
                         f"(rows sum to 1; {len(runs)} seed(s) pooled).")
    curves = {}
    for v in study.variants:
        histories = [r.history for r in study.done(v) if r.history is not None]
        if histories:
            curves[v] = pd.concat(histories).groupby("epoch", as_index=False).mean(numeric_only=True)
    if curves:
        figures.learning_curves(curves, out / "learning_curves", formats)
        made["learning_curves"] = "Learning curves: loss and accuracy per epoch, mean over each variant's seeds."
    points = []
    for v in study.variants:
        if runs := study.done(v):
            acc_mean, acc_std = mean_std([value(r, TEST_ACC) for r in runs])
            points.append({"variant": v, "seconds": np.mean([r.metrics["train_seconds"] for r in runs]),
                           "acc": acc_mean, "acc_std": acc_std, "pretrained": not is_random_init(study, v)})
    figures.accuracy_vs_time(pd.DataFrame(points), out / "accuracy_vs_time", formats)
    made["accuracy_vs_time"] = ("Test accuracy against training time per run; the grey line joins the "
                                "recipes that no faster recipe beats.")
    return made


# ---- the page -----------------------------------------------------------------------------------

def provenance(study: StudyRuns) -> list[tuple[str, str]]:
    """(what, value) pairs a reader needs before trusting the numbers."""
    done = [r for r in study.runs if r.state == "done"]

    def tally(get) -> str:
        counts = pd.Series([get(r.metrics) for r in done]).value_counts()
        return "; ".join(f"{k} ({n} run{'s' * (n > 1)})" if len(counts) > 1 else str(k) for k, n in counts.items())

    states = pd.Series([r.state for r in study.runs]).value_counts()
    return [
        ("Command", study.command or "(not recorded)"),
        ("Study file", study.file or "(not recorded)"),
        ("Runs", ", ".join(f"{n} {s}" for s, n in states.items()) + f" (of {len(study.runs)})"),
        ("Data set", tally(lambda m: m.get("dataset", "?"))),
        ("Weights", tally(lambda m: m.get("weights", "?"))),
        ("Device", tally(lambda m: m.get("device", "?"))),
        ("Precision", tally(lambda m: m.get("precision", "?"))),
        ("Software", tally(lambda m: ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()))),
    ]


def random_init_warning(study: StudyRuns) -> str | None:
    random = [v for v in study.variants if is_random_init(study, v)]
    if not random:
        return None
    who = "every variant starts" if len(random) == len(study.variants) else \
        f"{len(random)} of {len(study.variants)} variants ({', '.join(random)}) start"
    return (f"RANDOM INITIALISATION: {who} from random weights, not ImageNet. Their numbers show "
            "what the pipeline does without pretraining and say nothing about transfer from ImageNet.")


def write_report(study: StudyRuns, out: Path, formats: set[str], baseline: str | None = None,
                 variant: str | None = None) -> list[Path]:
    """Write reports/<study>/: tables, figures, report.md and/or report.tex. Returns the files written."""
    unknown = formats - set(figures.EXTENSIONS)
    if unknown or not formats:
        raise ReportError(f"unknown --format {','.join(sorted(unknown)) or '(empty)'}; use md, tex or md,tex")
    for name, flag in ((baseline, "--baseline"), (variant, "--variant")):
        if name is not None and name not in study.variants:
            raise ReportError(_unknown_variant(study, name, flag))
    if variant is not None and not study.done(variant):
        raise ReportError(f"--variant {variant}: no finished run ({status(study, variant)}); choose another or "
                          f"finish it with `bench run {study.file or 'STUDY.yaml'}`")
    if baseline is None:
        baseline = "baseline" if "baseline" in study.variants else None
        if baseline is None:
            study.warnings.append(f"study {study.name}: no variant named 'baseline', so no ablation-effects "
                                  "table; pass --baseline NAME")
    out = Path(out) / study.name
    variant = variant or best_variant(study)

    tables = [results_table(study, baseline)]
    if baseline and study.done(baseline):
        tables.append(effects_table(study, baseline))
    elif baseline:
        study.warnings.append(f"study {study.name}: baseline '{baseline}' has no finished run "
                              f"({status(study, baseline)}), so no ablation-effects table")
    if variant:
        tables.append(per_class_table(study, variant))
    tables.append(references_table(study))
    captions = make_figures(study, variant, out / "figures", formats) if variant else {}
    if not variant:
        study.warnings.append(f"study {study.name}: no finished run yet; only the status table is reported")

    written = []
    for t in tables:
        for fmt in formats:
            path = out / "tables" / f"{t.name}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((t.markdown() if fmt == "md" else t.latex()) + "\n")
            written.append(path)
    written += [out / "figures" / f"{name}.{figures.EXTENSIONS[fmt]}" for name in captions for fmt in formats]
    if "md" in formats:
        (out / "report.md").write_text(page_markdown(study, tables, captions, variant))
        written.append(out / "report.md")
    if "tex" in formats:
        (out / "report.tex").write_text(page_latex(study, tables, captions, variant))
        written.append(out / "report.tex")
    return written


SECTIONS = {"results": "Results", "effects": "Ablation effects", "per_class": "Per class",
            "references": "Against the paper and the lab report"}
FIGURE_TITLES = {"confusion": "Confusion matrix", "learning_curves": "Learning curves",
                 "accuracy_vs_time": "Accuracy against training time"}


def page_markdown(study: StudyRuns, tables: list[Table], captions: dict[str, str], variant: str | None) -> str:
    lines = [f"# {study.name}", "", study.description, ""]
    if warning := random_init_warning(study):
        lines += [f"> **⚠ {warning}**", ""]
    lines += ["## How these numbers were made", ""]
    lines += [f"- **{k}:** `{v}`" if k in ("Command", "Study file") else f"- **{k}:** {v}" for k, v in provenance(study)]
    lines.append("")
    for t in tables:
        lines += [f"## {SECTIONS[t.name]}", "", t.caption, "", t.markdown(), ""]
        lines += [f"_{n}_" + "\n" for n in t.notes]
        if t.name == "per_class" and "confusion" in captions:
            lines += [f"![confusion matrix of {variant}](figures/confusion.png)", "", captions["confusion"], ""]
    for name in ("learning_curves", "accuracy_vs_time"):
        if name in captions:
            lines += [f"## {FIGURE_TITLES[name]}", "", f"![{FIGURE_TITLES[name]}](figures/{name}.png)", "",
                      captions[name], ""]
    if study.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in study.warnings] + [""]
    return "\n".join(lines)


def page_latex(study: StudyRuns, tables: list[Table], captions: dict[str, str], variant: str | None) -> str:
    body = [r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm]{geometry}",
            r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage[T1]{fontenc}",
            # scale a table down to the text width only when it is wider than that
            r"\newcommand{\fitwidth}[1]{\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{#1}}",
            f"\\title{{{tex(study.name)}}}", r"\author{}", r"\date{}", r"\begin{document}", r"\maketitle", tex(study.description), ""]
    if warning := random_init_warning(study):
        body += [r"\medskip\noindent\fbox{\parbox{\dimexpr\linewidth-2\fboxsep-2\fboxrule}{\textbf{"
                 + tex(warning) + "}}}", ""]
    body += [r"\section*{How these numbers were made}", r"\begin{itemize}"]
    body += [f"\\item \\textbf{{{tex(k)}:}} " + (f"\\texttt{{{tex(v)}}}" if k in ("Command", "Study file") else tex(v))
             for k, v in provenance(study)]
    body += [r"\end{itemize}", ""]
    for t in tables:
        body += [f"\\section*{{{tex(SECTIONS[t.name])}}}", r"\begin{table}[ht]", r"\centering",
                 f"\\caption{{{tex(t.caption)}}}", f"\\fitwidth{{\\input{{tables/{t.name}.tex}}}}"]
        body += [f"\\par\\smallskip{{\\footnotesize {tex(n)}}}" for n in t.notes]
        body += [r"\end{table}", ""]
    for name, caption in captions.items():
        body += [r"\begin{figure}[ht]", r"\centering",
                 f"\\includegraphics[width=\\linewidth,height=0.8\\textheight,keepaspectratio]{{figures/{name}.pdf}}",
                 f"\\caption{{{tex(caption)}}}", r"\end{figure}", ""]
    if study.warnings:
        body += [r"\section*{Warnings}", r"\begin{itemize}"] + [f"\\item {tex(w)}" for w in study.warnings]
        body += [r"\end{itemize}"]
    body += [r"\end{document}", ""]
    return "\n".join(body)


# ---- entry points for the CLI -----------------------------------------------------------------

def _unknown_variant(study: StudyRuns, name: str, what: str = "variant") -> str:
    close = difflib.get_close_matches(name, study.variants, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{what} '{name}' is not in study '{study.name}'{hint}; its variants are: {', '.join(study.variants)}"


def report(root: Path, out: Path, study: str | None = None, formats: set[str] = frozenset({"md", "tex"}),
           baseline: str | None = None, variant: str | None = None) -> list[tuple[StudyRuns, list[Path]]]:
    """Report one study, or every study in the store."""
    names = _studies(root)
    if study is not None and study not in names:
        raise ReportError(f"no study '{study}' in {Path(root) / 'studies'}; studies there: {', '.join(names)}")
    return [(s := load_study(root, name), write_report(s, out, set(formats), baseline, variant))
            for name in ([study] if study else names)]


def _studies(root: Path) -> list[str]:
    names = study_names(root)
    if not names:
        raise ReportError(f"no studies in {Path(root) / 'studies'}: run `bench run STUDY.yaml --results {root}` "
                          "first, or point --results at the store that holds them")
    return names


@dataclass
class Paired:
    study: StudyRuns
    a: str
    b: str
    comparison: stats.Comparison


def compare(root: Path, a: str, b: str, study: str | None = None, **kw) -> Paired:
    """`bench compare A B`: find the study holding both variants, check their runs, test."""
    names = _studies(root)
    if study is not None:
        if study not in names:
            raise ReportError(f"no study '{study}' in {Path(root) / 'studies'}; studies there: {', '.join(names)}")
        runs = load_study(root, study)
    else:
        holding = [s for s in map(lambda n: load_study(root, n), names) if {a, b} <= set(s.variants)]
        if len(holding) > 1:
            raise ReportError(f"'{a}' and '{b}' are both in studies {', '.join(s.name for s in holding)}; "
                              "pass --study NAME")
        if not holding:
            if len(names) == 1:
                runs = load_study(root, names[0])
            else:
                raise ReportError(f"no study holds both '{a}' and '{b}'; studies: {', '.join(names)} "
                                  "(pass --study NAME to see its variants)")
        else:
            runs = holding[0]
    for name in (a, b):
        if name not in runs.variants:
            raise ReportError(_unknown_variant(runs, name))
        if not runs.done(name):
            raise ReportError(f"variant '{name}' has no finished run ({status(runs, name)}); run "
                              f"`bench run {runs.file or 'STUDY.yaml'} --results {root}` first "
                              "(add --retry-failed to re-run failed ones)")
    return Paired(runs, a, b, paired(runs, a, b, **kw))
