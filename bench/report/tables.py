"""The report's tables: results per variant, ablation effects against the baseline, per class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import stats
from bench.report.describe import Choice, cache_note, candidates, choose, lab_differences, label, status, what_differs
from bench.report.format import METRICS, VAL_ACC, Table, fmt_mean_std, fmt_p, value
from bench.report.runs import ReportError, Run, StudyRuns


def results_table(study: StudyRuns, baseline: str | None) -> Table:
    """One row per variant; the variant chosen on validation is marked, nothing is ranked on test."""
    columns = ["variant", "vs the lab's recipe", "what differs from the baseline", "runs"]
    columns += [m.label for m in METRICS[:5]] + ["chosen on val from"] + [m.label for m in METRICS[5:]]
    rows = []
    lab, shared = lab_columns(study)
    for v in study.variants:
        done = study.done(v)
        row = [label(study, v), lab[v], what_differs(study, v, baseline), status(study, v)]
        cells = [fmt_mean_std([value(r, m) for r in done], m.decimals) if done else "—" for m in METRICS]
        picked = ", ".join(dict.fromkeys(candidates(r) for r in done)) or "—"
        rows.append(row + cells[:5] + [picked] + cells[5:])
    choice = choose(study, study.variants)
    bold = set()
    if choice and choice.clear:
        i = study.variants.index(choice.variant)
        bold = {(i, columns.index(VAL_ACC.label))}
    return Table(
        "results",
        "Results per variant: mean ± std over its finished seeds (sample std); macro-averaged "
        "precision, recall and F1 on the test set; validation accuracy of the tested epoch or probe setting, "
        "chosen on validation from the candidates the next column counts (more candidates, more room for a "
        f"lucky pick); no column is ranked on test; {choice_sentence(choice)}."
        + (f" Every row differs from the lab's recipe in: {', '.join(shared)}." if shared else ""),
        columns,
        rows,
        bold,
        notes=[n for n in [cache_note(study)] if n],
        align="llll" + "r" * (len(METRICS) + 1),
        wrap={0: "2.2cm", 1: "2.6cm", 2: "2.6cm", 3: "1.4cm"},
    )


def lab_columns(study: StudyRuns) -> tuple[dict[str, str], list[str]]:
    """The "vs the lab's recipe" cell per variant, and the differences every row shares, said once in the caption
    instead (when at least two rows have a stored config)."""
    said = {v: lab_differences(c) if (c := study.config(v)) else None for v in study.variants}
    known = [d for d in said.values() if d is not None]
    shared = [x for x in known[0] if all(x in d for d in known[1:])] if len(known) > 1 else []
    cells = {}
    for v, d in said.items():
        rest = [x for x in d if x not in shared] if d is not None else None
        cells[v] = "?" if rest is None else ", ".join(rest) or ("nothing else" if shared else "the lab's recipe")
    return cells, shared


def choice_sentence(choice: Choice | None) -> str:
    """What the bold in the results table means, or why there is none."""
    if choice is None or choice.lead is None:
        return "nothing in bold"
    if not choice.clear:
        return (
            f"nothing in bold: the highest mean validation accuracy ('{choice.variant}') leads '{choice.runner_up}' "
            f"by {choice.lead:.2f} points, within the ±{choice.noise:.2f} noise of one validation accuracy (95% "
            "binomial interval)"
        )
    return (
        f"bold: '{choice.variant}', the best mean validation accuracy by {choice.lead:.2f} points, more than the "
        f"±{choice.noise:.2f} noise of one validation accuracy (95% binomial interval)"
    )


def check_same_test_set(a: Run, b: Run) -> str | None:
    """Why the two runs' test sets differ, or None when they are the same images in the same order."""
    da, db = (a.config or {}).get("data", {}), (b.config or {}).get("data", {})
    fa, fb = a.fingerprints.get("data"), b.fingerprints.get("data")
    # the images' fingerprints say more than their paths (a moved copy, or other images at one path)
    keys = ["source", "limit_test"] + (["split_seed"] if da.get("limit_test") or db.get("limit_test") else [])
    keys += [] if fa and fb else ["path"]
    diffs = [f"data.{k} {da.get(k)!r} vs {db.get(k)!r}" for k in keys if da.get(k) != db.get(k)]
    if fa and fb and fa != fb:
        diffs.append(f"data fingerprint {fa} vs {fb}")
    if diffs:
        return ", ".join(diffs)
    la, lb = a.predictions["label"].to_numpy(), b.predictions["label"].to_numpy()
    if len(la) != len(lb):
        return f"{len(la)} vs {len(lb)} test images"
    if (la != lb).any():
        return "the test labels differ image by image"
    return None


def paired(study: StudyRuns, a: str, b: str, confidence: float = stats.CONFIDENCE) -> stats.Comparison:
    """Seed-paired comparison of two variants' finished runs: seed s of A against seed s of B, on
    the same test images; A's one seed against the mean of B's several (ReportError when the test
    sets differ or no seed is shared)."""
    runs_a, runs_b = study.done(a), study.done(b)
    for r in runs_a[1:] + runs_b:
        if why := check_same_test_set(runs_a[0], r):
            raise ReportError(
                f"'{a}' (seed {runs_a[0].seed}) and '{r.variant}' (seed {r.seed}) were tested on "
                f"different test images ({why}); a paired comparison needs the same test set: "
                "compare variants with the same data settings"
            )
    if len(runs_a) == 1 and len(runs_b) > 1:  # not B's seed 0 alone: its seed spread belongs in the interval
        return stats.compare(runs_a[0].correct, np.stack([r.correct for r in runs_b]), confidence, against_mean=True)
    seeds = sorted({r.seed for r in runs_a} & {r.seed for r in runs_b})
    if not seeds:
        raise ReportError(
            f"'{a}' (seeds {[r.seed for r in runs_a]}) and '{b}' (seeds {[r.seed for r in runs_b]}) "
            "share no seed; run both with at least one common seed to pair them"
        )
    by_seed = lambda runs: np.stack([next(r for r in runs if r.seed == s).correct for s in seeds])  # noqa: E731
    return stats.compare(by_seed(runs_a), by_seed(runs_b), confidence=confidence)


NOTES = {
    "†": "† one paired seed: the interval covers test-set noise only (no seed variance can be estimated), and "
    "nothing is marked significant on its strength.",
    "‡": "‡ one seed against the mean of the baseline's seeds: Δ is its accuracy minus that mean, and the interval "
    "adds the baseline's seed spread, once for its mean and once for the variant's single seed (assumed to vary as "
    "much); no p-value, and nothing is marked significant on its strength. Per-seed Δ: against each baseline seed.",
}


def mark(c: stats.Comparison) -> str:
    return "" if c.seed_level else " ‡" if c.n_seeds_b > c.n_seeds else " †"


@dataclass
class Effect:
    variant: str
    comparison: stats.Comparison | None  # None: not finished, or not comparable (see note)
    p_holm: float | None  # Holm-adjusted over the study's seed-level comparisons
    note: str = ""  # why there is no comparison: the variant's status, 'no common seed', 'different test images'


def effects(study: StudyRuns, baseline: str) -> list[Effect]:
    """Each other variant against the baseline, seed-paired, with Holm's adjustment over them all."""
    out = []
    for v in study.variants:
        if v == baseline:
            continue
        if not study.done(v):
            out.append(Effect(v, None, None, status(study, v)))
            continue
        try:
            out.append(Effect(v, paired(study, v, baseline), None))
        except ReportError as e:
            why = "different test images" if "different test images" in str(e) else "no common seed"
            out.append(Effect(v, None, None, why))
    adjusted = stats.holm([e.comparison.p_value if e.comparison else None for e in out])
    for e, p_adj in zip(out, adjusted):
        e.p_holm = p_adj
    return out


def effects_table(study: StudyRuns, baseline: str, found: list[Effect] | None = None) -> Table:
    """The effects (`found`, else computed here) as a table."""
    ci = f"{100 * stats.CONFIDENCE:.0f}%"
    columns = [
        "variant",
        "what differs from the baseline",
        "seeds paired",
        "Δ test acc (points)",
        f"{ci} CI (points)",
        "p",
        "p (Holm)",
        "per-seed Δ (McNemar p)",
    ]
    rows, bold = [], set()
    found = effects(study, baseline) if found is None else found
    for i, e in enumerate(found):
        head, c = [label(study, e.variant), what_differs(study, e.variant, baseline)], e.comparison
        if c is None:
            unfinished = not study.done(e.variant)
            rows.append(head + ["—" if unfinished else e.note, "—", "—", "—", "—", status(study, e.variant)])
            continue
        rows.append(
            head
            + [
                f"1 vs {c.n_seeds_b} (seed mean)" if c.n_seeds_b > c.n_seeds else str(c.n_seeds),
                f"{100 * c.diff:+.2f}",
                f"{100 * c.ci_low:+.2f} to {100 * c.ci_high:+.2f}" + mark(c),
                fmt_p(c.p_value),
                fmt_p(e.p_holm),
                "; ".join(f"{100 * d:+.2f} ({fmt_p(p)})" for d, p in zip(c.per_seed_diff, c.mcnemar_p)),
            ]
        )
        if c.significant(p_adjusted=e.p_holm):
            bold |= {(i, 3), (i, 6)}
    comparisons = [e.comparison for e in found]
    adjusted = [e.p_holm for e in found]
    tested = sum(p is not None for p in adjusted)
    caption = (
        f"Change in test accuracy against '{baseline}'. The seed is the unit of replication: seed s of a "
        f"variant is paired with seed s of the baseline (same split, same test images). Δ is the mean "
        "of the per-seed differences; its interval is a Student t interval over the seeds whose standard "
        "error adds the test-set noise that all seeds share, so it covers training (seed) variance and "
        "test-set sampling, and is never below what the test images alone imply. p: two-sided paired t-test "
        "over seeds; p (Holm): adjusted by Holm's step-down "
        f"method for the {tested} seed-level comparisons in this table. Bold: Holm-adjusted p < 0.05. "
        "Per-seed McNemar p-values are shown for reference only; the verdict never rests on them."
    )
    notes = [NOTES[m] for m in ("†", "‡") if any(c and mark(c) == f" {m}" for c in comparisons)]
    return Table(
        "effects", caption, columns, rows, bold, notes=notes, align="lllrrrrl", wrap={0: "2.6cm", 1: "3cm", 7: "4cm"}
    )


def per_class_table(study: StudyRuns, variant: str) -> Table:
    runs = study.done(variant)
    per_class = [pd.DataFrame([c.model_dump(by_alias=True) for c in r.metrics.test.per_class]) for r in runs]
    rows = []
    for i, c in enumerate(per_class[0]["class"]):
        cells = [fmt_mean_std([100 * pc.loc[i, k] for pc in per_class], 2) for k in ("precision", "recall", "f1")]
        rows.append([str(c)] + cells + [str(int(per_class[0].loc[i, "support"]))])
    return Table(
        "per_class",
        f"Per-class test metrics of '{variant}' (mean ± std over {len(runs)} seed(s)); the "
        "variant is the one with the best mean validation accuracy unless chosen by name.",
        ["class", "precision (%)", "recall (%)", "F1 (%)", "support"],
        rows,
        align="lrrrr",
    )
