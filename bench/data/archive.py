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

SPLITS = ("train", "test")


def _members(path: Path) -> list[tarfile.TarInfo]:
    try:
        with tarfile.open(path) as tar:
            return tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"cannot read {path} as a .tar.gz: {e}. Is it complete? Re-copy it, or point data.path at an "
            "extracted folder"
        ) from None


def listing(path: Path, skipped, extensions: tuple[str, ...]) -> dict[str, tuple[list[str], list[tuple[str, int]]]]:
    """{split: (classes, [(member name, class index)])} for train and test, as folder.samples lists a tree."""
    kept = []
    for m in _members(path):
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
        images.sort(key=lambda e: (index[e[0][0]], "/".join(PurePosixPath(e[1].name).parts[:-1]), e[0][-1]))
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
