"""Data sets as uint8 tensors in memory, with a fixed stratified validation split.

The sources, all ending as (N, 3, H, W) uint8 tensors and int64 labels:
  cifar10, cifar100, svhn, stl10, flowers102, pets, dtd
           the official releases through torchvision's readers, with their official splits
           (downloaded when online; official.py)
  folder   an image-folder tree train/<class>/*, test/<class>/* (or a .tar.gz of one), such as
           the JPEG copy of CIFAR-10; decoded once, then cached by content (folder.py)
  digits   scikit-learn's 8x8 digits (ships with the package), so a demo runs fully offline
Resizing, normalization and augmentation happen later, batched on the device (transforms.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.config import DataConfig
from bench.infra.files import cache_root  # noqa: F401  (re-exported: where caches live)

if TYPE_CHECKING:
    import torch


class DataError(Exception):
    """A data set that cannot be read: says which path was tried and how to fix it."""


@dataclass
class Split:
    x: torch.Tensor  # (N, 3, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Raw:
    """A source's images before splitting: (N, H, W, 3) uint8 arrays (or what `fetch` fills) with int labels;
    `val` only where the set has an official validation split (otherwise data.val_size images are carved from
    train)."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: list[str]
    description: str
    val: tuple[np.ndarray, np.ndarray] | None = None
    # sources that decode lazily (image folders): given {split: indices}, decode those, so that x[idx] works
    fetch: Callable[[dict[str, np.ndarray]], None] | None = None


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    classes: list[str]
    description: str  # what a report should say about where the images came from
    fingerprint: str  # the images' content and the split settings: what caches of this data are keyed by

    @functools.cached_property
    def pixel_mean(self) -> torch.Tensor:
        """(3, H, W) float32 in [0, 1]: the training images' per-pixel mean (input.normalize: pixel-mean)."""
        import torch

        return (self.train.x.sum(0, dtype=torch.float64) / (255 * len(self.train))).float()


def data_fingerprint(cfg: DataConfig) -> str:
    """What the images are. Raises DataError when a folder source does not exist."""
    from bench.data import official
    from bench.data.folder import tree_sha256
    from bench.infra.hashing import file_sha256

    if cfg.source in official.OFFICIAL:  # an official release, read by torchvision
        return official.fingerprint(cfg)
    if cfg.source == "digits":
        return f"digits:{_digits_digest()}"
    path = Path(cfg.path)
    if path.is_dir():
        return "folder:" + tree_sha256(path)[:16]
    if path.is_file():
        return "folder:" + file_sha256(path)[:16]
    raise DataError(
        f"data.path {path} does not exist: set it to an image-folder tree with train/ and test/, or to its .tar.gz"
    )


@functools.cache
def _digits_digest() -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    return hashlib.sha256(d.images.tobytes() + d.target.tobytes()).hexdigest()[:16]


def load(cfg: DataConfig) -> Dataset:
    """Read the source, take the validation split (official, or carved from train), apply the limits."""
    import torch  # here, not above: importing bench.config runs this file, and `bench --help` imports no torch

    from bench.data import background

    background.wait(cfg)  # another process may be reading these images for this one (bench run starts it)
    p = prepare(cfg)

    def split(x, y, idx):
        idx = np.sort(idx)
        return Split(
            torch.from_numpy(np.ascontiguousarray(x[idx].transpose(0, 3, 1, 2))),
            torch.from_numpy(y[idx].astype(np.int64)),
        )

    return Dataset(
        split(*p.raw.train, p.train),
        split(*p.val, p.val_index),
        split(*p.raw.test, p.test),
        p.raw.classes,
        p.raw.description,
        p.fingerprint,
    )


@dataclass
class Prepared:
    """A data set read, split and decoded, before it becomes tensors: what `prepare` gives `load`."""

    raw: Raw
    val: tuple  # the images and labels the validation indices point into: train's, or the official val split
    train: np.ndarray  # indices into raw.train
    val_index: np.ndarray
    test: np.ndarray  # indices into raw.test
    fingerprint: str


def prepare(cfg: DataConfig) -> Prepared:
    """Everything `load` does without torch: read the source, split and subset it, decode the images the splits
    use (into the decode cache). bench.data.background runs it in another process while this one imports torch."""
    from bench.data import official, sources

    official.fetch(cfg)  # an official set downloaded where missing and allowed, before it is fingerprinted
    content = data_fingerprint(cfg)
    raw = sources.read(cfg, content)
    (x_train, y_train), y_test = raw.train, raw.test[1]
    _check_sizes(cfg, y_train, y_test, raw.classes, official_val=raw.val is not None)
    if raw.val is None:  # the split depends on split_seed only: every variant and seed selects on the same images
        from sklearn.model_selection import train_test_split  # here: a first run imports it while reading images

        idx_train, idx_val = train_test_split(
            np.arange(len(y_train)), test_size=cfg.val_size, stratify=y_train, random_state=cfg.split_seed
        )
        val = (x_train, y_train)
    else:
        idx_train, val = np.arange(len(y_train)), raw.val
        idx_val = np.arange(len(val[1]))
    n_train = cfg.limit_train if cfg.train_fraction is None else round(cfg.train_fraction * len(idx_train))
    idx_train = nested_subset(idx_train, y_train, n_train, cfg.split_seed)
    idx_test = nested_subset(np.arange(len(y_test)), y_test, cfg.limit_test, cfg.split_seed)
    if raw.fetch:  # decoded now, and only the images the splits use (a 3,000-image study of 60,000 reads 3,000)
        used = np.concatenate([idx_train, idx_val]) if raw.val is None else idx_train
        raw.fetch({"train": np.sort(used), "test": np.sort(idx_test)})

    settings = {k: getattr(cfg, k) for k in ("val_size", "split_seed", "limit_train", "limit_test")}
    if cfg.limit_train is not None or cfg.limit_test is not None or cfg.train_fraction is not None:
        settings.update(train_fraction=cfg.train_fraction, subset=SUBSET_METHOD)
    if cfg.image_size is not None:
        settings["image_size"] = cfg.image_size
    fingerprint = hashlib.sha256(json.dumps([content, settings], sort_keys=True).encode()).hexdigest()[:16]
    return Prepared(raw, val, idx_train, idx_val, idx_test, fingerprint)


def _check_sizes(cfg: DataConfig, y_train: np.ndarray, y_test: np.ndarray, classes: list, official_val: bool) -> None:
    """Every split stratified by class needs at least one image of each class: say which key and the minimum."""
    n = len(classes)
    smallest = int(np.bincount(y_train, minlength=n).min())
    if smallest < (1 if official_val else 2):
        name = classes[int(np.bincount(y_train, minlength=n).argmin())]
        raise DataError(
            f"class '{name}' has {smallest} training image(s); "
            + (
                "is the data set complete?"
                if official_val
                else "a stratified validation split needs at least 2 of every class"
            )
        )
    checks = [
        ("data.val_size", None if official_val else cfg.val_size),
        ("data.limit_train", cfg.limit_train),
        ("data.limit_test", cfg.limit_test),
    ]
    for key, value in checks:
        if value is not None and value < n:
            raise DataError(
                f"{key}={value} is smaller than the number of classes ({n}); a stratified split needs "
                f"at least one image of each class: use {key} >= {n}"
            )
    pool = len(y_train) - (0 if official_val else cfg.val_size)
    if cfg.train_fraction is not None and round(cfg.train_fraction * pool) < n:
        raise DataError(
            f"data.train_fraction={cfg.train_fraction:g} keeps {round(cfg.train_fraction * pool)} of the {pool} "
            f"training images, fewer than the {n} classes; a stratified subset needs one of each: "
            f"use data.train_fraction >= {n / pool:.2g}"
        )
    if not official_val and cfg.val_size > len(y_train) - n:
        raise DataError(
            f"data.val_size={cfg.val_size} leaves too few training images: the {cfg.source} training "
            f"set has {len(y_train)}; use data.val_size <= {len(y_train) - n}"
        )


# How subsets are drawn; part of the data's fingerprint, so a change here can never reuse an old result.
SUBSET_METHOD = "nested-stratified-1"


def nested_subset(idx: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """The first `n` of `idx` in one fixed stratified order: each class's images in a random order
    (fixed by `seed`), interleaved so every prefix holds each class in proportion (within one image).
    So a subset of any size is stratified, and a smaller one is always inside a larger one, as a
    learning curve wants."""
    if n is None or n >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(idx))
    labels = y[idx][perm]
    rank = np.zeros(len(perm))
    for c in np.unique(labels):  # the position of each image within its class, spread over [0, 1)
        members = np.flatnonzero(labels == c)
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    order = perm[np.argsort(rank, kind="stable")]
    return idx[order[:n]]
