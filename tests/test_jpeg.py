"""The real images: the shared JPEG copy of CIFAR-10 (all 60,000), end to end through `bench run`."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from bench import data
from bench.cli import main
from bench.config import DataConfig
from tests.helpers import SHARED_JPEG

WEIGHTS = Path(__file__).resolve().parents[1] / "bench" / "weights" / "cifar_resnet20-cifar10-jpeg.safetensors"

pytestmark = [
    pytest.mark.slow,  # all 60,000 real images
    pytest.mark.skipif(not SHARED_JPEG.exists(), reason=f"{SHARED_JPEG} not found"),
]


def test_shared_jpeg_cifar10_loads_whole():
    ds = data.load(DataConfig(source="folder", path=str(SHARED_JPEG)))
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45_000, 5_000, 10_000)
    assert ds.train.x.shape[1:] == (3, 32, 32)
    assert np.bincount(ds.val.y.numpy()).tolist() == [500] * 10
    assert np.bincount(ds.test.y.numpy()).tolist() == [1000] * 10


def test_a_small_study_on_real_images(write_study, tmp_path):
    path = write_study(
        {
            "study": "jpeg",
            "defaults": {
                "data": {"source": "folder", "path": str(SHARED_JPEG), "limit_train": 2000, "limit_test": 1000},
                # bench's own CIFAR ResNet-20 (studies/paper-cifar10-cpu.yaml trained it on the 45,000 training
                # images; these 1,000 test images it never saw), frozen, with a linear head
                "input": {"resolution": 32, "normalize": "pixel-mean"},
                "model": {
                    "arch": "cifar_resnet20",
                    "weights": f"file:{WEIGHTS}",
                    "freeze": "backbone",
                    "head": {"hidden": 0, "dropout": 0.0},
                },
                "train": {"epochs": 2, "batch_size": 64},
            },
        }
    )
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 0
    (run,) = (results / "runs").iterdir()
    pred = pd.read_csv(run / "predictions.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(pred) == 1000 and metrics["dataset"].startswith("image folder")
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy_score(pred.label, pred.pred))
    assert metrics["test"]["f1_macro"] == pytest.approx(f1_score(pred.label, pred.pred, average="macro"))
    # the backbone scored 86.56% on all 10,000 test images with its own head; a head trained on 2,000 images in
    # 2 epochs gets most of that (84.2% here), far beyond chance (10%)
    assert metrics["test"]["accuracy"] > 0.7, metrics["test"]["accuracy"]
    assert binomtest(int(metrics["test"]["accuracy"] * 1000), 1000, 0.1, alternative="greater").pvalue < 1e-6
