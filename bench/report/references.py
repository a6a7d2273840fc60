"""The references table: He et al. (CVPR 2016) and the lab report beside this study's best
variants, each row with its source and how its recipe differs from the lab's."""

from __future__ import annotations

from bench.config import WeightsSpec
from bench.report.describe import choice_words, choices_by_kind, data_title, label, references, vs_lab
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
                        f"{r['top1_error']:.2f} top-1"
                        + (f" / {r['top5_error']:.2f} top-5" if "top5_error" in r else ""),
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
    for kind, choice in choices_by_kind(study).items():
        variant = choice.variant
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
                f"{kind}, chosen on validation ({choice_words(choice)}): {label(study, variant)}",
                vs_lab(study.config(variant)),
                data_title(runs[0]),
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
        "This study: the variant of each kind with the highest mean validation accuracy, never chosen by test "
        "accuracy, and called best only when it leads the next by more than the noise of one validation accuracy "
        "(95% binomial interval); train and validation accuracy at the last epoch (as Keras prints them), test "
        "accuracy of the selected epoch; mean ± std over seeds.",
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
        wrap={0: "2.4cm", 1: "4.4cm", 2: "7.5cm", 3: "3cm", 6: "2.6cm", 7: "2.6cm", 8: "2cm"},
    )


# torchvision arch -> the paper's row for it, 10-crop top-1 error: Table 2 (option A shortcuts) for
# the 18/34-layer nets, Table 3 (option B, as torchvision builds them) for 34 and deeper.
PAPER_ROWS = {
    "resnet18": ("imagenet_depth", "ResNet-18"),
    "resnet34": ("imagenet_10crop", "ResNet-34 B"),
    "resnet50": ("imagenet_10crop", "ResNet-50"),
    "resnet101": ("imagenet_10crop", "ResNet-101"),
    "resnet152": ("imagenet_10crop", "ResNet-152"),
    # He et al.'s CIFAR ResNets: Table 6's CIFAR-10 test error (no ImageNet row exists for them)
    **{f"cifar_resnet{d}": ("cifar10", f"ResNet-{d}") for d in (20, 32, 44, 56, 110)},
}


def documented_top1(arch: str, weights: str) -> float | None:
    """The ImageNet top-1 accuracy (%) torchvision documents for these weights (their enum's meta)."""
    spec = WeightsSpec.parse(weights)
    if spec.kind != "torchvision" or arch.startswith("timm:"):
        return None
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)[spec.tag]
        return float(enum.meta["_metrics"]["ImageNet-1K"]["acc@1"])
    except (KeyError, ValueError):
        return None


def depth_rows(study: StudyRuns, baseline: str | None, heads: bool = False) -> list[dict]:
    """The variants that differ from the baseline in model.arch alone (and the baseline): one row each; with
    `heads`, also those that differ in model.head too (a probe on each depth), each row naming its head's kind."""
    base = study.config(baseline) if baseline else None
    rows = []
    for v in study.variants:
        cfg, runs = study.config(v), study.done(v)
        if not (cfg and base and runs):
            continue
        same = {k: x for k, x in cfg.items() if k not in ("model", "seed")} == {
            k: x for k, x in base.items() if k not in ("model", "seed")
        }
        free = ("arch", "weights", "head") if heads else ("arch", "weights")
        model = {k: x for k, x in cfg["model"].items() if k not in free}
        if not same or model != {k: x for k, x in base["model"].items() if k not in free}:
            continue
        arch, weights = cfg["model"].get("arch", "resnet50"), cfg["model"].get("weights", "")
        table, name = PAPER_ROWS.get(arch, (None, None))
        paper = (
            next((r for r in references()["he2016"]["tables"][table]["rows"] if r["model"] == name), None)
            if table
            else None
        )
        acc = [100 * r.metrics.test.accuracy for r in runs]
        rows.append(
            {
                "variant": v,
                "arch": arch,
                "weights": weights,
                "paper_model": name,
                "paper_table": table,
                "paper_top1_error": paper.get("top1_error", paper.get("error")) if paper else None,
                "documented_top1": documented_top1(arch, weights),
                "acc": acc,
                "head": (cfg["model"].get("head") or {}).get("kind", "mlp"),
            }
        )
    return rows


def depth_table(study: StudyRuns, baseline: str | None) -> Table | None:
    """Each depth's ImageNet error (He et al.; the loaded weights' documented accuracy) beside this
    study's test accuracy on its data; None unless the study varies model.arch."""
    rows = depth_rows(study, baseline)
    if len({r["arch"] for r in rows}) < 2:
        return None
    data = " / ".join(dict.fromkeys(data_title(r) for row in rows for r in study.done(row["variant"])))
    tables = references()["he2016"]["tables"]
    cells = []
    for r in rows:
        t = tables[r["paper_table"]] if r["paper_table"] else None
        what = " CIFAR-10 test error" if r["paper_table"] == "cifar10" else ""
        paper = (
            f"{r['paper_top1_error']:.2f}{what} ({r['paper_model']}, Table {t['table']}, p. {t['page']})" if t else "—"
        )
        documented = (
            f"{r['documented_top1']:.2f}"
            if r["documented_top1"] is not None
            else ("random init" if r["weights"] == "none" else "not documented")
        )
        cells.append([label(study, r["variant"]), r["arch"], paper, documented, fmt_mean_std(r["acc"], 2)])
    return Table(
        "depth",
        "Depth: the paper's ImageNet top-1 error (10-crop) for each depth, the "
        "ImageNet top-1 accuracy torchvision documents for the weights this study loaded, and this study's "
        f"test accuracy on {data} (mean ± std over seeds). " + references()["he2016"]["citation"],
        ["variant", "arch", "He et al. top-1 error (%)", "weights' top-1 (%)", f"{data} test acc (%)"],
        cells,
        align="llrrr",
        wrap={0: "3cm", 2: "4cm"},
    )
