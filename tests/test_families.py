"""Every backbone family through the whole tool: `bench run`, the feature cache, the probes and `bench report`.

timm's test_* models are the real architectures at toy width (a ConvNeXt and a ViT), random init, so the
run takes seconds and needs no download."""

import json

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from bench.cli import main
from tests.helpers import TINY

ARCHS = ["resnet18", "timm:test_convnext", "timm:test_vit"]


def test_torchvision_and_timm_backbones_run_cache_their_features_and_reach_the_report(write_study, tmp_path):
    defaults = {**TINY, "input": {"resolution": 32}, "train": {**TINY["train"], "epochs": 1}}
    path = write_study(
        {
            "study": "families",
            "defaults": defaults,
            "baseline": False,
            "grid": {"model.arch": ARCHS, "model.head.kind": ["mlp", "logreg", "knn"]},
        }
    )
    results, out = tmp_path / "results", tmp_path / "reports"
    assert main(["run", str(path), "--results", str(results)]) == 0

    runs, predictions = {}, {}
    for d in (results / "runs").iterdir():
        config, metrics = (json.loads((d / f).read_text()) for f in ("config.json", "metrics.json"))
        model = config["config"]["model"]
        runs[model["arch"], model["head"]["kind"]] = metrics
        predictions[model["arch"], model["head"]["kind"]] = pd.read_csv(d / "predictions.csv")
    assert set(runs) == {(a, k) for a in ARCHS for k in ("mlp", "logreg", "knn")}
    for arch in ARCHS:
        # the first run of a backbone computes its features, the two probes after it read them back
        caches = [runs[arch, k]["feature_cache"] for k in ("mlp", "logreg", "knn")]
        assert caches == ["computed", "hit", "hit"], (arch, caches)
        for kind in ("mlp", "logreg", "knn"):
            m, pred = runs[arch, kind], predictions[arch, kind]
            assert m["n_test"] == len(pred) == 60 and len(m["test"]["confusion_matrix"]) == 10
            # the recorded accuracy is that of the recorded predictions (scikit-learn's, computed here again)
            assert m["test"]["accuracy"] == pytest.approx(accuracy_score(pred.label, pred.pred))
            assert sum(map(sum, m["test"]["confusion_matrix"])) == 60

    assert main(["report", "--results", str(results), "--out", str(out), "--format", "md"]) == 0
    table = (out / "families" / "tables" / "results.md").read_text()
    for arch in ARCHS:
        for kind in ("mlp", "logreg", "knn"):
            assert f"arch={arch},kind={kind}".replace("_", r"\_") in table, (arch, kind)  # markdown-escaped
    exported = tmp_path / "runs.csv"
    assert main(["export", "--results", str(results), "--out", str(exported)]) == 0
    frame = pd.read_csv(exported)
    assert sorted(set(frame["config.model.arch"])) == sorted(ARCHS) and len(frame) == 9
    assert frame["test_accuracy"].between(0, 1).all()
