"""An image folder packed as a .tar.gz, read in place: never extracted, so a first run writes no copy of tens of
thousands of small files, and only the members a study uses are read back out.

The members follow the tree's rule (folder.tree_entries): hidden names and __MACOSX are skipped with all they
hold, a link or a special file is refused by name, and a single folder that holds train/ and test/ is the root.
Images are listed in torchvision's ImageFolder order, the same order the extracted tree gives.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path
from typing import NamedTuple

from bench.data import DataError
from bench.infra.files import read_json, write_json

SPLITS = ("train", "test")


# While listing, the bytes of the images are kept (the .tar.gz is then read once, not twice) up to this much in
# all; a bigger archive is read again for the images a study uses.
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


def _scan(path: Path, skipped, extensions: tuple[str, ...]) -> tuple[list[Member], dict[str, bytes]]:
    """Every member of the archive, in one pass, and the bytes of the image files among them (up to KEEP_BYTES)."""
    size = 0

    def keep(m: Member, nbytes: int) -> bool:
        nonlocal size
        if m.kind != "file" or not m.name.lower().endswith(extensions) or any(map(skipped, parts(m.name))):
            return False
        size += nbytes
        return size <= KEEP_BYTES

    members, kept = _read(path, keep)
    return members, kept if size <= KEEP_BYTES else {}  # too many: read again, for the images used only


def parts(name: str) -> tuple[str, ...]:
    """A member name's folders and file name, as PurePosixPath(name).parts gives them for a relative name (empty
    and '.' parts dropped; 3x faster, which 60,000 members notice)."""
    return tuple(p for p in name.split("/") if p and p != ".")


class Member(NamedTuple):
    """What the listing needs of an archive member: its name, 'file', 'dir', 'link' or 'other' (a FIFO, a
    device), and a link's target."""

    name: str
    kind: str
    linkname: str = ""


def _read(path: Path, keep) -> tuple[list[Member], dict[str, bytes]]:
    """Every member of the archive in order, and {name: bytes} of the files `keep(member, size)` is true for;
    DataError when it is not a readable tar archive (gzip, bzip2, xz or none)."""
    try:
        fast = _read_ustar(path, keep)
        return fast if fast is not None else _read_tarfile(path, keep)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {path} as a .tar.gz: {e}. Is it complete? Re-copy it, or point data.path at an "
            "extracted folder"
        ) from None


def _read_tarfile(path: Path, keep) -> tuple[list[Member], dict[str, bytes]]:
    members, kept = [], {}
    with tarfile.open(path, "r|*") as tar:
        for m in tar:
            kind = "file" if m.isfile() else "dir" if m.isdir() else "link" if m.issym() or m.islnk() else "other"
            members.append(Member(m.name, kind, m.linkname))
            if kind == "file" and keep(members[-1], m.size):
                kept[m.name] = tar.extractfile(m).read()
    return members, kept


# The common case read without tarfile, whose header parsing (13 strings and 8 numbers decoded per member) took
# 1.3 s of a first run's 22 s for the 60,000 JPEGs of the shared CIFAR-10 (this reads them in 0.5 s, gzip
# included): a gzip-compressed or plain archive of only files and folders in ustar or GNU headers, each header's
# checksum checked. Anything else (a link, a pax or GNU long-name header, a bad checksum, a truncated archive,
# bzip2 or xz) gives None and tarfile reads the archive instead, so the outcome and every error are tarfile's.
# Names are decoded as tarfile decodes them (UTF-8, undecodable bytes kept as surrogates); a folder's trailing
# slash is dropped and a ustar prefix joined as tarfile does (tests/test_data.py compares the two readers).
USTAR_FILE, USTAR_DIR = (b"0", b"\0", b"7"), b"5"


def _read_ustar(path: Path, keep) -> tuple[list[Member], dict[str, bytes]] | None:
    with open(path, "rb") as raw:
        magic = raw.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    members, kept = [], {}
    with opener(path, "rb") as f:
        while True:
            block = f.read(512)
            if len(block) < 512:
                return None  # truncated (or empty): tarfile says which
            if block == ZERO_BLOCK:
                return (members, kept) if members else None
            flag = block[156:157]
            if flag not in USTAR_FILE and flag != USTAR_DIR or block[257:262] != b"ustar":
                return None
            try:
                checksum, size = int(_field(block[148:156]) or "0", 8), int(_field(block[124:136]) or "0", 8)
            except ValueError:
                return None
            if checksum != sum(block[:148]) + 256 + sum(block[156:]):
                return None
            name, prefix = _text(block[:100]), _text(block[345:500])
            kind = "dir" if flag == USTAR_DIR or (flag == b"\0" and name.endswith("/")) else "file"
            if kind == "dir":
                name = name.rstrip("/")
            if prefix:
                name = prefix + "/" + name
            members.append(Member(name, kind))
            if kind == "dir" and size:
                return None  # tarfile reads no data after a folder's header
            if kind == "file" and keep(members[-1], size):
                kept[name] = f.read(size)  # a short read leaves the next header short: None above
                f.read(-size % 512)
            else:
                f.seek(size + -size % 512, 1)


ZERO_BLOCK = bytes(512)


def _field(b: bytes) -> str:
    """A numeric header field's digits (tarfile's nti, for the octal form)."""
    return b.split(b"\0", 1)[0].decode("ascii").strip()


def _text(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


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


def _listing(path: Path, members: list[Member], skipped, extensions: tuple[str, ...]) -> dict:
    kept = []
    for m in members:
        names = parts(m.name)
        if m.name.startswith("/") or ".." in names:
            raise DataError(f"{path}: member {m.name} lies outside the archive; re-pack it with relative names")
        if any(map(skipped, names)):
            continue
        if m.kind == "link":
            raise DataError(
                f"{path}: {m.name} is a link (to {m.linkname}): bench reads no links inside a data folder (the images "
                "trained on must be the images fingerprinted); re-pack the archive with the files themselves"
            )
        if m.kind == "other":
            raise DataError(f"{path}: {m.name} is neither a file nor a folder (a FIFO or device); re-pack without it")
        kept.append((names, m))
    tops = {names[0] for names, m in kept if len(names) > 1 or m.kind == "dir"}
    prefix = 1 if len(tops) == 1 and "train" not in tops else 0  # the one folder the archive holds
    out = {}
    for split in SPLITS:
        inside = [(names[prefix + 1 :], m) for names, m in kept if names[prefix : prefix + 1] == (split,)]
        if not inside:
            root = f"{path}:{kept[0][0][0]}" if prefix else str(path)
            raise DataError(
                f"{root} has no {split}/ folder: data.source 'folder' needs "
                f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
            )
        classes = sorted({rel[0] for rel, m in inside if len(rel) > 1 or (rel and m.kind == "dir")})
        index = {c: i for i, c in enumerate(classes)}
        images = [
            (rel, m) for rel, m in inside if len(rel) > 1 and m.kind == "file" and rel[-1].lower().endswith(extensions)
        ]
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
    return _read(path, lambda m, size: m.name in names)[1]
