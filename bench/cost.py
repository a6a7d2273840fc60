"""Rough compute of a run, for `bench list`: how many multiply-adds its plan will take."""

from __future__ import annotations

from bench import features
from bench.config import RunConfig

# Forward multiply-adds of ResNet-50 at 224 px (torchvision's figure, 4.09 GFLOPS), and the
# share of them in the stages that a `freeze` setting leaves trainable (from per-stage counts).
GFLOPS_224 = 4.09
TRAINABLE_SHARE = {
    "backbone": 0.0,
    "stem-layer3": 0.20,
    "stem-layer2": 0.46,
    "stem-layer1": 0.72,
    "stem": 0.97,
    "none": 1.0,
}
SIZES = {"cifar10": (50_000, 10_000), "folder": (50_000, 10_000), "digits": (1_347, 450)}


def estimate_tflops(cfg: RunConfig) -> float:
    """Rough compute of a run, for `bench list`: backward costs about twice the forward of the
    trainable stages; a cacheable frozen backbone runs once over every image."""
    n_all, n_test = SIZES[cfg.data.source]
    n_val = min(cfg.data.val_size, n_all)
    n_train = min(cfg.data.limit_train or n_all, n_all - n_val)
    n_test = min(cfg.data.limit_test or n_test, n_test)
    fwd = GFLOPS_224 * (cfg.input.resolution / 224) ** 2 / 1000
    if features.cacheable(cfg):
        return fwd * (n_train + n_val + n_test)
    per_epoch = n_train * fwd * (1 + 2 * TRAINABLE_SHARE[cfg.model.freeze]) + n_val * fwd
    return per_epoch * cfg.train.epochs + n_test * fwd
