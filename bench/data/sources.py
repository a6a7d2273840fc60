"""The sources: each returns (train, test, classes, description) with NHWC uint8 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from bench.config import DataConfig
from bench.data import DataError
from bench.files import cache_root


def read(cfg: DataConfig, content: str):
    """Read `cfg.source`; `content` is its fingerprint (the image-folder decode cache is keyed by it)."""
    if cfg.source == "cifar10":
        return cifar10(cfg)
    if cfg.source == "digits":
        return digits()
    from bench.data.folder import read_folder

    return read_folder(Path(cfg.path), content)


def cifar10(cfg: DataConfig):
    from torchvision.datasets import CIFAR10

    root = Path(cfg.path) if cfg.path else cache_root() / "cifar10"
    try:
        train = CIFAR10(root, train=True, download=cfg.download)
        test = CIFAR10(root, train=False, download=cfg.download)
    except (RuntimeError, OSError) as e:  # torchvision: "Dataset not found or corrupted"; URLError offline
        raise DataError(
            f"official CIFAR-10 not found under {root / 'cifar-10-batches-py'}"
            + (" and the download failed" if cfg.download else " (data.download is false)")
            + f" ({type(e).__name__}: {e}). Fix: extract cifar-10-python.tar.gz there, or set data.path to "
            "the folder holding cifar-10-batches-py/, or use data.source: folder with data.path set to an "
            "image-folder copy of CIFAR-10 (a tree or its .tar.gz)"
        ) from None
    return (
        (train.data, np.asarray(train.targets)),
        (test.data, np.asarray(test.targets)),
        list(train.classes),
        "CIFAR-10, official release (torchvision)",
    )


def digits():
    from sklearn.datasets import load_digits

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
