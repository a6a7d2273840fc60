"""Data sets in their official formats, read by torchvision's own readers, with their official splits.

data.source  reader (torchvision)  under data.path (default: bench's cache/<source>)  images    train / val / test
cifar10      CIFAR10              cifar-10-batches-py/                               32 px     50,000 / carved / 10,000
cifar100     CIFAR100 (fine)      cifar-100-python/                                  32 px     50,000 / carved / 10,000
svhn         SVHN                 train_32x32.mat, test_32x32.mat                    32 px     73,257 / carved / 26,032
stl10        STL10 (labelled)     stl10_binary/                                      96 px      5,000 / carved /  8,000
flowers102   Flowers102           flowers-102/ (jpg/, imagelabels.mat, setid.mat)    any size   1,020 /  1,020 /  6,149
pets         OxfordIIITPet        oxford-iiit-pet/ (images/, annotations/)           any size   3,680 / carved /  3,669
dtd          DTD (partition 1)    dtd/dtd/ (images/, labels/)                        any size   1,880 /  1,880 /  1,880

"carved": data.val_size images taken, stratified, from the official training split; Flowers-102 and DTD
have an official validation split, used as is. Images of any size are decoded once, resized (shorter side)
and centre-cropped to data.image_size, and cached by content; every set is kept as uint8 in memory, and
one that would not fit is refused before it is read.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.config import DataConfig
from bench.data import DataError, Raw
from bench.data.catalog import OFFICIAL, Official
from bench.data.folder import decoded, square, to_rgb8, tree_sha256
from bench.infra.files import cache_root
from bench.infra.hashing import library_fact


def root(cfg: DataConfig) -> Path:
    return Path(cfg.path) if cfg.path else cache_root() / cfg.source


def reader_class(spec: Official) -> type:
    import torchvision.datasets

    return getattr(torchvision.datasets, spec.reader)


def reader(cfg: DataConfig, split: str, download: bool):
    """torchvision's data set object for one split; DataError saying where the files go when absent."""
    spec = OFFICIAL[cfg.source]
    cls = reader_class(spec)
    kwargs = {"train": split == "train"} if spec.reader.startswith("CIFAR") else {"split": split}
    try:
        return cls(root(cfg), download=download, **kwargs)
    except (RuntimeError, OSError) as e:  # "Dataset not found or corrupted"; URLError offline
        raise DataError(
            f"official {spec.title} not found under {root(cfg) / spec.folder.split(' ')[0]}"
            + (" and the download failed" if download else " (data.download is false)")
            + f" ({type(e).__name__}: {e}). Fix: download it from {spec.url} on a machine with internet and "
            f"extract it there ({spec.folder} in torchvision's layout), or set data.path to the folder that "
            f"holds {spec.folder}"
        ) from None


def fingerprint(cfg: DataConfig) -> str:
    """What the set's files are. Sets whose reader checks every file against published md5s: those sums.
    The others (the reader checks only that folders exist): the files' own content, hashed once per
    content (bench.data.folder.tree_sha256); never downloads (`fetch` does, for `bench run`)."""
    spec = OFFICIAL[cfg.source]
    if spec.verified:
        sums = library_fact("torchvision", f"md5s {spec.reader}", lambda: published_md5s(spec))
        return f"{cfg.source}:" + hashlib.sha256(",".join(sums).encode()).hexdigest()[:16]
    folder = root(cfg) / spec.folder
    if not folder.is_dir():
        raise DataError(
            f"official {spec.title} not found under {folder}: `bench run` downloads it when data.download is "
            f"true and there is a network; or download it from {spec.url} and extract it there"
        )
    return f"{cfg.source}:" + tree_sha256(folder)[:16]


def published_md5s(spec: Official) -> list[str]:
    """The md5 sums torchvision's reader checks every file of a verified set against."""
    cls = reader_class(spec)
    if hasattr(cls, "split_list"):  # SVHN
        return [cls.split_list[s][2] for s in ("train", "test")]
    return [md5 for _, md5 in cls.train_list + cls.test_list] + ([cls.meta["md5"]] if hasattr(cls, "meta") else [])


def fetch(cfg: DataConfig) -> None:
    """Download a set fingerprinted by its files when they are missing and data.download allows (`bench run`
    calls this; listing never downloads); offline, the reader's error says where the files go. Any other
    source: nothing to do."""
    spec = OFFICIAL.get(cfg.source)
    if spec and not spec.verified and not (root(cfg) / spec.folder).is_dir():
        reader(cfg, spec.splits[0], cfg.download)


def check_memory(cfg: DataConfig, available: int | None = None) -> int:
    """Bytes the set needs as uint8 in memory; DataError when more than 80% of the memory available now."""
    spec = OFFICIAL.get(cfg.source)
    side = cfg.image_size or (spec.size if spec else None)
    if spec is None or side is None:
        return 0
    need = spec.images * 3 * side * side
    if available is None:
        from bench.training.device import available_memory  # torch: only when a set is read

        available = available_memory()
    if available and need > 0.8 * available:
        raise DataError(
            f"{spec.title} at {side} px needs {need / 2**30:.1f} GiB in memory ({spec.images:,} images x 3 x "
            f"{side} x {side} bytes), but {available / 2**30:.1f} GiB is available: set a smaller data.image_size "
            f"(memory grows with its square) or use a machine with more memory"
        )
    return need


def read(cfg: DataConfig, content: str) -> Raw:
    spec = OFFICIAL[cfg.source]
    need = check_memory(cfg)
    side = cfg.image_size or spec.size

    def read_splits() -> tuple[dict, list[str]]:
        arrays, classes = {}, None
        for part, split in zip(("train", "val", "test"), spec.splits):
            if split is not None:
                ds = reader(cfg, split, cfg.download and part == "train")
                arrays[part] = _images(ds, side)
                classes = classes or _classes(ds)
        return arrays, classes

    # sets of many image sizes are decoded once (slow: thousands of JPEGs); the others read fast as they are
    arrays, classes = read_splits() if spec.size is not None else decoded(content, side, read_splits)
    return Raw(
        arrays["train"],
        arrays["test"],
        classes,
        f"{spec.title}, official release and splits (torchvision {spec.reader}), {side} px, "
        f"{need / 2**20:,.0f} MiB as uint8",
        arrays.get("val"),
    )


def _images(ds, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, side, side, 3) uint8 and int64 labels of a torchvision data set."""
    arrays = getattr(ds, "data", None)
    if isinstance(arrays, np.ndarray):  # CIFAR (NHWC), SVHN and STL-10 (NCHW): the whole split in memory
        x = arrays if arrays.shape[-1] == 3 else arrays.transpose(0, 2, 3, 1)
        y = np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels, dtype=np.int64)
        return (x if x.shape[1] == side else _resize_array(x, side)), y

    def load(i: int):
        image, label = ds[i]  # the reader's own loader: a PIL image and its label
        return to_rgb8(square(image, side)), label

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL decodes without the GIL
        pairs = list(pool.map(load, range(len(ds)), chunksize=64))
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], dtype=np.int64)


def _resize_array(x: np.ndarray, side: int) -> np.ndarray:
    """`square` on a whole NHWC uint8 array, a thousand images at a time."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return torch.cat([square(t[i : i + 1024], side) for i in range(0, len(t), 1024)]).permute(0, 2, 3, 1).numpy()


def _classes(ds) -> list[str]:
    """The reader's class names; the digits for SVHN, which has none."""
    names = getattr(ds, "classes", None)
    if names:
        return [str(c) for c in names]
    return [str(d) for d in range(10)]  # SVHN, the one reader without names: its classes are the digits
