"""What one fit reads and returns (bench.training.loop.fit, bench.training.probes.fit_probe): a leaf both
build on, and that the report reads (no torch)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    from bench.config import RunConfig
    from bench.data import Dataset
    from bench.infra.record import HistoryRow
    from bench.training.device import EvalBatch


class FeatureCache(StrEnum):
    """What a run's trained part ran on: its records keep the value (metrics.json's feature_cache)."""

    COMPUTED = "computed"  # backbone features, computed by this run
    HIT = "hit"  # backbone features from the cache: the run's time leaves out the backbone
    PREFIX_COMPUTED = "prefix computed"  # frozen-prefix outputs (bench.training.prefix), computed by this run
    PREFIX_HIT = "prefix hit"  # frozen-prefix outputs from the cache
    OFF = "off"  # the whole network ran every epoch; 'off: why' where the prefix cache was refused


@dataclass
class FitContext:
    """What every part of one fit reads: the configuration, the classifier, the data, and where and how it runs."""

    cfg: RunConfig
    model: torch.nn.Module  # the whole classifier: backbone and head
    data: Dataset
    device: torch.device
    dtype: torch.dtype | None  # autocast's; None is fp32
    eval_bs: EvalBatch  # evaluation's batch size (it halves when a batch runs out of memory)
    progress: Callable | None = None  # bench.console's progress bars: progress(what, total) -> advance(n)
    layout: str = "contiguous"  # the network's memory format (training.layout.choose): or 'channels_last'
    started: float = field(default_factory=time.perf_counter)

    def bar(self, what: str, total: int) -> Callable[[int], None] | None:
        return self.progress(what, total) if self.progress else None


@dataclass
class Outcome:
    history: list[HistoryRow]  # one row per epoch
    test_logits: np.ndarray  # (N_test, classes) float32, from the selected epoch's weights
    best_epoch: int  # the epoch whose weights produced test_logits
    seconds: float
    feature_cache: FeatureCache | str  # a FeatureCache, or 'off: why' (the prefix cache refused)
    precision: str  # 'bfloat16' or 'float16' (autocast), or 'fp32'
    model: torch.nn.Module  # the whole classifier, with the selected epoch's weights
    memory_format: str = "contiguous"  # the network's: 'channels_last' or 'contiguous' (training.layout)
    optimizer_impl: str = "none"  # 'fused' or 'default' (torch's implementation); 'none' for a probe
