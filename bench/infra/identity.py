"""What made a run: content fingerprints of its data, weights and code, and the run id built from them.

A run id hashes the resolved configuration *without paths*, together with the fingerprints of
the data and the weights, so a result is reused only for the same images and the same weights
wherever they lie, and never for other ones at the same path. The code (bench's version and
source, torch, torchvision, timm) is recorded beside it: a run made by other code keeps its id
and is shown as such (`bench run --rerun-stale` re-runs it). The hashing itself is bench.infra.hashing's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING

from bench.infra.hashing import bench_version, file_sha256, library_versions
from bench.pretrained import weights_file

if TYPE_CHECKING:  # annotations only
    from bench.config import ModelConfig, RunConfig


@dataclass(frozen=True)
class Fingerprints:
    data: str  # e.g. 'folder:3f2a...' (content of the files), 'cifar10:...' (the published checksums)
    weights: str  # 'none' (random init) or 'sha256:...' of the weights file actually loaded


# ---- fingerprints -----------------------------------------------------------------------------


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
    from bench.data import data_fingerprint

    return None if weights is None else Fingerprints(data_fingerprint(cfg.data), weights)


@cache
def code_versions() -> dict[str, str]:
    """bench's version and a hash of its source, and the versions of the libraries that compute results."""
    return {"bench": bench_version(), **library_versions()}


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
    if cfg.model.weights_spec.kind == "file":
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
    from bench.pretrained import WeightsError

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
                    from bench.models import build_backbone

                    build_backbone(v.config.model.weights, v.config.model.arch)  # the library's error, or a download
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
