import os
from pathlib import Path

import pytest
import yaml

# huggingface_hub reads this once, at import: tests never wait on its download retries.
os.environ["HF_HUB_OFFLINE"] = "1"
# The shipped CPU studies read their images from $BENCH_DATA; beside this checkout that is ../shared/data.
os.environ.setdefault("BENCH_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))


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
