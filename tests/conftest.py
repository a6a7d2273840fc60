import os
from pathlib import Path

import pytest
import yaml

# huggingface_hub reads this once, at import: tests never wait on its download retries.
os.environ["HF_HUB_OFFLINE"] = "1"

SHARED_JPEG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded images and cached features go to a per-session folder, never ~/.cache."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "bench-cache"))


@pytest.fixture
def write_study(tmp_path):
    """write_study(dict or str) -> path of a study file in tmp_path."""
    def write(content, name="study.yaml"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path
    return write


# A tiny but real configuration: digits upscaled to 16 px through a random-init ResNet-50.
TINY = {
    "data": {"source": "digits", "val_size": 100, "limit_train": 120, "limit_test": 60},
    "input": {"resolution": 16},
    "model": {"weights": "none", "freeze": "backbone", "head": {"hidden": 32, "dropout": 0.0}},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
}
