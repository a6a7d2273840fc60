"""Test helpers: a tiny real configuration, and finished run records built through bench.infra.record."""

from __future__ import annotations

import importlib
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench.infra.files import write_json
from bench.infra.record import RunHeader, RunMetrics, StudyEntry, StudyManifest
from bench.infra.store import Store
from bench.training.metrics import classification_metrics


def extra_installed(*modules: str) -> bool:
    """Whether an optional extra's modules import; in CI, which installs every extra, a missing one is a broken
    install and fails instead of skipping."""
    try:
        for name in modules:
            importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            raise
        return False
    return True


# The JPEG copy of CIFAR-10 that CI and every developer have beside the checkout.
SHARED_JPEG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# A tiny but real configuration: digits upscaled to 16 px through a random-init ResNet-50.
TINY = {
    "data": {"source": "digits", "val_size": 100, "limit_train": 120, "limit_test": 60},
    "input": {"resolution": 16},
    "model": {"weights": "none", "freeze": "backbone", "head": {"hidden": 32, "dropout": 0.0}},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
}

CLASSES = ["cat", "dog", "frog"]


def write_run(
    root,
    run_id,
    variant,
    seed,
    p_correct,
    *,
    labels,
    freeze="backbone",
    weights="torchvision:IMAGENET1K_V1",
    limit_test=None,
    seconds=100.0,
    lr=0.001,
    correct=None,
    data_fp="cifar10:test",
    arch=None,
):
    """A finished run folder in the store's format, with metrics computed from its predictions.

    `correct` (booleans per test image) fixes which images the run gets right; otherwise each
    image is right with probability `p_correct`, drawn from a seed of (variant, seed)."""
    store = Store(root)
    d = store.run_dir(run_id)
    d.mkdir(parents=True)
    if correct is None:
        rng = np.random.default_rng(zlib.crc32(f"{variant}/{seed}".encode()))
        correct = rng.random(len(labels)) < p_correct
    pred = np.where(correct, labels, (labels + 1) % len(CLASSES))
    config = {
        "data": {"source": "cifar10", "path": None, "limit_test": limit_test, "split_seed": 0},
        "model": {"weights": weights, "freeze": freeze, **({"arch": arch} if arch else {})},
        "train": {"lr": lr},
        "seed": seed,
    }
    fingerprints = {"data": data_fp, "weights": "none" if weights == "none" else "sha256:test"}
    header = RunHeader(
        run_id=run_id, variant=variant, seed=seed, config=config, identity={"fingerprints": fingerprints}
    )
    write_json(d / "config.json", header.model_dump())
    predictions = pd.DataFrame({"index": np.arange(len(labels)), "label": labels, "pred": pred})
    for i, c in enumerate(CLASSES):
        predictions[f"p_{c}"] = (pred == i).astype(float)
    history = [
        {
            "epoch": 1,
            "steps": 100,
            "lr": 1e-3,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "val_loss": 1.1,
            "val_acc": 0.45,
            "seconds": seconds / 2,
            "train_images_per_sec": 1000.0,
        },
        {
            "epoch": 2,
            "steps": 200,
            "lr": 1e-3,
            "train_loss": 0.5,
            "train_acc": p_correct,
            "val_loss": 0.6,
            "val_acc": p_correct - 0.01,
            "seconds": seconds / 2,
            "train_images_per_sec": 1000.0,
        },
    ]
    metrics = RunMetrics(
        test=classification_metrics(labels, pred, CLASSES),
        best_epoch=2,
        best_val_acc=p_correct - 0.01,
        final_train_acc=p_correct + 0.02,
        final_val_acc=p_correct - 0.01,
        epochs=2,
        train_seconds=seconds + seed,
        train_images_per_sec=1000.0 - seed,
        feature_cache="computed",
        weights="random init (no pretraining)" if weights == "none" else f"pretrained ({weights})",
        pretrained=weights != "none",
        dataset="CIFAR-10 (test fixture)",
        n_train=45000,
        n_val=5000,
        n_test=len(labels),
        device="CPU (test)",
        precision="fp32",
        versions={"python": "3.11", "torch": "2.x"},
    )
    store.finish(run_id, history, metrics, predictions)
    return d


def write_manifest(root, name, variants, command="bench run ablations.yaml"):
    """A study manifest naming (variant, seed, run_id, overrides) tuples."""
    manifest = StudyManifest(
        study=name,
        file=f"{name}.yaml",
        description="a test study",
        command=command,
        variants=[StudyEntry(name=n, seed=s, run_id=r, overrides=o) for n, s, r, o in variants],
    )
    write_json(Store(root).study_file(name), manifest.model_dump())


def variants_of(path, overrides=None):
    """A study file's variants with their data and weights fingerprinted (so they have run ids)."""
    from bench.infra.identity import resolve
    from bench.study import load_study_file

    return resolve(load_study_file(path, overrides).variants)[0]
