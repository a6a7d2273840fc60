"""Prefix cache: a partially frozen ResNet trains only what follows its frozen stages.

With model.freeze: stem, stem-layerN or stem-stageN and deterministic inputs (no augmentation), the frozen
stem and first N stages (in eval mode: BatchNorm statistics fixed) give every image the same output in every
epoch. So that output is computed once, per (weights, frozen stages, resolution, normalisation, data,
precision; bench.training.features' key plus the stages), and every epoch runs only the trainable stages and the head on
it: a feature cache one level down. The results equal the full path's (tests/test_prefix.py).

  size     N images x the prefix's output per image (ResNet-50 behind layer3: 1024 x (resolution/16)^2
           floats; 45,000 + 5,000 + 10,000 images at 32 px: 0.98 GB), stated in the run's feature_cache
  memory   held for the run on the compute device, in the autocast dtype (bf16: half of fp32's); a prefix whose
           outputs and computing peak would take more than half of the memory this process can have there
           (a GPU's free memory and what torch's allocator holds free) is not cached, and the run says so
           ('off: ...') and trains the full path
  disk     written to the feature cache for the next run with the same prefix, when under DISK_LIMIT and
           the disk has twice that room; otherwise computed again next time

Supported: ResNets, torchvision's and timm's (the stem, layer1..layer4, a global pool). Before a prefix is used,
prefix-then-rest is checked against the whole network on two images; any other network, or one that
does not match, trains the full path.
"""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from bench import models
from bench.config import RunConfig
from bench.training.device import autocast, memory_available

DISK_LIMIT = 4 * 2**30


class Rest(nn.Module):
    """What follows the frozen prefix: the trainable stages and the pooling as `backbone` (parameter names
    as in the whole backbone, so bench.training.recipes groups them alike), then the head."""

    def __init__(self, stages: nn.Sequential, head: nn.Module):
        super().__init__()
        self.backbone, self.head = stages, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 as the whole network has it here: the outputs may be stored in bf16 (bench.training.features)
        return self.head(self.backbone(x.float()))


def split(model: models.Classifier, cfg: RunConfig) -> tuple[nn.Module, Rest] | None:
    """(frozen prefix, the rest) of a ResNet classifier, sharing its modules; None for other networks."""
    b = model.backbone
    act = getattr(b, "relu", None) or getattr(b, "act1", None)
    pool = getattr(b, "avgpool", None) or getattr(b, "global_pool", None)
    layers = [getattr(b, f"layer{i}", None) for i in range(1, 5)]
    if act is None or pool is None or any(x is None for x in (*layers, getattr(b, "conv1", None))):
        return None
    frozen = models.frozen_stages(cfg.model.freeze, models.stage_names(cfg.model.arch) or (), cfg.model.arch)
    n = len(frozen) - 1  # stages frozen after the stem
    prefix = nn.Sequential(b.conv1, b.bn1, act, b.maxpool, *layers[:n]).eval()
    tail = [(f"layer{i + 1}", layers[i]) for i in range(n, 4)] + [("pool", pool), ("flatten", nn.Flatten(1))]
    rest = Rest(nn.Sequential(OrderedDict(tail)), model.head)
    if not _same(model, prefix, rest, cfg.input.resolution):
        return None
    return prefix, rest


@torch.no_grad()
def _same(model: models.Classifier, prefix: nn.Module, rest: Rest, resolution: int) -> bool:
    """Prefix then rest computes what the whole network does (eval mode, two random images)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        return torch.allclose(rest(prefix(x)), model(x), rtol=1e-4, atol=1e-5)
    finally:
        model.train(was)


def fits(outputs: int, batch_peak: int, device: torch.device) -> str | None:
    """None when the prefix's outputs (`outputs` bytes, held for the run) and the peak of computing one batch of
    them (`batch_peak` bytes) fit in half the memory this process can have on the device that holds them (the
    GPU's, counting what torch's allocator holds free, or the host's); otherwise why not, for the run's record.
    The other half is left for training the rest of the network."""
    need = outputs + batch_peak
    available = memory_available(device)
    if available is not None and need > 0.5 * available:
        where = "GPU memory" if device.type == "cuda" else "memory"
        return (
            f"off: the frozen prefix's outputs need {need / 2**30:.1f} GiB, more than half the "
            f"{available / 2**30:.1f} GiB of {where} available"
        )
    return None


def keep_on_disk(path: Path, nbytes: int) -> bool:
    """Whether to write the outputs to the feature cache: under DISK_LIMIT and with twice the room free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return nbytes <= DISK_LIMIT and shutil.disk_usage(path.parent).free > 2 * nbytes


@torch.no_grad()
def probe(prefix: nn.Module, resolution: int, device: torch.device, dtype: torch.dtype | None) -> tuple[int, int, int]:
    """(values per image, bytes per value, peak bytes per image) of the prefix's outputs, as training.features
    computes them (eval mode, autocast to `dtype`): the peak is measured on the GPU (max_memory_allocated over a
    few images) and 0 on the host, where it is small beside the outputs."""
    x = torch.zeros(PROBE_IMAGES, 3, resolution, resolution, device=device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with autocast(device, dtype):
        y = prefix(x)
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else 0
    return y[0].numel(), y.element_size(), peak // PROBE_IMAGES


PROBE_IMAGES = 4
