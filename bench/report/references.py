"""The references table: He et al. (CVPR 2016) and the lab report beside this study's best
variants, each row with its source and how its recipe differs from the lab's."""

from __future__ import annotations

from bench.report.describe import best_by_kind, label, references, vs_lab
from bench.report.format import Table, fmt_mean_std
from bench.report.runs import StudyRuns


def references_table(study: StudyRuns) -> Table:
    refs = references()
    paper, lab = refs["he2016"], refs["lab_report"]
    rows = []
    for t in paper["tables"].values():
        where = f"Table {t['table']}, p. {t['page']}"
        for r in t["rows"]:
            if "top1_error" in r:
                rows.append(
                    [
                        paper["short"],
                        f"{r['model']} (ImageNet-trained)",
                        t["vs_lab"],
                        t["evaluated_on"],
                        "",
                        "",
                        "",
                        f"{r['top1_error']:.2f} top-1 / {r['top5_error']:.2f} top-5",
                        where,
                    ]
                )
            else:
                model = f"{r['model']} ({r['params_m']}M params, from scratch)"
                acc, err = f"{100 - r['error']:.2f}", f"{r['error']:.2f}"
                if "error_mean" in r:
                    acc += f" (best of {r['runs']}; mean {100 - r['error_mean']:.2f} ± {r['error_std']:.2f})"
                    err += f" ({r['error_mean']:.2f} ± {r['error_std']:.2f})"
                rows.append([paper["short"], model, t["vs_lab"], t["evaluated_on"], "", "", acc, err, where])
    rng = {k: f"{lo}–{hi}" for k, (lo, hi) in lab["accuracy"].items()}
    rows.append(
        [
            lab["short"],
            f"{lab['model']}: {lab['recipe']}",
            "the lab's recipe",
            lab["evaluated_on"],
            rng["train"],
            rng["val"],
            rng["test"],
            "",
            lab["where"] or "page not available",
        ]
    )
    for kind, variant in best_by_kind(study).items():
        runs = study.done(variant)
        train, val, test = (
            [100 * v for v in values]
            for values in zip(
                *[(r.metrics.final_train_acc, r.metrics.final_val_acc, r.metrics.test.accuracy) for r in runs]
            )
        )
        rows.append(
            [
                "this study",
                f"best {kind} (by validation accuracy): {label(study, variant)}",
                vs_lab(study.config(variant)),
                runs[0].metrics.dataset,
                fmt_mean_std(train, 2),
                fmt_mean_std(val, 2),
                fmt_mean_std(test, 2),
                "",
                "results table",
            ]
        )
    checked = {t.get("checked_on") for t in paper["tables"].values() if t.get("page_verified")}
    pages = (
        "Paper pages (CVPR proceedings, pp. 770-778) were checked on "
        + ", ".join(sorted(checked))
        + " against a page-split copy of the CVPR Open Access PDF (see bench/references.yaml)"
        if checked
        else "Paper pages are not checked against the proceedings (see bench/references.yaml)"
    )
    notes = [
        pages + "; the lab report gives ranges.",
        "This study: the best variant of each kind is chosen by mean validation accuracy, never by test "
        "accuracy; train and validation accuracy at the last epoch (as Keras prints them), test accuracy of "
        "the selected epoch; mean ± std over seeds.",
    ]
    return Table(
        "references",
        "This study beside He et al. (CVPR 2016) and the lab report. " + paper["citation"],
        [
            "source",
            "model / recipe",
            "vs the lab's recipe",
            "evaluated on",
            "train acc (%)",
            "val acc (%)",
            "test acc (%)",
            "error (%)",
            "where",
        ],
        rows,
        notes=notes,
        align="llllrrrrl",
        wrap={1: "3.6cm", 2: "3.6cm", 3: "2.6cm", 6: "2.2cm", 7: "2.2cm", 8: "2cm"},
    )
