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

from bench.config import RunConfig
from bench.data import Dataset
from bench.infra import identity
from bench.infra.files import atomic_save
from bench.training import layout, transforms
from bench.training import prefix as bench_prefix
from bench.training.device import EvalBatch, autocast, release_memory
from bench.training.transforms import BatchTransform


def cache_key(
    cfg: RunConfig, data: Dataset, dtype: torch.dtype | None, prefix: bool = False, fmt: str = "contiguous"
) -> str:
    """The features' identity: the images' content and split, the weights' content, the input
    pipeline, the precision and memory format (`fmt`: each changes the last bits); never a path, so moved data
    or weights still hit and changed ones never do."""
    what = {
        "arch": cfg.model.arch,
        "weights": identity.weights_fingerprint(cfg.model),
        "input": cfg.input.model_dump(mode="json"),
        "data": data.fingerprint,
        "dtype": str(dtype),
        "layout": fmt,
        "batchnorm": "as is" if prefix else "folded",  # into the convolutions (layout.folded): float rounding
        "code": identity.code_versions(),  # a fix in bench, torch, torchvision or timm computes them anew
    }
    if cfg.model.weights == "none":  # a random backbone depends on the seed that drew it
        what["seed"] = cfg.seed
    if prefix:  # the outputs of the frozen stages only (bench.training.prefix)
        what["prefix"] = cfg.model.freeze
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def predict(
    net: torch.nn.Module,
    x: torch.Tensor,
    transform: BatchTransform | None,
    batch_size: int | EvalBatch,
    device: torch.device,
    dtype: torch.dtype | None,
    advance: Callable[[int], None] | None = None,
    out_dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """`net` in eval mode over every row of `x` (uint8 images, or features when `transform` is None), in order:
    one tensor on `device` in `out_dtype` (None: as computed), filled batch by batch (no list and its copy).
    A batch that runs out of GPU memory is tried again at half the size (an EvalBatch keeps that size)."""
    net.eval()
    out, i, size = None, 0, int(batch_size)
    while i < len(x):
        try:
            batch = x[i : i + size]
            batch = transform(batch, device) if transform else batch.to(device, non_blocking=True)
            with autocast(device, dtype):
                y = net(batch)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            failed = True
        else:
            failed = False
        if failed:  # outside the except block, whose traceback would keep the failed batch's tensors alive
            batch = y = None
            release_memory(device)
            size //= 2
            if isinstance(batch_size, EvalBatch):
                batch_size.size = size
            continue
        if out is None:
            out = torch.empty((len(x), *y.shape[1:]), dtype=out_dtype or y.dtype, device=device)
        out[i : i + len(y)] = y
        i += len(y)
        if advance:
            advance(len(y))
    return out if out is not None else torch.empty((0,), dtype=out_dtype or torch.float32, device=device)


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
    `prefix`: `backbone` is a frozen prefix (training.prefix), whose outputs are kept on disk only when small
    enough."""
    path = cache_dir / f"{cache_key(cfg, data, dtype, prefix, layout.format_of(backbone))}.pt"
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
    # a frozen prefix's outputs (large) are kept as computed (bf16 under bf16 autocast: half the memory of
    # fp32, the same values; bench.training.prefix.Rest upcasts each batch); pooled features as float32
    out_dtype = None if prefix else torch.float32
    # a whole frozen backbone runs with its BatchNorms folded (constant affine maps); a frozen prefix does not: the
    # stages after it train on its outputs, as they would on the prefix inside the whole network
    net = backbone if prefix else layout.folded(backbone)
    feats = {
        s: predict(net, getattr(data, s).x, transform, batch_size, device, dtype, advance, out_dtype)
        for s in ("train", "val", "test")
    }
    del net
    nbytes = sum(f.numel() * f.element_size() for f in feats.values())
    if not prefix or bench_prefix.keep_on_disk(path, nbytes):
        atomic_save(path, lambda f: torch.save({k: v.cpu() for k, v in feats.items()}, f))
    return feats, False
