import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.report import describe, figures, load_runs, pages, references, tables
from bench.stats import mcnemar_exact
from tests import helpers
from tests.helpers import TINY, write_manifest

N_TEST = 300
LABELS = np.random.default_rng(123).integers(0, 3, N_TEST)


def write_run(root, run_id, variant, seed, p_correct, labels=LABELS, **kw):
    return helpers.write_run(root, run_id, variant, seed, p_correct, labels=labels, **kw)


@pytest.fixture
def store(tmp_path):
    """baseline and two ablations x 3 seeds, plus a failed, a pending and a damaged variant."""
    root = tmp_path / "results"
    variants = []
    for name, p, freeze, overrides in (
        ("baseline", 0.80, "backbone", {}),
        ("freeze=none", 0.90, "none", {"model.freeze": "none"}),
        ("lr=0.01", 0.70, "backbone", {"train.lr": 0.01}),
    ):
        for seed in range(3):
            run_id = f"{name.replace('=', '-').replace('.', '')}-{seed}"
            write_run(
                root,
                run_id,
                name,
                seed,
                p + 0.01 * seed,
                freeze=freeze,
                lr=overrides.get("train.lr", 0.001),
                seconds=300.0 if freeze == "none" else 100.0,
            )
            variants.append((name, seed, run_id, overrides))
    failed = root / "runs" / "failed-0"
    failed.mkdir(parents=True)
    (failed / "status.json").write_text(
        json.dumps({"state": "failed", "error": "diverged", "detail": "loss is nan at epoch 1"})
    )
    damaged = write_run(root, "damaged-0", "broken", 0, 0.99)
    (damaged / "metrics.json").write_text("{ not json")
    truncated = write_run(root, "truncated-0", "cut", 0, 0.99)
    lines = (truncated / "predictions.csv").read_text().splitlines()
    (truncated / "predictions.csv").write_text("\n".join(lines[:50]))  # a copy cut off mid-way
    variants += [
        ("diverges", 0, "failed-0", {"train.lr": 10}),
        ("later", 0, "pending-0", {"train.epochs": 99}),
        ("broken", 0, "damaged-0", {"train.epochs": 3}),
        ("cut", 0, "truncated-0", {"train.epochs": 4}),
    ]
    write_manifest(root, "ablations", variants)
    return root


def metrics_of(root, run_ids):
    return [json.loads((root / "runs" / r / "metrics.json").read_text()) for r in run_ids]


def md_row(text, variant):
    line = next(row for row in text.splitlines() if row.startswith(f"| {variant} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_tables_match_the_stored_metrics(store, tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    results = (out / "ablations" / "tables" / "results.md").read_text()
    header = md_row(results, "variant")
    for name, stem, best in (("baseline", "baseline", False), ("freeze=none", "freeze-none", True)):
        row = dict(zip(header, md_row(results, name)))
        ms = metrics_of(store, [f"{stem}-{s}" for s in range(3)])
        acc = 100 * np.array([m["test"]["accuracy"] for m in ms])
        f1 = 100 * np.array([m["test"]["f1_macro"] for m in ms])
        val = 100 * np.array([m["best_val_acc"] for m in ms])
        assert row["test acc (%)"] == f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}"  # never ranked on test
        assert row["F1 (%)"] == f"{f1.mean():.2f} ± {f1.std(ddof=1):.2f}"
        expected = f"{val.mean():.2f} ± {val.std(ddof=1):.2f}"
        assert row["val acc (%)"] == (f"**{expected}**" if best else expected)  # chosen on validation, clear lead
        assert row["runs"] == "3 done" and row["chosen on val from"] == "2 epochs"
    assert dict(zip(header, md_row(results, "freeze=none")))["what differs from the baseline"] == "model.freeze=none"
    assert results.count("**") == 2  # one cell: nothing else is ranked
    # failed, pending and damaged variants are listed, not dropped
    assert md_row(results, "diverges")[3] == "failed: diverged: loss is nan at epoch 1"
    assert md_row(results, "later")[3] == "1 pending"
    assert md_row(results, "broken")[3:5] == ["damaged: metrics.json missing or unreadable", "—"]
    assert md_row(results, "cut")[3] == "damaged: predictions.csv missing or unreadable"
    err = capsys.readouterr().err
    assert "damaged-0" in err and "metrics.json missing or unreadable" in err
    assert "truncated-0" in err and "49 rows, but metrics.json says 300 test images" in err
    assert "damaged-0" in (out / "ablations" / "report.md").read_text()  # and on the page


def test_effects_table_pairs_seeds_and_adjusts_for_the_comparisons(store, tmp_path):
    study = load_runs(store, "ablations")
    table = tables.effects_table(study, "baseline")
    row = dict(zip(table.columns, next(r for r in table.rows if r[0] == "lr=0.01")))
    base = [pd.read_csv(store / "runs" / f"baseline-{s}" / "predictions.csv") for s in range(3)]
    var = [pd.read_csv(store / "runs" / f"lr-001-{s}" / "predictions.csv") for s in range(3)]
    acc = lambda p: (p.pred == p.label).mean()  # noqa: E731
    per_seed = [100 * (acc(v) - acc(b)) for v, b in zip(var, base)]  # seed s against seed s
    assert row["seeds paired"] == "3"
    assert row["Δ test acc (points)"] == f"{np.mean(per_seed):+.2f}"
    low, high = (float(x) for x in row["95% CI (points)"].split(" to "))
    assert low <= np.mean(per_seed) <= high and high - low > 1  # 3 seeds of 300 images cannot pin it to a point
    # the p-value is the paired t-test's over seeds, not McNemar's on one seed
    won = int(((var[0].pred == var[0].label) & (base[0].pred != base[0].label)).sum())
    lost = int(((var[0].pred != var[0].label) & (base[0].pred == base[0].label)).sum())
    assert row["per-seed Δ (McNemar p)"].startswith(f"{per_seed[0]:+.2f} (")
    assert f"({float(f'{mcnemar_exact(won, lost):.2g}'):.2g})" in row["per-seed Δ (McNemar p)"].split(";")[0]
    # Holm: two seed-level comparisons (freeze=none, lr=0.01); the smaller p doubles, the larger is at least it
    p = {r[0]: float(r[5]) for r in table.rows if r[0] in ("freeze=none", "lr=0.01")}
    p_holm = {r[0]: float(r[6]) for r in table.rows if r[0] in ("freeze=none", "lr=0.01")}
    first = min(p, key=p.get)
    assert p_holm[first] == pytest.approx(min(1, 2 * p[first]), rel=0.05)
    assert p_holm[max(p, key=p.get)] >= p_holm[first]
    i = next(i for i, r in enumerate(table.rows) if r[0] == "lr=0.01")
    assert ((i, 3) in table.bold) == (p_holm["lr=0.01"] < 0.05)  # bold exactly when the adjusted test holds
    assert {r[0] for r in table.rows} == {"freeze=none", "lr=0.01", "diverges", "later", "broken", "cut"}


def test_a_single_seed_is_never_marked_significant(tmp_path):
    root = tmp_path / "results"
    labels = np.zeros(2000, dtype=int)
    write_run(root, "b-0", "baseline", 0, 0.5, labels=labels)
    write_run(root, "v-0", "better", 0, 0.9, labels=labels)  # 40 points better, on one seed
    write_manifest(root, "one", [("baseline", 0, "b-0", {}), ("better", 0, "v-0", {"train.lr": 1})])
    table = tables.effects_table(load_runs(root, "one"), "baseline")
    (row,) = table.rows
    assert row[2] == "1" and row[4].endswith("†") and row[5] == "—" and not table.bold
    assert "test-set noise only" in table.notes[0]


def test_a_one_seed_variant_is_set_against_the_baseline_seed_mean(tmp_path):
    root = tmp_path / "results"
    labels = np.zeros(2000, dtype=int)
    for seed, p in enumerate((0.60, 0.50, 0.52)):  # seed 0 is the baseline's luckiest
        write_run(root, f"b-{seed}", "baseline", seed, p, labels=labels)
    write_run(root, "v-0", "one-seed", 0, 0.56, labels=labels)
    runs = [("baseline", s, f"b-{s}", {}) for s in range(3)] + [("one-seed", 0, "v-0", {"train.lr": 1})]
    write_manifest(root, "one-vs-three", runs)
    study = load_runs(root, "one-vs-three")
    table = tables.effects_table(study, "baseline")
    row = dict(zip(table.columns, table.rows[0]))
    acc = lambda run_id: json.loads((root / "runs" / run_id / "metrics.json").read_text())["test"]["accuracy"]  # noqa: E731
    mean_b = np.mean([acc(f"b-{s}") for s in range(3)])
    assert row["seeds paired"] == "1 vs 3 (seed mean)"
    assert row["Δ test acc (points)"] == f"{100 * (acc('v-0') - mean_b):+.2f}"  # not against seed 0's 60%
    assert row["95% CI (points)"].endswith("‡") and row["p"] == "—" and not table.bold
    low, high = (float(x) for x in row["95% CI (points)"].rstrip(" ‡").split(" to "))
    assert high - low > 2 * 4.3 * np.std([acc(f"b-{s}") for s in range(3)], ddof=1) * 100  # the seed spread, t(2)
    assert "mean of the baseline's seeds" in table.notes[0] and len(table.rows[0][7].split(";")) == 3
    assert r"\ddag{}" in table.latex()


def test_per_class_table_and_references_use_the_variants_best_on_validation(store):
    study = load_runs(store, "ablations")
    assert describe.best_variant(study) == "freeze=none"
    table = tables.per_class_table(study, "freeze=none")
    ms = metrics_of(store, [f"freeze-none-{s}" for s in range(3)])
    recall_dog = 100 * np.array([m["test"]["per_class"][1]["recall"] for m in ms])
    dog = dict(zip(table.columns, table.rows[1]))
    assert dog["class"] == "dog" and dog["recall (%)"] == f"{recall_dog.mean():.2f} ± {recall_dog.std(ddof=1):.2f}"
    assert dog["support"] == str(int((LABELS == 1).sum()))
    assert describe.best_by_kind(study) == {"frozen": "baseline", "fine-tuned": "freeze=none"}
    refs = references.references_table(study)
    col = {c: i for i, c in enumerate(refs.columns)}
    lab = next(r for r in refs.rows if r[0] == "Lab report")
    assert [lab[col[c]] for c in ("train acc (%)", "val acc (%)", "test acc (%)")] == ["80–85", "75–82", "78–85"]
    r50 = next(r for r in refs.rows if r[1].startswith("ResNet-50") and "10-crop" in r[col["evaluated on"]])
    assert r50[col["error (%)"]] == "22.85 top-1 / 6.71 top-5" and r50[col["where"]] == "Table 3, p. 775"
    ours = [r for r in refs.rows if r[0] == "this study"]
    assert [r[1] for r in ours] == [
        "frozen, chosen on validation (best by 10.00 points): baseline",  # validation: 80% against lr=0.01's 70%
        "fine-tuned, chosen on validation (best): freeze=none",  # the only one of its kind
    ]
    assert [r[col["vs the lab's recipe"]] for r in ours] == ["the lab's recipe", "model.freeze=none"]


def test_selection_uses_validation_even_when_test_disagrees(tmp_path):
    root = tmp_path / "results"
    for name, p, val in (("baseline", 0.6, None), ("best-on-test", 0.9, 0.5), ("best-on-val", 0.7, 0.8)):
        write_run(root, f"{name}-0", name, 0, p)
        if val is not None:  # a run whose validation accuracy disagrees with its test accuracy
            m = json.loads((root / "runs" / f"{name}-0" / "metrics.json").read_text())
            m["best_val_acc"] = val
            (root / "runs" / f"{name}-0" / "metrics.json").write_text(json.dumps(m))
    write_manifest(root, "sel", [(n, 0, f"{n}-0", {}) for n in ("baseline", "best-on-test", "best-on-val")])
    study = load_runs(root, "sel")
    assert describe.best_variant(study) == "best-on-val"
    assert describe.best_by_kind(study) == {"frozen": "best-on-val"}
    table = tables.results_table(study, "baseline")
    i = [r[0] for r in table.rows].index("best-on-val")
    assert table.bold == {(i, table.columns.index("val acc (%)"))} and "bold: 'best-on-val'" in table.caption


def set_metrics(root, run_id, **values):
    m = json.loads((root / "runs" / run_id / "metrics.json").read_text())
    m.update(values)
    (root / "runs" / run_id / "metrics.json").write_text(json.dumps(m))


def set_config(root, run_id, section, **values):
    m = json.loads((root / "runs" / run_id / "config.json").read_text())
    m["config"].setdefault(section, {}).update(values)
    (root / "runs" / run_id / "config.json").write_text(json.dumps(m))


def test_a_validation_lead_within_the_noise_is_not_called_best(tmp_path):
    root = tmp_path / "results"
    for name, val in (("baseline", 0.800), ("a", 0.805), ("b", 0.70)):
        write_run(root, f"{name}-0", name, 0, 0.8)
        set_metrics(root, f"{name}-0", best_val_acc=val)  # 5,000 validation images: ±1.11 points at 80%
    write_manifest(root, "close", [(n, 0, f"{n}-0", {}) for n in ("baseline", "a", "b")])
    study = load_runs(root, "close")
    choice = describe.choose(study, study.variants)
    assert (choice.variant, choice.runner_up) == ("a", "baseline") and choice.lead == pytest.approx(0.5)
    assert choice.noise == pytest.approx(100 * 1.96 * np.sqrt(0.805 * 0.195 / 5000)) and not choice.clear
    table = tables.results_table(study, "baseline")
    assert not table.bold and "nothing in bold" in table.caption and "within the ±1.10 noise" in table.caption
    ours = next(r for r in references.references_table(study).rows if r[0] == "this study")
    assert ours[1].startswith("frozen, chosen on validation (highest (by 0.50 points over baseline, within the ±1.10")
    assert "best" not in ours[1]


def test_probe_rows_count_their_settings_as_candidates(tmp_path):
    root = tmp_path / "results"
    write_run(root, "b-0", "baseline", 0, 0.8)
    write_run(root, "k-0", "knn", 0, 0.8)
    write_run(root, "l-0", "last", 0, 0.8)
    set_config(root, "k-0", "model", head={"kind": "knn"})
    set_metrics(root, "k-0", epochs=33)  # 32 (k, T) settings, then the selected one
    set_config(root, "l-0", "train", select="last")
    write_manifest(root, "probes", [(n, 0, f"{n[0]}-0", {}) for n in ("baseline", "knn", "last")])
    table = tables.results_table(load_runs(root, "probes"), "baseline")
    col = table.columns.index("chosen on val from")
    assert [r[col] for r in table.rows] == ["2 epochs", "32 settings", "1 (last epoch)"]
    assert "epochs" not in table.columns


def test_rows_say_how_the_recipe_differs_from_the_labs():
    lab = {
        "data": {"source": "cifar10"},
        "input": {"resolution": 224, "normalize": "unit", "augment": "none"},
        "model": {
            "weights": "torchvision:IMAGENET1K_V1",
            "freeze": "backbone",
            "head": {"hidden": 256, "dropout": 0.5, "norm": False},
        },
        "train": {"optimizer": "adam", "lr": 0.001, "batch_size": 32, "epochs": 5, "schedule": "constant"},
    }
    assert describe.vs_lab(lab) == "the lab's recipe"
    ours = json.loads(json.dumps(lab))
    ours["data"]["source"], ours["input"]["resolution"], ours["model"]["weights"] = "folder", 32, "none"
    ours["model"]["head"]["norm"] = True
    said = describe.vs_lab(ours)
    for words in (
        "another copy of the data",
        "input.resolution=32",
        "random init",
        "BatchNorm added to the lab's head",
    ):
        assert words in said


def test_report_page_links_figures_and_states_provenance(store, tmp_path):
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--format", "md", "--variant", "lr=0.01"]) == 0
    page = (out / "ablations" / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert sorted(links) == [
        "figures/accuracy_vs_time.png",
        "figures/confusion.png",
        "figures/effects.png",
        "figures/learning_curves.png",
    ]
    for link in links:
        assert (out / "ablations" / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "`bench run ablations.yaml`" in page and "CIFAR-10 (test fixture)" in page and "CPU (test)" in page
    assert "- **Hardware:** not recorded" in page  # records from before the hardware was recorded still read
    for name in ("confusion", "effects", "learning_curves", "accuracy_vs_time"):  # each caption: weights and data
        caption = page.split(f"figures/{name}.png)", 1)[1].split("##", 1)[0]
        assert r"Weights and data: pretrained (torchvision:IMAGENET1K\_V1); CIFAR-10." in caption
    assert "Per-class test metrics of 'lr=0.01'" in page
    assert "RANDOM INITIALISATION" not in page  # every run here is pretrained
    assert not list(out.rglob("*.tex")) and not list(out.rglob("*.pdf"))  # --format md only


# CI installs TeX (.ci/run) and must never skip this; elsewhere it runs when pdflatex is there.
@pytest.mark.skipif(
    shutil.which("pdflatex") is None and not os.environ.get("CI"), reason="pdflatex not installed (see .ci/run)"
)
def test_latex_report_compiles(store, tmp_path):
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out), "--format", "tex"]) == 0
    folder = out / "ablations"
    assert (folder / "figures" / "confusion.pdf").read_bytes()[:5] == b"%PDF-"
    assert r"\toprule" in (folder / "tables" / "results.tex").read_text()
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert (folder / "report.pdf").stat().st_size > 10_000


def test_compare_errors_name_the_fix(store, tmp_path, capsys):
    def err(*argv):
        assert main(["compare", *argv, "--results", str(store)]) == 2
        return capsys.readouterr().err.replace("\n", " ")

    assert "did you mean 'baseline'" in err("baselin", "lr=0.01") and "freeze=none" in err("x", "lr=0.01")
    msg = err("baseline", "diverges")
    assert "no finished run (failed: diverged" in msg and "bench run ablations.yaml" in msg
    write_run(store, "other-0", "fewer-images", 0, 0.8, labels=LABELS[:200], limit_test=200)
    study = json.loads((store / "studies" / "ablations.json").read_text())
    study["variants"].append({"name": "fewer-images", "seed": 0, "run_id": "other-0", "overrides": {}})
    (store / "studies" / "ablations.json").write_text(json.dumps(study))
    assert "different test images (data.limit_test None vs 200" in err("baseline", "fewer-images")
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "r"), "--format", "nope"]) == 2
    assert "unknown --format nope" in capsys.readouterr().err


def test_one_unreadable_study_does_not_stop_the_others(store, tmp_path, capsys):
    (store / "studies" / "zzz.json").write_text("not json")
    assert main(["report", "--results", str(store), "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    assert "study zzz skipped" in capsys.readouterr().err
    assert (tmp_path / "r" / "ablations" / "report.md").exists()
    assert main(["report", "--results", str(tmp_path / "empty")]) == 2
    assert "bench run STUDY.yaml" in capsys.readouterr().err


def test_real_pipeline_report_and_compare(write_study, tmp_path, capsys):
    """Tiny real runs (random init, digits at 16 px): the store the pipeline writes is what report reads."""
    path = write_study({"study": "tiny", "defaults": TINY, "ablate": {"train.lr": [0.01]}})
    results, out = tmp_path / "results", tmp_path / "reports"
    assert main(["run", str(path), "--results", str(results)]) == 0
    capsys.readouterr()
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    page = (out / "tiny" / "report.md").read_text()
    assert "RANDOM INITIALISATION" in page and r"baseline \[random init\]" in page  # escaped: shown literally
    assert "- **Hardware:** CPU " in page and "GPU none" in page and "sklearn digits" in page
    assert main(["compare", "lr=0.01", "baseline", "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    spec = json.loads((results / "studies" / "tiny.json").read_text())
    accs = {}
    for v in spec["variants"]:
        m = json.loads((results / "runs" / v["run_id"] / "metrics.json").read_text())
        accs.setdefault(v["name"], []).append(m["test"]["accuracy"])
        assert m["hardware"]["gpu"] == "none" and m["hardware"]["cpu"]  # where the run's numbers came from
        assert m["hardware"]["isa"].startswith(torch.backends.cpu.get_cpu_capability())
    for name in ("lr=0.01", "baseline"):
        assert f"{100 * np.mean(accs[name]):.2f}" in printed
    assert "paired t over seeds" in printed and "McNemar" in printed and "60 test images" in printed


def test_runs_on_other_images_are_labelled_and_never_paired(tmp_path):
    root = tmp_path / "results"
    for seed in range(2):
        write_run(root, f"b-{seed}", "baseline", seed, 0.6)
        write_run(root, f"n-{seed}", "new-images", seed, 0.7, data_fp="cifar10:other")
    write_manifest(root, "mixed", [(n, s, f"{n[0]}-{s}", {}) for n in ("baseline", "new-images") for s in range(2)])
    study = load_runs(root, "mixed")
    rows = {r[0]: r for r in tables.results_table(study, "baseline").rows}
    assert "new-images [other data: cifar10:other]" in rows and "baseline" in rows
    (row,) = tables.effects_table(study, "baseline").rows
    assert row[2] == "different test images"  # never compared as if on the same images


def test_the_depth_axis_gets_its_table_and_figure(tmp_path):
    root = tmp_path / "results"
    variants = []
    for name, arch, p in (("baseline", "resnet50", 0.7), ("arch=resnet18", "resnet18", 0.6)):
        for seed in range(2):
            write_run(root, f"{arch}-{seed}", name, seed, p)
            m = json.loads((root / "runs" / f"{arch}-{seed}" / "config.json").read_text())
            m["config"]["model"]["arch"] = arch
            (root / "runs" / f"{arch}-{seed}" / "config.json").write_text(json.dumps(m))
            variants.append((name, seed, f"{arch}-{seed}", {}))
    write_manifest(root, "depth", variants)
    table = references.depth_table(load_runs(root, "depth"), "baseline")
    rows = {r[1]: dict(zip(table.columns, r)) for r in table.rows}
    assert rows["resnet18"]["He et al. top-1 error (%)"].startswith("27.88 (ResNet-18, Table 2, p. 774)")
    assert rows["resnet50"]["He et al. top-1 error (%)"].startswith("22.85 (ResNet-50, Table 3, p. 775)")
    assert rows["resnet50"]["weights' top-1 (%)"] == "76.13"  # torchvision's documented IMAGENET1K_V1 accuracy
    out = tmp_path / "reports"
    assert main(["report", "--results", str(root), "--out", str(out), "--format", "md"]) == 0
    page = (out / "depth" / "report.md").read_text()
    assert "## Accuracy against depth" in page and "figures/depth.png" in page
    assert (out / "depth" / "figures" / "depth.png").read_bytes()[:4] == b"\x89PNG"
    assert "CIFAR-10 test acc (%)" in table.columns and "against the ImageNet top-1 error" in page
    for run_id in ("resnet50-0", "resnet50-1", "resnet18-0", "resnet18-1"):  # the same study, random init
        set_config(root, run_id, "model", weights="none")
        set_config(root, run_id, "data", source="cifar100")
        set_metrics(root, run_id, pretrained=False, weights="random init (no pretraining)")
    assert main(["report", "--results", str(root), "--out", str(out), "--format", "md"]) == 0
    page = (out / "depth" / "report.md").read_text()
    caption = page.split("figures/depth.png)", 1)[1]
    assert "against its number of layers" in caption and "RANDOM INIT (resnet50, resnet18)" in caption
    assert "not transfer" in caption and "ImageNet top-1 error He" not in caption
    assert "CIFAR-100 test acc (%)" in page and "CIFAR-10 test acc" not in page
    for run_id in ("resnet50-0", "resnet50-1", "resnet18-0", "resnet18-1"):  # weights from files: not ImageNet's
        set_config(root, run_id, "model", weights="file:/w/backbone.safetensors")
        set_metrics(root, run_id, pretrained=True, weights="file backbone.safetensors")
    assert main(["report", "--results", str(root), "--out", str(out), "--format", "md"]) == 0
    page = (out / "depth" / "report.md").read_text()
    assert "figures/depth.png" not in page and "against the ImageNet top-1 error" not in page


def test_the_compute_frontier_is_chosen_on_validation():
    points = pd.DataFrame(
        {
            "variant": ["cheap", "lucky-on-test", "dear", "dearer"],
            "tmacs": [1.0, 2.0, 3.0, 4.0],
            "acc": [50.0, 70.0, 60.0, 55.0],  # test
            "val": [50.0, 49.0, 62.0, 61.0],
        }
    )
    assert figures.cheapest_on_validation(points) == ["cheap", "dear"]


def test_made_with_names_the_weights_and_the_data_sets_title(store, tmp_path):
    assert describe.made_with(load_runs(store, "ablations")) == "pretrained (torchvision:IMAGENET1K_V1); CIFAR-10"
    root = tmp_path / "results"
    write_run(root, "f-0", "baseline", 0, 0.8, weights="none")
    set_config(root, "f-0", "data", source="folder")
    set_metrics(root, "f-0", dataset="image folder /data/cifar10-jpeg.tar.gz")
    write_manifest(root, "folder", [("baseline", 0, "f-0", {})])
    made = describe.made_with(load_runs(root, "folder"))
    assert made == "random init (no pretraining); image folder /data/cifar10-jpeg.tar.gz"


def test_provenance_shows_each_runs_hardware(store):
    set_metrics(store, "baseline-0", hardware={"cpu": "AMD EPYC", "isa": "AVX512 (avx2 avx512f)", "gpu": "none"})
    got = dict(pages.provenance(load_runs(store, "ablations")))["Hardware"]
    assert got.startswith("not recorded (") and "CPU AMD EPYC (AVX512 (avx2 avx512f)), GPU none (1 run)" in got


def test_the_forest_plot_draws_the_effects_as_computed(store, tmp_path):
    from bench.report import effects_plot

    write_run(store, "one-0", "one seed", 0, 0.85)
    manifest = json.loads((store / "studies" / "ablations.json").read_text())
    manifest["variants"].append({**manifest["variants"][0], "name": "one seed", "seed": 0, "run_id": "one-0"})
    (store / "studies" / "ablations.json").write_text(json.dumps(manifest))
    study = load_runs(store, "ablations")
    found = tables.effects(study, "baseline")
    points = effects_plot.forest_points(found, study)
    compared = [e for e in found if e.comparison is not None]
    assert [p.variant for p in points] == [e.variant for e in compared]
    assert [p.diff for p in points] == pytest.approx([100 * e.comparison.diff for e in compared])
    assert [x for p in points for x in (p.low, p.high)] == pytest.approx(
        [100 * x for e in compared for x in (e.comparison.ci_low, e.comparison.ci_high)]
    )
    for p, e in zip(points, compared):
        assert (p.significant, p.seed_level) == (e.comparison.significant(p_adjusted=e.p_holm), e.comparison.seed_level)
    by = {p.variant: p for p in points}
    assert by["freeze=none"].seed_level and not by["one seed"].seed_level and not by["one seed"].significant
    points.append(effects_plot.Point("clear", 5.0, 4.0, 6.0, significant=True, seed_level=True))
    fig = effects_plot.forest(points, "baseline", "w; d")
    dots = [line for line in fig.axes[0].lines if line.get_gid() == "delta"]
    assert [float(d.get_xdata()[0]) for d in dots] == pytest.approx([p.diff for p in points])
    for d, p in zip(dots, points):  # filled: a seed-level comparison; red: significant after Holm
        assert (d.get_markerfacecolor() == d.get_color()) == p.seed_level
        assert (d.get_color() == "C3") == p.significant
    caption = effects_plot.effects_figure(study, "baseline", tmp_path / "effects", {"md", "tex"})
    assert "hollow: one seed (one seed)" in caption and "Weights and data: pretrained" in caption
    assert (tmp_path / "effects.png").exists() and (tmp_path / "effects.pdf").exists()
    out = tmp_path / "reports"
    assert main(["report", "--results", str(store), "--out", str(out)]) == 0
    page = (out / "ablations" / "report.md").read_text()
    effects_section = page.split("## Ablation effects", 1)[1].split("## ", 1)[0]
    assert "![ablation effects](figures/effects.png)" in effects_section
    assert "figures/effects.pdf" in (out / "ablations" / "report.tex").read_text()


def test_learning_curves_in_percent_with_seed_bands_and_the_tested_epoch(store, tmp_path):
    from bench.report import curves

    study = load_runs(store, "ablations")
    data = curves.curve_data(study)
    base = data["baseline"]
    accs = [100 * r.history["val_acc"] for r in study.done("baseline")]
    assert base.seeds == 3 and base.tested == [2]
    assert list(base.mean["val_acc"]) == pytest.approx(list(sum(accs) / 3))
    assert list(base.high["val_acc"]) == pytest.approx(list(np.max(accs, axis=0)))
    fig = curves.learning_curves(data, "baseline", "w; d", tmp_path / "lc", {"md"})
    val = fig.axes[3]
    assert val.get_ylim()[1] > 50  # percent, not a 0-1 fraction
    assert val.lines[-2].get_color() == "black" and val.lines[-2].get_linewidth() > val.lines[0].get_linewidth()
    stars = [line for line in val.lines if line.get_gid() == "tested"]
    assert [list(s.get_xdata()) for s in stars] == [c.tested for c in data.values() if c.variant != "baseline"] + [[2]]
    assert len(val.collections) == len(data)  # a seed band per variant with several seeds
    caption = curves.curves_caption(data, "baseline", "w; d")
    assert "accuracy (%)" in caption and "lowest to the highest seed" in caption and "tested" in caption


def test_facts_every_row_shares_go_to_the_results_caption(store):
    for run in (store / "runs").iterdir():
        if (run / "config.json").exists():
            set_config(store, run.name, "data", source="cifar100")
            set_config(store, run.name, "train", epochs=3)
    study = load_runs(store, "ablations")
    table = tables.results_table(study, "baseline")
    column = table.columns.index("vs the lab's recipe")
    shared = describe.lab_differences(study.config("baseline"))
    assert len(shared) == 2 and "Every row differs from the lab's recipe in: " + ", ".join(shared) in table.caption
    for fact in shared:
        assert table.caption.count(fact) == 1
        assert not any(fact in row[column] for row in table.rows)
    rows = {r[0]: r[column] for r in table.rows}
    assert rows["baseline"] == "nothing else" and rows["freeze=none"] not in ("", "nothing else")
    assert "vs the lab" in table.latex() and "nothing else" in table.markdown()


def test_the_depth_figure_has_a_series_per_head(tmp_path):
    root = tmp_path / "results"
    variants = []
    for arch, shift in (("resnet18", 0.05), ("resnet50", 0.0), ("resnet101", -0.05)):
        for kind, p in (("mlp", 0.6), ("logreg", 0.65), ("knn", 0.5)):
            name = "baseline" if (arch, kind) == ("resnet50", "mlp") else f"{arch},{kind}"
            for seed in range(2):
                run_id = f"{arch}-{kind}-{seed}"
                write_run(root, run_id, name, seed, p + shift, weights="none")
                set_config(root, run_id, "model", arch=arch, head={"kind": kind})
                set_metrics(root, run_id, pretrained=False, weights="random init (no pretraining)")
                variants.append((name, seed, run_id, {}))
    write_manifest(root, "depth", variants)
    study = load_runs(root, "depth")
    assert len(references.depth_rows(study, "baseline")) == 3  # the table: the lab's head only
    rows = references.depth_rows(study, "baseline", heads=True)
    assert sorted({r["head"] for r in rows}) == ["knn", "logreg", "mlp"] and len(rows) == 9
    out = tmp_path / "reports"
    assert main(["report", "--results", str(root), "--out", str(out), "--format", "md"]) == 0
    page = (out / "depth" / "report.md").read_text()
    assert "One series per head (model.head.kind): mlp, logreg, knn" in page.split("figures/depth.png)", 1)[1]
    captured = {}
    real = figures.new_figure
    figures.new_figure = lambda *a: captured.setdefault("fig", real(*a))
    try:
        figures.depth_figure(rows, "w; d", "CIFAR-10", tmp_path / "depth", {"md"})
    finally:
        figures.new_figure = real
    fig = captured["fig"]
    series = {c.get_label(): c for c in fig.axes[0].containers}
    assert sorted(series) == ["head: knn", "head: logreg", "head: mlp (the lab's)"]
    line = series["head: logreg"].lines[0]
    assert list(line.get_xdata()) == [18, 50, 101]
    assert list(line.get_ydata()) == pytest.approx(
        [
            np.mean(r["acc"])
            for r in sorted((r for r in rows if r["head"] == "logreg"), key=lambda r: r["arch"][6:].zfill(3))
        ]
    )
