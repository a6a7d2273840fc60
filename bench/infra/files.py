"""Files on disk: atomic writes and per-path locks, used by every stage that writes.

A file is written to a temporary name beside it, flushed and renamed over the target, so a
process killed at any moment leaves either the old file or the new one, never half of one.
Temporary names carry the writer's host and pid (`.NAME.HOST-PID.XXXX.tmp`), so the leftovers
of a killed process can be told from a live writer's and removed (`sweep`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (readable by everyone: results are meant to be shared)."""
    atomic_save(path, lambda f: f.write(text.encode()))


def temp_prefix(name: str) -> str:
    """`.NAME.HOST-PID.`: tempfile appends a random part (and `.tmp` for files)."""
    return f".{name}.{_HOST}-{os.getpid()}."


_HOST = socket.gethostname().replace(".", "_").replace("-", "_")
_WRITER = re.compile(r"\.([^.]+)-(\d+)\.[^.]+(\.tmp)?$")


def atomic_save(path: Path, write: Callable) -> None:
    """Call `write(binary file)` on a temporary file beside `path`, then rename it over `path`.
    A full disk raises OSError(ENOSPC) naming `path`, also when the writer wrapped it (torch.save's
    `RuntimeError: [enforce fail at inline_container.cc] unexpected pos`); the temporary file is always removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "wb", dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp", delete=False
    ) as f:
        try:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException as e:
            f.close()
            os.unlink(f.name)
            if _no_space(e):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise
    os.chmod(f.name, 0o644)  # tempfile makes 0600 files
    os.replace(f.name, path)


def _no_space(e: BaseException | None) -> bool:
    """Whether `e`, or an error it was raised from or during, is a full disk."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def sweep(folder: Path) -> list[Path]:
    """Remove the temporary files and folders that killed processes of this host left in `folder`."""
    removed = []
    for p in Path(folder).glob(".*"):
        m = _WRITER.search(p.name)
        if m and m.group(1) == _HOST and not alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def sweep_cache() -> list[Path]:
    """`sweep` over the cache folder and the folders in it (features, decoded, extracted)."""
    root = cache_root()
    return [p for folder in [root, *(d for d in root.glob("*") if d.is_dir())] for p in sweep(folder)]


def alive(pid: int) -> bool:
    """Whether process `pid` of this host exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_memo(path: Path) -> dict:
    """A JSON memo file (flops.json, pretrained.json): {} when it is missing or unreadable, so it is rebuilt."""
    try:
        memo = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def cache_root() -> Path:
    """Where decoded images, features and fingerprints are cached ($BENCH_CACHE, else ~/.cache/bench)."""
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench"))


def cache_parts() -> dict[str, tuple[int, int]]:
    """{part of the cache: (files, bytes)}: features, decoded, extracted, cifar10, and loose files."""
    out = {}
    root = cache_root()
    for entry in sorted(root.glob("*")) if root.is_dir() else []:
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        out[entry.name] = (len(files), sum(p.stat().st_size for p in files))
    return out


def clear_cache(parts: list[str]) -> int:
    """Remove these parts of the cache (names from `cache_parts`); returns the bytes freed."""
    freed = 0
    for name, (_, size) in cache_parts().items():
        if name in parts:
            path = cache_root() / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            freed += size
    return freed


@contextlib.contextmanager
def try_lock(path: Path, wait: bool = False) -> Iterator[bool]:
    """Yield True while this process holds the lock file `path`, False if another holder has it
    (with `wait`, block until it is free instead).

    The lock is an OS file lock (filelock: flock on Unix, msvcrt on Windows), so the kernel
    releases it when the holding process dies, however it dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


class NotWritable(Exception):
    """A folder bench must write to that it cannot: says which path, why, and how to fix it."""


def check_writable(folder: Path, name: str, what: str) -> None:
    """Raise NotWritable unless `folder` can be created and a file called `name` written in it.
    The folders the check creates are removed again only while empty, so two processes checking
    the same new store at once never remove each other's files (a folder removed under the other's
    probe is made again)."""
    folder = Path(folder)
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise NotWritable(
                    f"{what}: {parent} is a file where a folder should be; move it or choose another path"
                )
            break
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    probe = folder / f"{temp_prefix(name)}check"
    try:
        for attempt in range(5):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe.write_bytes(b"")
                break
            except FileNotFoundError:  # another checker removed the empty folder just made
                if attempt == 4:
                    raise
        probe.unlink()
        for p in created:  # innermost first; a folder with anything in it stays
            with contextlib.suppress(OSError):
                p.rmdir()
    except OSError as e:
        fix = {
            errno.ENAMETOOLONG: "use a shorter name",
            errno.ENOSPC: "free some space",
            errno.EROFS: "choose a writable path",
        }.get(e.errno, "fix its permissions or choose another path")
        raise NotWritable(f"{what}: cannot write {folder / name} ({e.strerror}); {fix}") from None
