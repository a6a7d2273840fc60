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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench import figures, stats
from bench.results import ReportError, Run, StudyRuns, load_study, study_names


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
    wrap: dict[int, str] = field(default_factory=dict)  # LaTeX only: column -> width of a wrapping column

    def markdown(self) -> str:
        escaped = [[c.replace("|", "\\|") for c in row] for row in self.rows]
        cells = [[f"**{c}**" if (i, j) in self.bold and c else c for j, c in enumerate(row)]
                 for i, row in enumerate(escaped)]
        colalign = ["right" if a == "r" else "left" for a in self.align]
        return pd.DataFrame(cells, columns=self.columns).to_markdown(index=False, disable_numparse=True,
                                                                     colalign=colalign)

    def latex(self) -> str:
        # wrapping columns may also break after "=" (long overrides such as model.freeze=stem-layer3)
        escaped = [[tex(c).replace("=", "=\\allowbreak{}") if j in self.wrap else tex(c) for j, c in enumerate(row)]
                   for row in self.rows]
        cells = [[f"\\textbf{{{c}}}" if (i, j) in self.bold and c else c for j, c in enumerate(row)]
                 for i, row in enumerate(escaped)]
        spec = "".join(f">{{\\raggedright\\arraybackslash}}p{{{self.wrap[j]}}}" if j in self.wrap else a
                       for j, a in enumerate(self.align))
        return pd.DataFrame(cells, columns=[tex(c) for c in self.columns]).to_latex(
            index=False, escape=False, column_format=spec)


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "—": "---", "×": r"$\times$", "→": r"$\to$",
               "<": r"$<$", ">": r"$>$", "|": r"$|$", "“": "``", "”": "''"}


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
                 columns, rows, bold, notes=[n for n in [cache_note(study)] if n],
                 align="lll" + "r" * len(METRICS), wrap={0: "2.8cm", 1: "3.2cm", 2: "2.4cm"})


def cache_note(study: StudyRuns) -> str | None:
    """Runs that found their frozen-backbone features cached were timed without the backbone."""
    cached = [v for v in study.variants if any(r.metrics.get("feature_cache") == "hit" for r in study.done(v))]
    if cached:
        return (f"Training time of {', '.join(cached)} leaves out the frozen backbone's pass over the images: "
                "those runs reused features from the feature cache.")
    return None


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
    ci = f"{100 * stats.CONFIDENCE:.0f}%"
    columns = ["variant", "what differs", "Δ test acc (points)", f"{ci} CI (points)", "images won / lost",
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
                 f"Δ and its {ci} bootstrap interval ({stats.RESAMPLES:,} resamples of the test images) use "
                 "each image's correctness averaged over a variant's seeds. Won / lost: test images the variant "
                 "gets right and the baseline wrong, and the reverse; they and McNemar's exact two-sided p-value "
                 "compare the first seed's run of each. Bold: interval excludes 0 and p < 0.05.",
                 columns, rows, bold, align="llrrrrr", wrap={0: "2.8cm", 1: "3.2cm", 6: "2.4cm"})


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
        train, val, test = ([100 * v for v in values] for values in zip(
            *[(r.metrics["final_train_acc"], r.metrics["final_val_acc"], r.metrics["test"]["accuracy"]) for r in runs]))
        rows.append(["this study", f"best {kind}: {label(study, variant)}", runs[0].metrics.get("dataset", ""),
                     fmt_mean_std(train, 2), fmt_mean_std(val, 2), fmt_mean_std(test, 2), "", "results table"])
    notes = ["Paper CVPR page numbers are derived from the arXiv v1 layout and not checked against the "
             "proceedings (see bench/references.yaml); the lab report gives ranges.",
             "This study: train and validation accuracy at the last epoch (as Keras prints them), test accuracy "
             "of the selected epoch; mean ± std over seeds."]
    return Table("references", "This study beside He et al. (CVPR 2016) and the lab report. "
                 + paper["citation"], ["source", "model / recipe", "evaluated on", "train acc (%)", "val acc (%)",
                                        "test acc (%)", "error (%)", "where"], rows, notes=notes, align="lllrrrrl",
                 wrap={1: "4.5cm", 2: "3.2cm", 5: "2.4cm", 6: "2.4cm", 7: "2.2cm"})


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
                                "recipes that no faster recipe beats. " + (cache_note(study) or "")).strip()
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
    lines += [f"- **{k}:** `{v}`" if k in ("Command", "Study file") else f"- **{k}:** {v}"
              for k, v in provenance(study)]
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
            r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage{array}", r"\usepackage{float}",
            # scale a table down to the text width only when it is wider than that
            r"\newcommand{\fitwidth}[1]{\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{#1}}",
            f"\\title{{{tex(study.name)}}}", r"\author{}", r"\date{}", r"\begin{document}", r"\maketitle",
            tex(study.description), ""]
    if warning := random_init_warning(study):
        body += [r"\medskip\noindent\fbox{\parbox{\dimexpr\linewidth-2\fboxsep-2\fboxrule}{\textbf{"
                 + tex(warning) + "}}}", ""]
    body += [r"\section*{How these numbers were made}", r"\begin{itemize}"]
    body += [f"\\item \\textbf{{{tex(k)}:}} " + (f"\\texttt{{{tex(v)}}}" if k in ("Command", "Study file") else tex(v))
             for k, v in provenance(study)]
    body += [r"\end{itemize}", ""]
    for t in tables:
        body += [f"\\section*{{{tex(SECTIONS[t.name])}}}", r"\begin{table}[H]", r"\centering",
                 f"\\caption{{{tex(t.caption)}}}", f"\\fitwidth{{\\input{{tables/{t.name}.tex}}}}"]
        body += [f"\\par\\smallskip{{\\footnotesize {tex(n)}}}" for n in t.notes]
        body += [r"\end{table}", ""]
    for name, caption in captions.items():
        body += [r"\begin{figure}[H]", r"\centering",
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


@dataclass
class Written:
    study: str
    files: list[Path]
    warnings: list[str]


def report(root: Path, out: Path, study: str | None = None, formats: set[str] = frozenset({"md", "tex"}),
           baseline: str | None = None, variant: str | None = None) -> list[Written]:
    """Report one study, or every study in the store. With several studies, one that cannot be
    reported (unreadable file, no such --variant) is skipped with a warning instead of stopping the rest."""
    names = _studies(root)
    if study is not None and study not in names:
        raise ReportError(f"no study '{study}' in {Path(root) / 'studies'}; studies there: {', '.join(names)}")
    written = []
    for name in [study] if study else names:
        try:
            runs = load_study(root, name)
            written.append(Written(name, write_report(runs, out, set(formats), baseline, variant), runs.warnings))
        except ReportError as e:
            if study or len(names) == 1:
                raise
            written.append(Written(name, [], [f"study {name} skipped: {e}"]))
    return written


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
    if kw.get("resamples", stats.RESAMPLES) < 100:
        raise ReportError(f"--resamples {kw['resamples']}: use at least 100 (2,000 is the default)")
    names = _studies(root)
    if study is not None:
        if study not in names:
            raise ReportError(f"no study '{study}' in {Path(root) / 'studies'}; studies there: {', '.join(names)}")
        runs = load_study(root, study)
    else:
        holding = [s for s in (load_study(root, n) for n in names) if {a, b} <= set(s.variants)]
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
