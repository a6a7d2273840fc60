"""The sources: each gives a `Raw` (train, test, classes, description; NHWC uint8 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.data import Raw


def read(cfg: DataConfig, content: str) -> Raw:
    """Read `cfg.source`; `content` is its fingerprint (the decode caches are keyed by it)."""
    if cfg.source == "digits":
        return Raw(*digits())
    if cfg.source == "folder":
        from bench.data.folder import read_folder

        return read_folder(Path(cfg.path), content, cfg.image_size)
    from bench.data import official

    return official.read(cfg, content)


def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # 8x8 grey levels 0..16 -> RGB uint8; transforms.py resizes them like any other image.
    x = np.repeat((d.images * (255 / 16)).round().astype(np.uint8)[..., None], 3, axis=-1)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.25, stratify=d.target, random_state=0)
    return (
        (x_tr, y_tr),
        (x_te, y_te),
        [str(c) for c in d.target_names],
        "scikit-learn digits (8x8, 1,797 images), a small offline demo set",
    )
