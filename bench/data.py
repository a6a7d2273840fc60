"""Data sets as uint8 tensors in memory, with a fixed stratified validation split.

Three sources, all ending as (N, 3, H, W) uint8 tensors and int64 labels:
  cifar10  the official release through torchvision (downloaded when online)
  folder   an image-folder tree train/<class>/*, test/<class>/* (or a .tar.gz of one), such as
           the JPEG copy of CIFAR-10; decoded once, then cached as .npz
  digits   scikit-learn's 8x8 digits (ships with the package), so a demo runs fully offline
Resizing, normalization and augmentation happen later, batched on the device (transforms.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from bench.config import DataConfig


class DataError(Exception):
    """A data set that cannot be read: says which path was tried and how to fix it."""


@dataclass
class Split:
    x: torch.Tensor  # (N, 3, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    description: str  # what a report should say about where the images came from


def cache_root() -> Path:
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


def load(cfg: DataConfig) -> Dataset:
    """Read the source, carve the validation split, apply the limits."""
    reader = {"cifar10": _cifar10, "folder": _folder, "digits": _digits}[cfg.source]
    (x_train, y_train), (x_test, y_test), classes, description = reader(cfg)
    if cfg.val_size >= len(y_train) - len(classes):
        raise DataError(
            f"data.val_size={cfg.val_size} leaves too few training images: the {cfg.source} "
            f"training set has {len(y_train)}; choose a smaller data.val_size"
        )
    # The split depends on split_seed only, so every variant and seed is selected on the same images.
    idx_train, idx_val = train_test_split(
        np.arange(len(y_train)), test_size=cfg.val_size, stratify=y_train, random_state=cfg.split_seed
    )
    idx_train = _limit(idx_train, y_train, cfg.limit_train, cfg.split_seed)
    idx_test = _limit(np.arange(len(y_test)), y_test, cfg.limit_test, cfg.split_seed)

    def split(x, y, idx):
        idx = np.sort(idx)
        return Split(
            torch.from_numpy(np.ascontiguousarray(x[idx].transpose(0, 3, 1, 2))),
            torch.from_numpy(y[idx].astype(np.int64)),
        )

    return Dataset(
        split(x_train, y_train, idx_train),
        split(x_train, y_train, idx_val),
        split(x_test, y_test, idx_test),
        classes,
        description,
    )


def _limit(idx: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(idx):
        return idx
    kept, _ = train_test_split(idx, train_size=limit, stratify=y[idx], random_state=seed)
    return kept


# ---- sources: each returns (train, test, classes, description) with NHWC uint8 images ---------


def _cifar10(cfg: DataConfig):
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


def _digits(cfg: DataConfig):
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


def _folder(cfg: DataConfig):
    root = _extracted(Path(cfg.path))
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DataError(
                f"{root} has no {part}/ folder: data.source 'folder' needs "
                f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
            )
    cache = cache_root() / "decoded" / f"{_fingerprint(root)}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        arrays = (z["x_train"], z["y_train"]), (z["x_test"], z["y_test"])
        classes = [str(c) for c in z["classes"]]
    else:
        (x_tr, y_tr, classes), (x_te, y_te, test_classes) = _decode_tree(root / "train"), _decode_tree(root / "test")
        if classes != test_classes:
            raise DataError(f"{root}: train/ and test/ have different class folders ({classes} vs {test_classes})")
        arrays = (x_tr, y_tr), (x_te, y_te)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".npz", delete=False) as f:
            np.savez(f, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, classes=np.array(classes))
        os.replace(f.name, cache)
    return (*arrays, classes, f"image folder {cfg.path}")


def _extracted(path: Path) -> Path:
    """A folder as is; a .tar.gz extracted once into the cache, to the single folder inside it."""
    if path.is_dir():
        return path
    if not path.is_file():
        raise DataError(
            f"data.path {path} does not exist: set it to an image-folder tree with train/ and test/, or to its .tar.gz"
        )
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_root() / "extracted" / key
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        try:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(
                f"cannot extract {path}: {e}. Is it a complete .tar.gz? Re-copy it, or point "
                "data.path at an extracted folder"
            ) from None
        try:
            os.replace(tmp, dest)  # atomic: a cut-off extraction never looks complete
        except OSError:  # another process finished the same extraction first
            shutil.rmtree(tmp, ignore_errors=True)
    inner = [p for p in dest.iterdir() if p.is_dir()]
    return inner[0] if len(inner) == 1 and not (dest / "train").exists() else dest


def _fingerprint(root: Path) -> str:
    """Changes when any file is added, removed or rewritten, so a stale decode cache is never used."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_tree(split_dir: Path):
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    classes, class_to_idx = find_classes(str(split_dir))
    samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    if not samples:
        raise DataError(f"no images found under {split_dir}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)})")

    def decode(sample):
        path, _ = sample
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {path}: {e}. Delete or replace the file") from None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL decodes without the GIL
        images = list(pool.map(decode, samples, chunksize=256))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"images under {split_dir} have different sizes {sorted(shapes)[:4]}; "
            "bench expects one size per data set (resize them once beforehand)"
        )
    return np.stack(images), np.array([t for _, t in samples], dtype=np.int64), classes
