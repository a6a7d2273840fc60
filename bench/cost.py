"""Rough compute of a run, for `bench list`: forward multiply-adds per architecture and resolution,
counted by torch's FlopCounterMode, and per stage, so the share a freeze setting trains is computed.

Multiply-adds are FlopCounterMode's FLOPs / 2: the convention of torchvision's "GFLOPS" (ResNet-50 at
224 px: 4.09) and of He et al.'s tables. They are counted once per (arch, resolution) on a random-init
model on the meta device (no memory, no weights) with a batch of one, and remembered in memory and in
<cache>/flops.json.
"""

from __future__ import annotations

import functools
import json

from bench.config import RunConfig, features_cacheable, frozen_stages, prefix_cacheable
from bench.data.catalog import OFFICIAL
from bench.infra.files import atomic_write, cache_root, read_memo
from bench.infra.hashing import library_versions

# (training images, validation images or None: carved from training, test images) per data.source
SIZES = {
    **{name: spec.sizes for name, spec in OFFICIAL.items()},
    "folder": (50_000, None, 10_000),  # unknown until read: sized as CIFAR-10
    "digits": (1_347, None, 450),
}


@functools.cache
def stage_macs(arch: str, resolution: int) -> dict[str, float]:
    """{'total': multiply-adds of one image's forward pass, then one entry per stage of models.stages
    ('stem', 'layer1'.. or 'stage1'.., 'tail')}; what no stage holds (pooling) is in the total only."""
    return _macs(arch, resolution, split=True)


@functools.cache
def forward_macs(arch: str, resolution: int) -> float:
    """Multiply-adds of one image's forward pass: stage_macs' total, counted without the stage split (which
    imports timm, seconds, for its grouping rules)."""
    return _macs(arch, resolution, split=False)["total"]


def _macs(arch: str, resolution: int, split: bool) -> dict[str, float]:
    key = f"{arch}@{resolution} " + " ".join(f"{name} {version}" for name, version in library_versions().items())
    path = cache_root() / "flops.json"
    if key in (memo := read_memo(path)) and (not split or len(memo[key]) > 1):
        return memo[key]
    import torch  # only to count: a remembered count needs no torch (bench list stays light)
    from torch.utils.flop_counter import FlopCounterMode

    from bench import models

    with torch.device("meta"):
        net = models.build_backbone("none", arch).eval()
        x = torch.zeros(1, 3, resolution, resolution)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    per_module = counter.get_flop_counts()  # 'ResNet.layer1' -> {op: FLOPs}, submodules included
    root = type(net).__name__
    out = {"total": counter.get_total_flops() / 2}
    for stage, params in models.stages(net).items() if split else ():
        mods = models.whole_modules(net, set(params))
        out[stage] = sum(sum(per_module.get(f"{root}.{m}", {}).values()) for m in mods) / 2
    memo = read_memo(path)  # another process may have added entries meanwhile
    if len(memo.get(key, ())) > len(out):
        return memo[key]  # it counted the stages too
    memo[key] = out
    atomic_write(path, json.dumps(memo, indent=1))
    return out


def trainable_share(arch: str, resolution: int, freeze: str) -> float:
    """Share of the forward multiply-adds in the stages that `freeze` leaves trainable."""
    if freeze == "backbone":
        return 0.0
    macs = stage_macs(arch, resolution)
    names = [s for s in macs if s not in ("total", "tail")]
    return 1 - sum(macs[s] for s in frozen_stages(freeze, names, arch)) / macs["total"]


def estimate_tflops(cfg: RunConfig) -> float:
    """Rough compute of a run (tera multiply-adds): backward costs about twice the forward of the
    trainable stages; a cacheable frozen backbone, or a probe, runs once over every image."""
    n_all, n_val, n_test = SIZES[cfg.data.source]
    if n_val is None:
        n_val = min(cfg.data.val_size, n_all)
        n_all -= n_val
    n_train = round(cfg.data.train_fraction * n_all) if cfg.data.train_fraction else cfg.data.limit_train or n_all
    n_train = min(n_train, n_all)
    n_test = min(cfg.data.limit_test or n_test, n_test)
    fwd = forward_macs(cfg.model.arch, cfg.input.resolution) / 1e12
    if features_cacheable(cfg) or cfg.model.head.kind != "mlp":
        return fwd * (n_train + n_val + n_test)
    share = trainable_share(cfg.model.arch, cfg.input.resolution, cfg.model.freeze)
    if prefix_cacheable(cfg) and "resnet" in cfg.model.arch:  # the frozen prefix runs once (training.prefix)
        once = fwd * (1 - share) * (n_train + n_val + n_test)
        return once + (n_train * fwd * 3 * share + n_val * fwd * share) * cfg.train.epochs + n_test * fwd * share
    per_epoch = n_train * fwd * (1 + 2 * share) + n_val * fwd
    return per_epoch * cfg.train.epochs + n_test * fwd
