"""A backbone bench trained, exported with its provenance and loaded back as `file:` weights (the demo's path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from bench.cli import main
from bench.infra.record import KEEP_WEIGHTS_MAX
from bench.infra.store import Store
from bench.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]
TINY_CIFAR = {
    "data": {"source": "digits", "val_size": 100, "limit_train": 200, "limit_test": 100},
    "input": {"resolution": 32, "normalize": "pixel-mean", "augment": "flip-crop-zero"},
    "model": {"arch": "cifar_resnet20", "weights": "none", "freeze": "none", "head": {"hidden": 0, "dropout": 0.0}},
    "train": {"optimizer": "sgd", "lr": 0.05, "batch_size": 64, "epochs": 1, "select": "last"},
}


def test_trained_backbone_is_kept_exported_and_loads(tmp_path):
    study = tmp_path / "pretrain.yaml"
    study.write_text(yaml.safe_dump({"study": "pretrain", "defaults": TINY_CIFAR}))
    results = tmp_path / "results"
    assert main(["run", str(study), "--results", str(results)]) == 0
    (run_id,) = [p.name for p in (results / "runs").iterdir()]
    kept = Store(results).weights(run_id)
    assert kept.exists()  # a ResNet-20 (0.27M parameters) is under KEEP_WEIGHTS_MAX
    assert sum(v.numel() for v in load_file(kept).values() if v.is_floating_point()) < KEEP_WEIGHTS_MAX

    out = tmp_path / "weights" / "r20"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_weights.py"), str(results), run_id, str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "100.00% agree" in done.stdout  # the rebuilt network reproduces the run's own predictions
    provenance = json.loads(out.with_suffix(".json").read_text())
    metrics = json.loads((results / "runs" / run_id / "metrics.json").read_text())
    assert provenance["run_id"] == run_id and provenance["test_accuracy"] == metrics["test"]["accuracy"]
    assert provenance["arch"] == "cifar_resnet20" and "--only baseline" in provenance["remake"]

    loaded = build_backbone(f"file:{out.with_suffix('.safetensors')}", "cifar_resnet20").state_dict()
    trained = {k.removeprefix("backbone."): v for k, v in load_file(kept).items() if k.startswith("backbone.")}
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in loaded)

    # and a run on it: the frozen pretrained backbone's weights reach the features unchanged
    transfer = tmp_path / "transfer.yaml"
    cfg = {**TINY_CIFAR, "model": {**TINY_CIFAR["model"], "weights": f"file:{out.with_suffix('.safetensors')}"}}
    cfg["model"]["freeze"] = "backbone"
    cfg["input"] = {**cfg["input"], "augment": "none"}
    transfer.write_text(yaml.safe_dump({"study": "transfer", "defaults": cfg}))
    assert main(["run", str(transfer), "--results", str(results)]) == 0
    runs = {json.loads((p / "config.json").read_text())["study"]: p for p in (results / "runs").iterdir()}
    header = json.loads((runs["transfer"] / "config.json").read_text())
    assert header["identity"]["fingerprints"]["weights"].startswith("sha256:")
    assert json.loads((runs["transfer"] / "metrics.json").read_text())["pretrained"] is True
