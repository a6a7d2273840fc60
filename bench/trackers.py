"""Experiment trackers, optional extras: MLflow (any tracking URI, e.g. a local SQLite file) and
TensorBoard event files. Each finished run is copied there from its record in the store once it
ends: one MLflow run per bench run (the flattened config as params, the history as per-epoch
metrics, the test metrics, the record files as artifacts) and one TensorBoard folder per run.
Nothing is logged while a run trains, so a tracker costs training no time at all.

    pip install -e '.[trackers]'
    bench run ablations.yaml --mlflow sqlite:///mlflow.db --tensorboard runs/tb
    bench report --mlflow sqlite:///mlflow.db        # the report files, as a run's artifacts
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import record
from bench.store import Store
from bench.util import flatten

TEST_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")


class TrackerError(Exception):
    """A tracker that cannot be used (its package missing, its store unreachable)."""


def _require(module: str, extra: str = "trackers"):
    try:
        return __import__(module)
    except ImportError:
        raise TrackerError(f"{module} is not installed: pip install -e '.[{extra}]'") from None


class MLflow:
    def __init__(self, uri: str, experiment: str):
        _require("mlflow")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment = found.experiment_id if found else self.client.create_experiment(experiment)

    def log_run(self, store: Store, label: str, seed: int, run_id: str) -> str:
        """One MLflow run for a finished bench run; returns its MLflow id."""
        header, metrics = store.read_header(run_id), store.read_metrics(run_id)
        history = store.read_history(run_id)
        tags = {"bench.run_id": run_id, "bench.variant": label, "bench.seed": str(seed)}
        tags.update({f"bench.code.{k}": v for k, v in header.code.items()})
        tags.update({f"bench.fingerprint.{k}": v for k, v in (header.identity or {}).get("fingerprints", {}).items()})
        run = self.client.create_run(self.experiment, run_name=f"{label} (seed {seed})", tags=tags)
        rid = run.info.run_id
        for key, value in flatten(header.config).items():
            self.client.log_param(rid, key, value)
        for _, row in history.iterrows():
            for column in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                if column in row and not math.isnan(float(row[column])):
                    self.client.log_metric(rid, column, float(row[column]), step=int(row["epoch"]))
        for key in TEST_METRICS:
            self.client.log_metric(rid, f"test_{key}", getattr(metrics.test, key))
        self.client.log_metric(rid, "train_seconds", metrics.train_seconds)
        for name in (record.CONFIG, record.METRICS, record.HISTORY, record.PREDICTIONS):
            self.client.log_artifact(rid, str(store.run_dir(run_id) / name))
        self.client.set_terminated(rid)
        return rid

    def log_report(self, files: list[Path], study: str) -> str:
        run = self.client.create_run(self.experiment, run_name=f"report: {study}", tags={"bench.report": study})
        for f in files:
            self.client.log_artifact(run.info.run_id, str(f), artifact_path=str(f.parent.name))
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id


class TensorBoard:
    def __init__(self, folder: Path, study: str):
        _require("tensorboard")
        self.folder = Path(folder) / study

    def log_run(self, store: Store, label: str, seed: int, run_id: str) -> Path:
        """A folder of event files per run: the history per epoch, the test metrics at the last epoch."""
        from torch.utils.tensorboard import SummaryWriter

        history, metrics = store.read_history(run_id), store.read_metrics(run_id)
        path = self.folder / f"{label.replace('/', '_')} seed{seed} {run_id}"
        with SummaryWriter(str(path)) as w:
            for _, row in history.iterrows():
                for column in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                    if column in row and not math.isnan(float(row[column])):
                        w.add_scalar(column, float(row[column]), int(row["epoch"]))
            last = int(history["epoch"].max())
            for key in TEST_METRICS:
                w.add_scalar(f"test_{key}", getattr(metrics.test, key), last)
        return path


def trackers(study: str, mlflow: str | None, tensorboard: Path | None) -> list:
    """The trackers asked for (on the command line or in the study file's `trackers:`)."""
    out = []
    if mlflow:
        out.append(MLflow(mlflow, study))
    if tensorboard:
        out.append(TensorBoard(tensorboard, study))
    return out
