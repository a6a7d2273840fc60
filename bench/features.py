"""Feature cache: a frozen backbone on deterministic inputs is run once, not once per epoch.

When the whole backbone is frozen and there is no random augmentation, every epoch would
push the same images through the same function. So the pooled features of each split
are computed once per (weights, resolution, normalization, data, precision), kept on disk,
and the head trains on them. Every variant and epoch that shares those settings reuses them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from bench import identity, transforms
from bench import prefix as bench_prefix
from bench.config import RunConfig
from bench.data import Dataset
from bench.device import autocast
from bench.files import atomic_save
from bench.transforms import BatchTransform


def cacheable(cfg: RunConfig) -> bool:
    return cfg.model.freeze == "backbone" and cfg.input.augment == "none"


def cache_key(cfg: RunConfig, data: Dataset, dtype: torch.dtype | None, prefix: bool = False) -> str:
    """The features' identity: the images' content and split, the weights' content, the input
    pipeline, the precision; never a path, so moved data or weights still hit and changed ones never do."""
    what = {
        "arch": cfg.model.arch,
        "weights": identity.weights_fingerprint(cfg.model),
        "input": cfg.input.model_dump(mode="json"),
        "data": data.fingerprint,
        "dtype": str(dtype),
        "code": identity.code_versions(),  # a fix in bench, torch, torchvision or timm computes them anew
    }
    if cfg.model.weights == "none":  # a random backbone depends on the seed that drew it
        what["seed"] = cfg.seed
    if prefix:  # the outputs of the frozen stages only (bench.prefix)
        what["prefix"] = cfg.model.freeze
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def predict(
    net: torch.nn.Module,
    x: torch.Tensor,
    transform: BatchTransform | None,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None,
    advance: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """`net` in eval mode over every row of `x` (uint8 images, or features when `transform` is None),
    in order; float32 outputs on `device`."""
    net.eval()
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size].to(device, non_blocking=True)
        batch = transform(batch) if transform else batch
        with autocast(device, dtype):
            out.append(net(batch).float())
        if advance:
            advance(len(batch))
    return torch.cat(out)


def split_features(
    backbone: torch.nn.Module,
    data: Dataset,
    cfg: RunConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    batch_size: int,
    cache_dir: Path,
    progress=None,
    prefix: bool = False,
) -> tuple[dict[str, torch.Tensor], bool]:
    """{'train'|'val'|'test': (N, width) features} from `cache_dir` or computed now; and whether it hit.
    `prefix`: `backbone` is a frozen prefix (bench.prefix), whose outputs are kept on disk only when small enough."""
    path = cache_dir / f"{cache_key(cfg, data, dtype, prefix)}.pt"
    if path.exists():
        try:
            feats = torch.load(path, map_location=device, weights_only=True)
            if all(len(feats[s]) == len(getattr(data, s)) for s in ("train", "val", "test")):
                return feats, True
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    transform = transforms.for_run(cfg, data, False)
    total = len(data.train) + len(data.val) + len(data.test)
    what = "frozen prefix outputs" if prefix else "backbone features"
    advance = progress(f"{what} (computed once, then cached)", total) if progress else None
    feats = {
        s: predict(backbone, getattr(data, s).x, transform, batch_size, device, dtype, advance)
        for s in ("train", "val", "test")
    }
    nbytes = sum(f.numel() * f.element_size() for f in feats.values())
    if not prefix or bench_prefix.keep_on_disk(path, nbytes):
        atomic_save(path, lambda f: torch.save({k: v.cpu() for k, v in feats.items()}, f))
    return feats, False
