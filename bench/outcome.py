"""What one training run returns (bench.train.fit, bench.probes.fit_probe): a leaf both build on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class Outcome:
    history: list[dict]  # one row per epoch
    test_logits: np.ndarray  # (N_test, classes) float32, from the selected epoch's weights
    best_epoch: int  # the epoch whose weights produced test_logits
    seconds: float
    # 'computed' or 'hit' (backbone features), 'prefix computed' or 'prefix hit' (frozen-prefix outputs),
    # 'off' or 'off: why' (the whole network runs every epoch)
    feature_cache: str
    precision: str  # 'bfloat16' or 'float16' (autocast), or 'fp32'
    model: torch.nn.Module  # the whole classifier, with the selected epoch's weights
