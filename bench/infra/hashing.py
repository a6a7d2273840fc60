"""Content hashes of files and of bench's own source, and the libraries' versions: the leaf that run identity,
the records, the caches and the data readers share.

Hashing is done once per file content and remembered by the file's stats (size, mtime, ctime,
inode) in `<cache>/fingerprints.json`, so 60,000 images are not re-read on every call.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import platform
from functools import cache
from importlib import metadata
from pathlib import Path

from bench.infra.files import atomic_write, cache_root, read_memo, try_lock

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
    """{library: version} of LIBRARIES: the modules' own __version__, which for torch and torchvision names the
    build ('2.5.1+cu124', where the package metadata says '2.5.1'), read from their version.py as text (parsed,
    never run) so that no library is imported (seconds); timm's metadata holds its __version__ string."""
    out = {}
    for name in LIBRARIES:
        spec = importlib.util.find_spec(name)  # finds the package without importing it
        found = _assigned(Path(spec.origin).parent / "version.py", "__version__") if spec and spec.origin else None
        out[name] = found or (metadata.version(name) if name == "timm" else importlib.import_module(name).__version__)
    return out


def _assigned(path: Path, name: str) -> str | None:
    """The string literal a module file assigns to `name` at its top level, or None."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    return None


def library_fact(library: str, entry: str, read):
    """A fact about one of LIBRARIES that takes importing it to read (its weight enums, a reader's published
    checksums): from <cache>/library-facts.json when this version of the library has it, else `read()` now and
    remembered. Plain JSON keyed by the library and its version, so an upgrade reads every fact anew."""
    path = cache_root() / "library-facts.json"
    key = f"{library} {library_versions()[library]}"
    found = read_memo(path).get(key, {}).get(entry)
    if found is None:
        found = read()
        memo = read_memo(path)  # another process may have added entries meanwhile
        memo.setdefault(key, {})[entry] = found
        atomic_write(path, json.dumps(memo, indent=1, sort_keys=True))
    return found


def cpu_info() -> tuple[str, list[str]]:
    """(lscpu's model name, the instruction-set flags) from Linux's /proc/cpuinfo; the platform's processor name
    and no flags elsewhere. Results differ between processors in their last digits, so records and benchmarks
    name the one they ran on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith(("flags", "Features"))), []
    )
    return (names[0] if names else platform.processor() or platform.machine()), flags
