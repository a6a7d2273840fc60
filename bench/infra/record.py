"""The run record: what a run folder holds, and the keys of each file, defined once.

The store writes records through these types and the report side reads them back through
them, so a file that lacks a key, has a null where a number belongs or the wrong shape is
caught in one place (`RecordError`) instead of as a traceback deep in a table.

    config.json       RunHeader: run id, study, variant, seed, overrides, the resolved config
    status.json       RunStatus: running | done | failed (+ why), written last
    history.csv       HistoryRow, one row per epoch (a probe: one per setting tried)
    metrics.json      RunMetrics: test metrics from scikit-learn, selection, timings, provenance
    predictions.csv   PREDICTION_COLUMNS + one probability column per class (p_<class>)
    checkpoint.pt     the last finished epoch, only while the run is unfinished
    weights.safetensors  the tested weights of the whole classifier, kept for networks of at most
                      KEEP_WEIGHTS_MAX parameters (He et al.'s CIFAR networks: scripts/export_weights.py)
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG, STATUS, HISTORY, METRICS, PREDICTIONS, CHECKPOINT, WEIGHTS = (
    "config.json",
    "status.json",
    "history.csv",
    "metrics.json",
    "predictions.csv",
    "checkpoint.pt",
    "weights.safetensors",
)
# Tested weights are kept for small networks only (8 MB of float32): a ResNet-110 has 1.7M parameters, a
# ResNet-50 25M (100 MB a run, thousands of MB over a study).
KEEP_WEIGHTS_MAX = 2_000_000
DONE_FILES = (METRICS, PREDICTIONS, HISTORY)  # a run is done only when all of these exist


class HistoryRow(TypedDict, total=False):
    """One row of history.csv, its keys in column order: an epoch of bench.training.loop, or one setting a probe
    fitted (bench.training.probes: no steps, lr NaN, then its l2 / k / temperature and whether it was selected)."""

    epoch: int
    steps: int  # optimizer steps (iterations) so far, Figure 6's x-axis
    lr: float  # the mean learning rate over the epoch's steps
    train_loss: float  # train and val loss both include train.label_smoothing
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    train_images_per_sec: float
    trains: str  # gradual unfreezing (train.unfreeze_after): what trained this epoch, e.g. 'head+layer4'
    l2: float  # a probe's settings, NaN where they are another probe's: logreg's l2, k-NN's k and temperature
    k: float
    temperature: float
    selected: bool  # the probe refitted with the chosen setting


PREDICTION_COLUMNS = ("index", "label", "pred")


class RecordError(ValueError):
    """A record file that does not have the shape this version of bench writes."""


class Record(BaseModel):
    # Records from newer versions may carry keys this one does not know: keep them, read the rest.
    model_config = ConfigDict(extra="allow")


class ClassMetrics(Record):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    class_: str = Field(alias="class")
    precision: float
    recall: float
    f1: float
    support: int


class TestMetrics(Record):
    accuracy: float = Field(ge=0, le=1)
    precision_macro: float = Field(ge=0, le=1)
    recall_macro: float = Field(ge=0, le=1)
    f1_macro: float = Field(ge=0, le=1)
    per_class: list[ClassMetrics] = Field(min_length=2)
    confusion_matrix: list[list[int]]

    @model_validator(mode="after")
    def _shapes(self):
        n = len(self.per_class)
        if len(self.confusion_matrix) != n or any(len(row) != n for row in self.confusion_matrix):
            raise ValueError(f"confusion_matrix must be {n} x {n}, one row and column per class")
        return self


class RunMetrics(Record):
    test: TestMetrics
    best_epoch: int  # the epoch whose weights were tested (train.select: best or last)
    best_val_acc: float  # validation accuracy of that epoch (the best one unless train.select is last)
    final_train_acc: float
    final_val_acc: float
    epochs: int
    train_seconds: float
    train_images_per_sec: float
    feature_cache: str = "off"  # a bench.training.outcome.FeatureCache value, or 'off: why'
    weights: str = "?"  # in words: 'pretrained (torchvision:IMAGENET1K_V1)' or 'random init ...'
    pretrained: bool = True
    dataset: str = "?"
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    device: str = "?"
    precision: str = "?"
    memory_format: str = "?"  # the network's (training.device.memory_format); "?" in older records
    optimizer_impl: str = "?"  # torch's fused or default implementation; "none" for a probe
    versions: dict[str, str] = Field(default_factory=dict)
    # cpu (model name), isa (what torch dispatches to, and the CPU's vector flags), gpu (model or none):
    # the same run id can give other numbers on another processor. Empty in records that predate it.
    hardware: dict[str, str] = Field(default_factory=dict)

    def dump(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


class RunHeader(Record):
    run_id: str
    study: str = ""
    variant: str = ""
    seed: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any]
    identity: dict[str, Any] | None = None  # settings without paths + data/weights fingerprints (bench.infra.identity)
    code: dict[str, str] = Field(default_factory=dict)  # bench (version+source hash), torch, torchvision, timm


class RunStatus(Record):
    state: Literal["running", "done", "failed"]
    started: str | None = None
    finished: str | None = None
    host: str | None = None
    pid: int | None = None
    error: str | None = None
    detail: str | None = None


class StudyEntry(Record):
    name: str
    seed: int
    run_id: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class StudyManifest(Record):
    """results/studies/<study>.json: which run each (variant, seed) of a study is."""

    study: str
    file: str = ""
    description: str = ""
    command: str = ""
    updated: str | None = None
    variants: list[StudyEntry]


def parse(kind: type[Record], obj: Any, what: str) -> Any:
    """Validate a record read from disk; RecordError names the first bad key."""
    try:
        return kind.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(top level)"
        raise RecordError(f"{what}: {where}: {err['msg'].lower()}") from None


def check_predictions(p: pd.DataFrame, n_test: int | None) -> pd.DataFrame:
    """predictions.csv in image order; RecordError when columns, cells or row count are wrong."""
    if not set(PREDICTION_COLUMNS) <= set(p.columns) or p[list(PREDICTION_COLUMNS)].isna().any().any():
        raise RecordError(f"expected columns {', '.join(PREDICTION_COLUMNS)} with no empty cells")
    if n_test is not None and len(p) != n_test:
        raise RecordError(f"{len(p)} rows, but metrics.json says {n_test} test images")
    return p.sort_values("index").reset_index(drop=True)


def check_history(h: pd.DataFrame) -> pd.DataFrame:
    needed = ("epoch", "train_loss", "val_loss", "train_acc", "val_acc")
    if not set(needed) <= set(h.columns):
        raise RecordError(f"expected columns {', '.join(needed)}")
    return h
