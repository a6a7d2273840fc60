"""`bench report` and `bench compare`: read a study's runs, build its tables and figures, write
its pages. The orchestration only; each table, figure and page is built in its own module.

    reports/<study>/report.md                 tables inline, figures linked, provenance
                    report.tex                standalone article: \\input's the tables, the PDFs
                    tables/<name>.md|.tex     results, effects, per_class, references
                    figures/<name>.png|.pdf   confusion, effects, learning_curves, data_size, accuracy_vs_time, depth
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import stats
from bench.infra.files import atomic_write
from bench.infra.store import Store
from bench.report.canvas import EXTENSIONS
from bench.report.describe import best_variant, data_title, default_baseline, made_with, status
from bench.report.effects_plot import effects_figure
from bench.report.figures import depth_figure, make_figures
from bench.report.pages import page_latex, page_markdown
from bench.report.paper import figure6, reproduction_table
from bench.report.references import depth_rows, depth_table, references_table
from bench.report.runs import ReportError, StudyRuns, load_runs
from bench.report.tables import effects, effects_table, paired, per_class_table, results_table
from bench.util import did_you_mean

FORMATS = tuple(EXTENSIONS)  # md, tex


def unknown_variant(study: StudyRuns, name: str, what: str = "variant") -> str:
    return (
        f"{what} '{name}' is not in study '{study.name}'{did_you_mean(name, study.variants)}; its variants "
        f"are: {', '.join(study.variants)}"
    )


@dataclass
class Written:
    study: str
    files: list[Path]
    warnings: list[str]


def write_report(
    study: StudyRuns, out: Path, formats: set[str], baseline: str | None = None, variant: str | None = None
) -> Written:
    """Write reports/<study>/: tables, figures, report.md and/or report.tex (`formats` within FORMATS)."""
    for name, what in ((baseline, "baseline"), (variant, "variant")):
        if name is not None and name not in study.variants:
            raise ReportError(unknown_variant(study, name, what))
    if variant is not None and not study.done(variant):
        raise ReportError(
            f"variant {variant}: no finished run ({status(study, variant)}); choose another or "
            f"finish it with `bench run {study.file or 'STUDY.yaml'}`"
        )
    warnings = list(study.warnings)
    if baseline is None:
        baseline = "baseline" if "baseline" in study.variants else None
        if baseline is None:
            warnings.append(
                f"study {study.name}: no variant named 'baseline', so no ablation-effects table; "
                "name the baseline variant to get one"
            )
    out = Path(out) / study.name
    variant = variant or best_variant(study)

    tables = [results_table(study, baseline)]
    found = None  # the ablation effects, computed once for their table and their figure
    if baseline and study.done(baseline):
        found = effects(study, baseline)
        tables.append(effects_table(study, baseline, found))
    elif baseline:
        warnings.append(
            f"study {study.name}: baseline '{baseline}' has no finished run "
            f"({status(study, baseline)}), so no ablation-effects table"
        )
    if variant:
        tables.append(per_class_table(study, variant))
    if reproduction := reproduction_table(study):
        tables.append(reproduction)
    tables.append(references_table(study))
    if depth := depth_table(study, baseline):
        tables.append(depth)
    captions = make_figures(study, variant, out / "figures", formats, baseline) if variant else {}
    if found is not None and (caption := effects_figure(study, baseline, out / "figures" / "effects", formats, found)):
        captions["effects"] = caption
    if reproduction:
        captions.update(figure6(study, out / "figures", formats))
    if depth:
        rows = depth_rows(study, baseline, heads=True)
        arms = [r["variant"] for r in rows]
        data = " / ".join(dict.fromkeys(data_title(r) for v in arms for r in study.done(v)))
        if caption := depth_figure(rows, made_with(study, arms), data, out / "figures" / "depth", formats):
            captions["depth"] = caption
    if not variant:
        warnings.append(f"study {study.name}: no finished run yet; only the status table is reported")

    written = []
    for t in tables:
        for fmt in formats:
            path = out / "tables" / f"{t.name}.{fmt}"
            atomic_write(path, (t.markdown() if fmt == "md" else t.latex()) + "\n")
            written.append(path)
    written += [out / "figures" / f"{name}.{EXTENSIONS[fmt]}" for name in captions for fmt in formats]
    for fmt, page in (("md", page_markdown), ("tex", page_latex)):
        if fmt in formats:
            atomic_write(out / f"report.{fmt}", page(study, tables, captions, variant, warnings))
            written.append(out / f"report.{fmt}")
    return Written(study.name, written, warnings)


def report(
    root: Path,
    out: Path,
    study: str | None = None,
    formats: set[str] = frozenset(FORMATS),
    baseline: str | None = None,
    variant: str | None = None,
) -> list[Written]:
    """Report one study, or every study in the store. With several studies, one that cannot be
    reported (unreadable file, no such variant) is skipped with a warning instead of stopping the rest."""
    names = _studies(root)
    if study is not None and study not in names:
        raise ReportError(f"no study '{study}' in {Store(root).root / 'studies'}; studies there: {', '.join(names)}")
    written = []
    for name in [study] if study else names:
        try:
            written.append(write_report(load_runs(root, name), out, set(formats), baseline, variant))
        except ReportError as e:
            if study or len(names) == 1:
                raise
            written.append(Written(name, [], [f"study {name} skipped: {e}"]))
    return written


def write_reports(
    results: str | Path = "results",
    study: str | None = None,
    out: str | Path = "reports",
    formats: tuple[str, ...] = ("md", "tex"),
    baseline: str | None = None,
    variant: str | None = None,
) -> list[Path]:
    """`bench.report(...)`: write the report of one study or every study; the files written. What the report
    could not include is raised as warnings (UserWarning)."""
    import warnings

    from bench.infra.files import check_writable

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ReportError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; use {', '.join(FORMATS)}")
    check_writable(Path(out), "report.md", "the report folder (out=)")
    if baseline is None and study is not None:  # the baseline effects() would take, where there is one
        baseline = default_baseline(load_runs(Path(results), study))
    files = []
    for written in report(Path(results), Path(out), study, set(formats), baseline, variant):
        for w in written.warnings:
            warnings.warn(w, stacklevel=3)
        files += written.files
    return files


def _studies(root: Path) -> list[str]:
    names = Store(root).study_names()
    if not names:
        raise ReportError(
            f"no studies in {Path(root) / 'studies'}: run `bench run STUDY.yaml` with this results "
            "store first, or point at the store that holds them"
        )
    return names


@dataclass
class Paired:
    study: StudyRuns
    a: str
    b: str
    comparison: stats.Comparison


def compare(root: Path, a: str, b: str, study: str | None = None, confidence: float = stats.CONFIDENCE) -> Paired:
    """`bench compare A B`: find the study holding both variants, check their runs, test at the seed level."""
    names = _studies(root)
    if study is not None:
        if study not in names:
            raise ReportError(f"no study '{study}' in {Path(root) / 'studies'}; studies there: {', '.join(names)}")
        runs = load_runs(root, study)
    else:
        holding = [s for s in (load_runs(root, n) for n in names) if {a, b} <= set(s.variants)]
        if len(holding) > 1:
            raise ReportError(
                f"'{a}' and '{b}' are both in studies {', '.join(s.name for s in holding)}; name the study"
            )
        if not holding and len(names) > 1:
            raise ReportError(
                f"no study holds both '{a}' and '{b}'; studies: {', '.join(names)} (name the study to see its variants)"
            )
        runs = holding[0] if holding else load_runs(root, names[0])
    for name in (a, b):
        if name not in runs.variants:
            raise ReportError(unknown_variant(runs, name))
        if not runs.done(name):
            raise ReportError(
                f"variant '{name}' has no finished run ({status(runs, name)}); run "
                f"`bench run {runs.file or 'STUDY.yaml'}` on this results store first "
                "(failed runs are re-run only when asked to retry them)"
            )
    return Paired(runs, a, b, paired(runs, a, b, confidence))
