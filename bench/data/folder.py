"""Image-folder data sets: train/<class>/*, test/<class>/* as a tree or a .tar.gz of one.

Decoded once and cached by the content's fingerprint (bench.identity), so the same images at
another path reuse the cache and other images at the same path never do. Unusual files are
decoded correctly or refused by name: palette, grey, alpha and CMYK images become RGB; 16-bit
and 32-bit images are scaled to 8 bits (never clipped); non-image files are ignored.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.data import DataError
from bench.files import atomic_save, cache_root, temp_prefix


def read_folder(path: Path, content: str, side: int | None = None):
    """`side`: data.image_size, every image resized and centre-cropped to side x side (None: as they are)."""
    root = _extracted(path, content)
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DataError(
                f"{root} has no {part}/ folder: data.source 'folder' needs "
                f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
            )

    def decode_tree() -> tuple[dict, list[str]]:
        (x_tr, y_tr, classes), (x_te, y_te, test_classes) = (_decode_tree(root / p, side) for p in ("train", "test"))
        if classes != test_classes:
            raise DataError(f"{root}: train/ and test/ have different class folders ({classes} vs {test_classes})")
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise DataError(f"{root}: train/ images are {x_tr.shape[1:3]} px but test/ images {x_te.shape[1:3]}")
        return {"train": (x_tr, y_tr), "test": (x_te, y_te)}, classes

    arrays, classes = decoded(content, side, decode_tree)
    return arrays["train"], arrays["test"], classes, f"image folder {path}"


def decoded(content: str, side: int | None, decode) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """({split: (images, labels)}, classes) of a set of image files, from the decode cache or `decode()`
    now and then cached: keyed by the files' content fingerprint, the stored side and the decoder."""
    size = f"-{side}px" if side else ""
    cache = cache_root() / "decoded" / f"{content.replace(':', '-')}{size}-{decoder_version()}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        splits = {s: (z[f"x_{s}"], z[f"y_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in z}
        return splits, [str(c) for c in z["classes"]]
    splits, classes = decode()
    flat = {f"{k}_{s}": a for s, (x, y) in splits.items() for k, a in (("x", x), ("y", y))}
    atomic_save(cache, lambda f: np.savez(f, classes=np.array(classes), **flat))
    return splits, classes


def decoder_version() -> str:
    """What decodes the images: Pillow and bench's code (a fix to the decoding makes a new cache)."""
    import PIL

    from bench.identity import code_versions

    return hashlib.sha256(f"{PIL.__version__}|{code_versions()['bench']}".encode()).hexdigest()[:8]


def _extracted(path: Path, content: str) -> Path:
    """A folder as is; a .tar.gz extracted once into the cache, to the single folder inside it."""
    if path.is_dir():
        return path
    dest = cache_root() / "extracted" / content.replace(":", "-")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=temp_prefix("extracting")))
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


def to_rgb8(im) -> np.ndarray:
    """(H, W, 3) uint8 from any PIL image: high bit depths scaled down, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def square(image, side: int):
    """A PIL image's shorter side resized to `side` (antialiased), then its centre side x side crop (the
    usual evaluation crop): how images of many sizes are stored at one (data.image_size)."""
    from torchvision.transforms.v2 import functional as F

    return F.center_crop(F.resize(image, side), [side, side])


def _decode_tree(split_dir: Path, side: int | None):
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(split_dir))
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # a class folder without images
        raise DataError(f"{split_dir}: {e}; remove the empty class folder or add its images") from None
    if len(classes) < 2:
        raise DataError(
            f"{split_dir} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
            "a classifier needs at least 2"
        )

    def decode(sample):
        path, _ = sample
        try:
            with Image.open(path) as im:
                rgb = to_rgb8(im)
            return np.asarray(square(Image.fromarray(rgb), side)) if side else rgb
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {path}: {e}. Delete or replace the file") from None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL decodes without the GIL
        images = list(pool.map(decode, samples, chunksize=256))
    first = images[0].shape
    for (path, _), im in zip(samples, images):
        if im.shape != first:
            raise DataError(
                f"image {path} is {im.shape[1]}x{im.shape[0]} px but {samples[0][0]} is {first[1]}x{first[0]}; "
                "set data.image_size to store every image at one size (shorter side resized, centre-cropped)"
            )
    return np.stack(images), np.array([t for _, t in samples], dtype=np.int64), classes
