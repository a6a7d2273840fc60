"""The offline demo: bench's own CIFAR-10-pretrained ResNet-20 ships with its provenance, and on digits the frozen
pretrained backbone is far above the same network frozen at random init."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import bench
from bench.study import load_study_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "bench" / "weights" / "cifar_resnet20-cifar10-jpeg.safetensors"


def test_shipped_weights_match_their_provenance():
    provenance = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert provenance["sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert provenance["arch"] == "cifar_resnet20" and provenance["study"] == "paper-cifar10-cpu"
    assert provenance["test_accuracy"] > 0.85 and provenance["n_train"] == 45000
    study = load_study_file(ROOT / "studies" / "demo.yaml")
    pretrained = {v.name: v.config.model.weights for v in study.variants}
    assert pretrained["baseline"] == f"file:{WEIGHTS}"
    assert pretrained["random-init-frozen"] == pretrained["random-init-finetuned"] == "none"
    assert pretrained["pretrained-finetuned"] == pretrained["baseline"]


@pytest.mark.slow
def test_pretraining_shows_in_the_demo(tmp_path):
    """The frozen pair only (features computed once, seconds); the fine-tuned pair is measured in docs/measured.md."""
    runs = bench.run(
        ROOT / "studies" / "demo.yaml", only=["baseline", "random-init-frozen"], results=tmp_path, progress=False
    )
    acc = dict(zip(runs["variant"], runs["test_accuracy"]))
    assert acc["baseline"] > acc["random-init-frozen"] + 0.1, acc


def test_pages_name_the_shipped_weights_for_what_they_are():
    from bench.models import describe_weights

    said = describe_weights(f"file:{WEIGHTS}")
    assert said.startswith(
        "pretrained: the backbone (no head) of cifar_resnet20 trained from scratch by bench on CIFAR-10"
    )
    assert "CIFAR-10, the shared JPEG copy" in said and "ImageNet" not in said
    assert describe_weights("file:/nowhere/w.pth") == "pretrained (file:/nowhere/w.pth)"  # no provenance: as given
