"""What made a run: content fingerprints of its data, weights and code, and the run id built from them.

A run id hashes the resolved configuration *without paths*, together with the fingerprints of
the data and the weights, so a result is reused only for the same images and the same weights
wherever they lie, and never for other ones at the same path. The code (bench's version and
source, torch, torchvision, timm) is recorded beside it: a run made by other code keeps its id
and is shown as such (`bench run --rerun-stale` re-runs it).

Hashing is done once per file content and remembered by the file's stats (size, mtime, ctime,
inode) in `<cache>/fingerprints.json`, so 60,000 images are not re-read on every call.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, replace
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from bench.files import atomic_write, cache_root, try_lock

if TYPE_CHECKING:  # annotations only: `bench --version` reads bench_version() without the configuration
    from bench.config import DataConfig, ModelConfig, RunConfig

CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprints:
    data: str  # e.g. 'folder:3f2a...' (content of the files), 'cifar10:...' (the published checksums)
    weights: str  # 'none' (random init) or 'sha256:...' of the weights file actually loaded


# ---- hashing, remembered by file stats ---------------------------------------------------------


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _remembered(key: str, compute) -> str:
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

    return _remembered("file|" + _stat_key(path), compute)


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
    from bench.data import DataError

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
    stats = hashlib.sha256("\n".join(_stat_key(p) for p in entries).encode()).hexdigest()

    def compute() -> str:
        h = hashlib.sha256()
        for p in entries:
            h.update(str(p.relative_to(root)).encode() + (b"/" if p.is_dir() else b"\0"))
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()

    return _remembered(f"tree|{root.resolve()}|{stats}", compute)


# ---- fingerprints -----------------------------------------------------------------------------


def data_fingerprint(cfg: DataConfig) -> str:
    """What the images are. Raises DataError when a folder source does not exist."""
    from bench.data import official

    if cfg.source in official.OFFICIAL:  # an official release, read by torchvision
        return official.fingerprint(cfg)
    if cfg.source == "digits":
        return f"digits:{_digits_digest()}"
    from bench.data import DataError

    path = Path(cfg.path)
    if path.is_dir():
        return "folder:" + tree_sha256(path)[:16]
    if path.is_file():
        return "folder:" + file_sha256(path)[:16]
    raise DataError(
        f"data.path {path} does not exist: set it to an image-folder tree with train/ and test/, or to its .tar.gz"
    )


@cache
def _digits_digest() -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    return hashlib.sha256(d.images.tobytes() + d.target.tobytes()).hexdigest()[:16]


def weights_file(model: ModelConfig) -> Path | None:
    """The file a model's weights load from (it may not exist yet); None for random init."""
    kind, _, tag = model.weights.partition(":")
    if kind == "file":
        return Path(tag)
    if kind == "torchvision":
        import torchvision

        from bench.models import hub_file

        return hub_file(torchvision.models.get_model_weights(model.arch)[tag].url)
    if kind == "timm":
        import timm
        from huggingface_hub import try_to_load_from_cache

        hub_id = timm.models.get_pretrained_cfg(tag).hf_hub_id
        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, name)
            if isinstance(found, str):
                return Path(found)
        return None
    return None


def weights_fingerprint(model: ModelConfig) -> str | None:
    """sha256 of the weights file actually loaded; 'none' for random init; None when the file is not here."""
    if model.weights == "none":
        return "none"
    path = weights_file(model)
    if path is None or not path.is_file():
        return None
    return "sha256:" + file_sha256(path)[:16]


def fingerprints(cfg: RunConfig) -> Fingerprints | None:
    """Both fingerprints, or None when the weights file is not here yet (download it first)."""
    weights = weights_fingerprint(cfg.model)
    return None if weights is None else Fingerprints(data_fingerprint(cfg.data), weights)


@cache
def bench_version() -> str:
    """bench's version and a hash of its source, e.g. '0.2.0+3f2a1b4c' (no torch: `bench --version` uses it)."""
    source = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for p in sorted(package.rglob("*")):
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts:
            source.update(str(p.relative_to(package)).encode() + b"\0" + p.read_bytes())
    return f"{metadata.version('bench')}+{source.hexdigest()[:8]}"


@cache
def code_versions() -> dict[str, str]:
    """bench's version and a hash of its source, and the versions of the libraries that compute results."""
    import timm
    import torch
    import torchvision

    return {
        "bench": bench_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
    }


# ---- the run id --------------------------------------------------------------------------------


# Keys added after runs were first stored, with the value that means "this feature is off": left out of a
# run's identity while at that value, so a new feature never changes the id (and the reuse) of older runs.
# A key's neutral value must keep its meaning for good; new keys join here.
ADDED_KEYS = {
    "data.train_fraction": None,
    "data.image_size": None,
    "train.backbone_lr_mult": 1.0,
    "train.layer_decay": None,
    "train.no_decay_norm_bias": False,
    "train.unfreeze_after": None,
    "train.unfreeze_every": 1,
    "train.compile": False,
    "train.nesterov": True,
    "train.milestones": [],
    "train.warmup_shape": "linear",
}


def identity(cfg: RunConfig, fp: Fingerprints) -> dict:
    """Everything that decides a run's result, with no path in it."""
    tree = cfg.model_dump(mode="json")
    for key, neutral in ADDED_KEYS.items():
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node[p]
        if node[leaf] == neutral:
            del node[leaf]
    tree["data"]["path"] = None  # where the images lie is not what they are: the fingerprint is
    tree["data"].pop("download", None)
    if cfg.model.weights.startswith("file:"):
        tree["model"]["weights"] = "file"
    tree["fingerprints"] = {"data": fp.data, "weights": fp.weights}
    return tree


def run_id(cfg: RunConfig, fp: Fingerprints) -> str:
    return hashlib.sha256(json.dumps(identity(cfg, fp), sort_keys=True).encode()).hexdigest()[:12]


def resolve(variants: list, strict: bool = True) -> tuple[list, dict[str, str]]:
    """The variants with their fingerprints set, and {variant name: why it has none} for the rest.

    strict: a missing data set or weights file raises DataError/WeightsError (the weights are
    loaded through their library, which downloads them when it can), as `bench run` needs.
    """
    from bench.data import DataError
    from bench.models import WeightsError, build_backbone

    memo: dict = {}
    out, missing = [], {}
    for v in variants:
        key = (v.config.data, v.config.model)
        if key not in memo:
            try:
                if strict:
                    from bench.data import official

                    official.fetch(v.config.data)  # a download where allowed, as for the weights below
                fp = fingerprints(v.config)
                if fp is None and strict:
                    build_backbone(
                        v.config.model.weights, v.config.model.arch
                    )  # the library's own error, or a download
                    fp = fingerprints(v.config)
                where = weights_file(v.config.model) or "the Hugging Face cache"
                memo[key] = fp or f"weights {v.config.model.weights} not here (looked in {where})"
            except (DataError, WeightsError) as e:
                if strict:
                    raise
                memo[key] = str(e).splitlines()[0]
        if isinstance(memo[key], Fingerprints):
            out.append(replace(v, fingerprints=memo[key]))
        else:
            out.append(v)
            missing[v.name] = memo[key]
    return out, missing
