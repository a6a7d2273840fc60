"""An image folder packed as a .tar.gz, read in place: never extracted, so a first run writes no copy of tens of
thousands of small files, and only the members a study uses are read back out.

The members follow the tree's rule (folder.tree_entries): hidden names and __MACOSX are skipped with all they
hold, a link or a special file is refused by name, and a single folder that holds train/ and test/ is the root.
Images are listed in torchvision's ImageFolder order, the same order the extracted tree gives.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from bench.data import DataError
from bench.infra.files import read_json, write_json

SPLITS = ("train", "test")


# While listing, the bytes of the images are kept (the .tar.gz is then read once, not twice: 1.7 s against 3.1 s
# for the 60,000 JPEGs of the shared CIFAR-10 copy) up to this much in all; a bigger archive is read again for
# the images a study uses.
KEEP_BYTES = 1 << 30


def listing(
    path: Path, skipped, extensions: tuple[str, ...], remember: Path | None = None
) -> tuple[dict[str, tuple[list[str], list[tuple[str, int]]]], dict[str, bytes]]:
    """({split: (classes, [(member name, class index)])} for train and test, as folder.samples lists a tree;
    {member name: bytes} of the images read while listing, {} when they were too many to keep). `remember`: a
    file (named by the archive's content) that holds the listing once made; then the archive is not read here."""
    if remember is not None and (known := _remembered(remember)) is not None:
        return known, {}
    members, kept = _scan(path, skipped, extensions)
    out = _listing(path, members, skipped, extensions)
    if remember is not None:
        write_json(remember, {split: {"classes": c, "images": found} for split, (c, found) in out.items()})
    return out, kept


def _scan(path: Path, skipped, extensions: tuple[str, ...]) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    """Every member of the archive, in one pass, and the bytes of the image files among them (up to KEEP_BYTES)."""
    members, kept, size = [], {}, 0
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                members.append(m)
                if kept is None or not m.isfile() or not m.name.lower().endswith(extensions):
                    continue
                if any(skipped(p) for p in PurePosixPath(m.name).parts):
                    continue
                size += m.size
                if size > KEEP_BYTES:
                    kept = None  # read again, for the images used only
                else:
                    kept[m.name] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"cannot read {path} as a .tar.gz: {e}. Is it complete? Re-copy it, or point data.path at an "
            "extracted folder"
        ) from None
    return members, kept or {}


def _remembered(memo: Path):
    """The listing in `memo`, or None when it is missing or not a listing (then the archive is read again)."""
    try:
        saved = read_json(memo)
        out = {}
        for split in SPLITS:
            classes, images = saved[split]["classes"], saved[split]["images"]
            if not all(isinstance(c, str) for c in classes):
                return None
            out[split] = (classes, [(str(name), int(t)) for name, t in images])
        return out
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _listing(path: Path, members: list[tarfile.TarInfo], skipped, extensions: tuple[str, ...]) -> dict:
    kept = []
    for m in members:
        parts = PurePosixPath(m.name).parts
        if m.name.startswith("/") or ".." in parts:
            raise DataError(f"{path}: member {m.name} lies outside the archive; re-pack it with relative names")
        if any(skipped(p) for p in parts):
            continue
        if m.issym() or m.islnk():
            raise DataError(
                f"{path}: {m.name} is a link (to {m.linkname}): bench reads no links inside a data folder (the images "
                "trained on must be the images fingerprinted); re-pack the archive with the files themselves"
            )
        if not (m.isdir() or m.isfile()):
            raise DataError(f"{path}: {m.name} is neither a file nor a folder (a FIFO or device); re-pack without it")
        kept.append((parts, m))
    tops = {parts[0] for parts, m in kept if len(parts) > 1 or m.isdir()}
    prefix = 1 if len(tops) == 1 and "train" not in tops else 0  # the one folder the archive holds
    out = {}
    for split in SPLITS:
        inside = [(parts[prefix + 1 :], m) for parts, m in kept if parts[prefix : prefix + 1] == (split,)]
        if not inside:
            root = f"{path}:{kept[0][0][0]}" if prefix else str(path)
            raise DataError(
                f"{root} has no {split}/ folder: data.source 'folder' needs "
                f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
            )
        classes = sorted({rel[0] for rel, m in inside if len(rel) > 1 or (rel and m.isdir())})
        index = {c: i for i, c in enumerate(classes)}
        images = [(rel, m) for rel, m in inside if len(rel) > 1 and m.isfile() and rel[-1].lower().endswith(extensions)]
        # the tree's order: class, then folder, then name (the member's folder below the split, whose own path
        # is the same for every member of it)
        images.sort(key=lambda e: (index[e[0][0]], "/".join(e[0][:-1]), e[0][-1]))
        found = [(m.name, index[rel[0]]) for rel, m in images]
        if empty := sorted(set(classes) - {classes[t] for _, t in found}):
            raise DataError(
                f"{path}:{split}: no image in the class folder(s) {', '.join(empty)} (looked for "
                f"{', '.join(extensions)}); remove the empty class folder or add its images"
            )
        out[split] = (classes, found)
    return out


def read_members(path: Path, names: set[str]) -> dict[str, bytes]:
    """{member name: its bytes} for `names`, in one pass over the archive (a .tar.gz is read forward only)."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for m in tar:
                if m.name in names:
                    out[m.name] = tar.extractfile(m).read()
                    if len(out) == len(names):
                        break
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path} as a .tar.gz: {e}. Is it complete? Re-copy it") from None
    return out
