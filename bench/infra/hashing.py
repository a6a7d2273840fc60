"""Content hashes of files and of bench's own source, and the libraries' versions: the leaf that run identity,
the records, the caches and the data readers share.

Hashing is done once per file content and remembered by the file's stats (size, mtime, ctime,
inode) in `<cache>/fingerprints.json`, so 60,000 images are not re-read on every call.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from functools import cache
from importlib import metadata
from pathlib import Path

from bench.infra.files import atomic_write, cache_root, try_lock

CHUNK = 1 << 20


def stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def remembered(key: str, compute) -> str:
    """The digest stored for `key` in the memo file, or `compute()` stored there now."""
    memo_path = cache_root() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    digest = compute()
    with try_lock(memo_path.with_suffix(".lock"), wait=True):  # other processes may add entries meanwhile
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        memo[key] = digest
        atomic_write(memo_path, json.dumps(memo))
    return digest


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read once per content (by stats)."""

    def compute() -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        return h.hexdigest()

    return remembered("file|" + stat_key(path), compute)


@cache
def bench_version() -> str:
    """bench's version and a hash of its source, e.g. '0.2.0+3f2a1b4c' (no torch: `bench --version` uses it)."""
    source = hashlib.sha256()
    package = Path(__file__).resolve().parent  # bench/
    for p in sorted(package.rglob("*")):
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts:
            source.update(str(p.relative_to(package)).encode() + b"\0" + p.read_bytes())
    return f"{metadata.version('bench')}+{source.hexdigest()[:8]}"


LIBRARIES = ("torch", "torchvision", "timm")  # the libraries whose code computes results (runs, features, FLOPs)


@cache
def library_versions() -> dict[str, str]:
    """{library: version} of LIBRARIES. The modules' own __version__: torch's names its build ('2.5.1+cu124'),
    which its package metadata lacks; timm's is read from its metadata, the same string, without importing it
    (seconds)."""
    return {
        name: metadata.version(name) if name == "timm" else importlib.import_module(name).__version__
        for name in LIBRARIES
    }
