"""Image-folder data sets: train/<class>/*, test/<class>/* as a tree or a .tar.gz of one.

Decoded once and cached by the content's fingerprint (bench.data.data_fingerprint), so the same images at
another path reuse the cache and other images at the same path never do. Unusual files are
decoded correctly or refused by name: palette, grey, alpha and CMYK images become RGB; 16-bit
and 32-bit images are scaled to 8 bits (never clipped); non-image files are ignored.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.data import DataError, Raw, archive
from bench.infra.files import atomic_save, cache_root
from bench.infra.hashing import bench_version, remembered, stat_key

# The files an image folder's reader takes: torchvision's ImageFolder's IMG_EXTENSIONS, written out so that reading
# a folder imports no torch (bench.data.background reads one while torch is imported; tests/test_data.py checks
# the two agree).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# The most pixels one image may have: Pillow's own warning threshold (about 89 million, 0.27 GB as RGB), far
# above any image a benchmark trains on, so a crafted or mistaken huge file is refused by name, not decoded.
MAX_PIXELS = 89_478_485


def read_folder(path: Path, content: str, side: int | None = None) -> Raw:
    """An image-folder tree or its .tar.gz (read in place, archive.py): labels now, pixels when `fetch` is told
    which images the study uses. `side`: data.image_size, every image resized and centre-cropped to side x side
    (None: as they are)."""
    read = {}  # the archive's image bytes, when listing it read them
    if path.is_dir():
        listings = {part: samples(_split_dir(path, part)) for part in archive.SPLITS}
    else:
        listings, read = archive.listing(path, skipped, IMG_EXTENSIONS, remember=listing_file(content))
    for part, (classes, _) in listings.items():
        if len(classes) < 2:
            raise DataError(
                f"{path} {part}/ has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
                "a classifier needs at least 2"
            )
    classes, test_classes = listings["train"][0], listings["test"][0]
    if classes != test_classes:
        raise DataError(f"{path}: train/ and test/ have different class folders ({classes} vs {test_classes})")
    labels = {part: np.array([t for _, t in found], dtype=np.int64) for part, (_, found) in listings.items()}
    pending = {part: Pending(len(y)) for part, y in labels.items()}

    def fetch(needed: dict[str, np.ndarray]) -> None:
        total = sum(len(y) for y in labels.values())
        if 2 * sum(len(v) for v in needed.values()) >= total:  # most of the set: all of it, one cache for all studies
            want, key = {part: np.arange(len(y)) for part, y in labels.items()}, content
        else:
            want = {part: np.unique(needed[part]) for part in labels}
            digest = hashlib.sha256(b"".join(want[p].astype(np.int64).tobytes() + b"|" for p in labels)).hexdigest()
            key = f"{content}-subset-{digest[:12]}"

        def decode() -> tuple[dict, list[str]]:
            refs = {part: [listings[part][1][i][0] for i in want[part]] for part in labels}
            images = decode_images(path, refs, side, read)
            return {part: (images[part], labels[part][want[part]]) for part in labels}, classes

        arrays, _ = decoded(key, side, decode)
        read.clear()  # decoded now, or already: the bytes are not needed again
        for part in labels:
            pending[part].index, pending[part].images = want[part], arrays[part][0]

    train, test = ((pending[p], labels[p]) for p in archive.SPLITS)
    return Raw(train, test, classes, f"image folder {path}", fetch=fetch)


class Pending:
    """One split's images before they are decoded: `fetch` decodes those a study uses, then x[idx] gives them."""

    def __init__(self, n: int):
        self.n, self.index, self.images = n, None, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.index, idx) if self.index is not None else None
        if pos is None or not np.array_equal(self.index[np.minimum(pos, len(self.index) - 1)], idx):
            raise IndexError("images asked for that were not fetched (bench.data.load fetches what it splits)")
        return self.images[pos]


def _split_dir(root: Path, part: str) -> Path:
    if not (root / part).is_dir():
        raise DataError(
            f"{root} has no {part}/ folder: data.source 'folder' needs "
            f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
        )
    return root / part


def decoded(content: str, side: int | None, decode) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """({split: (images, labels)}, classes) of a set of image files, from the decode cache or `decode()`
    now and then cached: keyed by the files' content fingerprint, the stored side and the decoder."""
    size = f"-{side}px" if side else ""
    cache = cache_root() / "decoded" / f"{content.replace(':', '-')}{size}-{decoder_version()}.npz"
    if cache.exists():
        try:  # never unpickled; a truncated or foreign file is discarded below and decoded anew
            z = np.load(cache, allow_pickle=False)
            if isinstance(z, np.lib.npyio.NpzFile):
                with z:
                    splits = {s: (z[f"x_{s}"], z[f"y_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in z}
                    return splits, [str(c) for c in z["classes"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            pass
        cache.unlink(missing_ok=True)
    splits, classes = decode()
    flat = {f"{k}_{s}": a for s, (x, y) in splits.items() for k, a in (("x", x), ("y", y))}
    atomic_save(cache, lambda f: np.savez(f, classes=np.array(classes), **flat))
    return splits, classes


# Names skipped in a data tree with everything under them: hidden files and folders (`.DS_Store`, macOS's `._x.png`,
# `.ipynb_checkpoints`, `.git`) and the folder macOS zip and tar tools add; none is an image of the set.
SKIPPED_PREFIX, SKIPPED_NAMES = ".", ("__MACOSX",)


def skipped(name: str) -> bool:
    return name.startswith(SKIPPED_PREFIX) or name in SKIPPED_NAMES


def tree_entries(root: Path) -> list[Path]:
    """Every folder and regular file under `root`, sorted: the one list the fingerprint hashes and the
    image-folder reader reads. Skipped names (above) are left out with all they hold. A symbolic link
    anywhere below `root`, or a special file (a FIFO, a device), raises DataError naming it.

    Links are refused rather than followed: a link's target can change, loop back (`a/loop -> ..`) or lie
    outside the tree without the tree changing, so the fingerprint and the images trained on could
    disagree. `root` itself may be a link; a copy (`cp -rL`) or hard links give a tree without any.
    """
    entries = []
    for folder, dirs, files in os.walk(root):  # os.walk never follows links: they are seen and refused below
        dirs[:] = sorted(d for d in dirs if not skipped(d))
        for name in [*dirs, *sorted(f for f in files if not skipped(f))]:
            p = Path(folder) / name
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise DataError(
                    f"{p} is a symbolic link (to {os.readlink(p)}): bench reads no links inside a data folder (the "
                    "images trained on must be the images fingerprinted); copy the files in (cp -rL), or point "
                    "data.path at the folder the link leads to"
                )
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise DataError(f"{p} is neither a file nor a folder (a FIFO, socket or device); remove it")
            entries.append(p)
    return sorted(entries)


def tree_sha256(root: Path) -> str:
    """sha256 over every folder's and file's relative path and every file's bytes under `root`, as
    `tree_entries` lists them (an empty class folder changes the classes, so folders count), read once per
    content."""
    root = Path(root)
    entries = tree_entries(root)
    stats = hashlib.sha256("\n".join(stat_key(p) for p in entries).encode()).hexdigest()

    def compute() -> str:
        h = hashlib.sha256()
        for p in entries:
            h.update(str(p.relative_to(root)).encode() + (b"/" if p.is_dir() else b"\0"))
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()

    return remembered(f"tree|{root.resolve()}|{stats}", compute)


def listing_file(content: str) -> Path:
    """Where an archive's listing is remembered: named by its content and the code that lists it."""
    key = hashlib.sha256(f"{content}|{IMG_EXTENSIONS}|{bench_version()}".encode()).hexdigest()[:16]
    return cache_root() / "listings" / f"{key}.json"


def decoder_version() -> str:
    """What decodes the images: Pillow and bench's code (a fix to the decoding makes a new cache)."""
    import PIL

    return hashlib.sha256(f"{PIL.__version__}|{bench_version()}".encode()).hexdigest()[:8]


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


def samples(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(classes, [(image file, class index)]) of one split, from the files `tree_entries` lists (no
    links, no hidden names: the fingerprint's rule), in torchvision's ImageFolder order."""
    entries = tree_entries(split_dir)
    classes = sorted(p.name for p in entries if p.parent == split_dir and p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    images = [p for p in entries if p.parent != split_dir and p.name.lower().endswith(IMG_EXTENSIONS) and p.is_file()]
    found = sorted(images, key=lambda p: (index[p.relative_to(split_dir).parts[0]], str(p.parent), p.name))
    out = [(p, index[p.relative_to(split_dir).parts[0]]) for p in found]
    if empty := sorted(set(classes) - {classes[t] for _, t in out}):
        raise DataError(
            f"{split_dir}: no image in the class folder(s) {', '.join(empty)} (looked for "
            f"{', '.join(IMG_EXTENSIONS)}); remove the empty class folder or add its images"
        )
    return classes, out


def decode_images(
    path: Path, refs: dict[str, list], side: int | None, read: dict[str, bytes] | None = None
) -> dict[str, np.ndarray]:
    """{split: (N, H, W, 3) uint8} of the listed images: files of a tree, or members of a .tar.gz (from `read`,
    the bytes its listing kept, or read now in one pass); every image at one size (data.image_size makes it
    so), or DataError naming two that differ."""
    from PIL import Image, UnidentifiedImageError

    opened = {}
    if not path.is_dir():
        names = {name for part in refs.values() for name in part}
        opened = read if read and names <= read.keys() else archive.read_members(path, names)

    def decode(ref):
        where = ref if path.is_dir() else f"{path}:{ref}"
        try:
            with Image.open(ref if path.is_dir() else io.BytesIO(opened[ref])) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise Image.DecompressionBombError(f"{im.width}x{im.height} px, {im.width * im.height:,} pixels")
                rgb = to_rgb8(im)
            return np.asarray(square(Image.fromarray(rgb), side)) if side else rgb
        except Image.DecompressionBombError as e:  # Pillow's own, above twice the limit, says its size in its words
            raise DataError(
                f"image {where} is too large to decode ({e}; the limit is {MAX_PIXELS:,} pixels, a guard against "
                "decompression bombs): resize it, or delete it"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {where}: {e}. Delete or replace the file") from None

    flat = [ref for names in refs.values() for ref in names]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL decodes without the GIL
        images = list(pool.map(decode, flat, chunksize=256))
    first = images[0].shape
    for ref, im in zip(flat, images):
        if im.shape != first:
            raise DataError(
                f"image {ref} is {im.shape[1]}x{im.shape[0]} px but {flat[0]} is {first[1]}x{first[0]}; "
                "set data.image_size to store every image at one size (shorter side resized, centre-cropped)"
            )
    out, start = {}, 0
    for part, names in refs.items():
        out[part] = np.stack(images[start : start + len(names)]) if names else np.zeros((0, *first), np.uint8)
        start += len(names)
    return out
