"""Experiment trackers, optional extras: MLflow (any tracking URI, e.g. a local SQLite file),
TensorBoard event files and Weights & Biases. Each finished run is copied there from its record in
the store once it ends: one tracker run per bench run (the flattened config as params, the history as
per-epoch metrics, the test metrics; MLflow also gets the record files as artifacts). Nothing is
logged while a run trains, so a tracker costs training no time at all.

    pip install -e '.[trackers]'        # MLflow, TensorBoard;  pip install -e '.[wandb]' for W&B
    bench run ablations.yaml --mlflow sqlite:///mlflow.db --tensorboard runs/tb --wandb
    WANDB_MODE=offline bench run ...                 # W&B without internet: `wandb sync` uploads later
    bench report --mlflow sqlite:///mlflow.db        # the report files, as a run's artifacts
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.infra import record
from bench.infra.store import Store
from bench.util import flatten

TEST_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
HISTORY_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
MLFLOW_BATCH = 100  # MLflow's REST API takes at most 100 parameters (and 1000 metrics) per log_batch call


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
        from mlflow.entities import Metric, Param

        run = self.client.create_run(self.experiment, run_name=f"{label} (seed {seed})", tags=tags)
        rid, now = run.info.run_id, run.info.start_time
        params = [Param(key, str(value)) for key, value in flatten(header.config).items()]
        values = [Metric(k, v, now, step) for step, row in epochs(history) for k, v in row.items()]
        values += [Metric(f"test_{key}", getattr(metrics.test, key), now, 0) for key in TEST_METRICS]
        values.append(Metric("train_seconds", metrics.train_seconds, now, 0))
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(rid, params=params[i : i + MLFLOW_BATCH])
        for i in range(0, len(values), 10 * MLFLOW_BATCH):
            self.client.log_batch(rid, metrics=values[i : i + 10 * MLFLOW_BATCH])
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
            for step, row in epochs(history):
                for column, value in row.items():
                    w.add_scalar(column, value, step)
            last = int(history["epoch"].max())
            for key in TEST_METRICS:
                w.add_scalar(f"test_{key}", getattr(metrics.test, key), last)
        return path


class WandB:
    """One W&B run per bench run: project = the study, group = the variant (its seeds side by side), the
    flattened config, the history per epoch (step = epoch), the test metrics in the summary. WANDB_MODE,
    WANDB_DIR, WANDB_ENTITY and the login are W&B's own settings; WANDB_MODE=offline needs no internet."""

    def __init__(self, study: str):
        self.wandb = _require("wandb", "wandb")
        self.project = study

    def log_run(self, store: Store, label: str, seed: int, run_id: str) -> str:
        """Returns the W&B run's folder (offline: what `wandb sync` uploads)."""
        header, metrics = store.read_header(run_id), store.read_metrics(run_id)
        config = flatten(header.config) | {"bench.run_id": run_id, "bench.seed": seed}
        config |= {f"bench.code.{k}": v for k, v in header.code.items()}
        # console="off": W&B leaves the caller's stdout and stderr alone (the progress bars draw there)
        settings = self.wandb.Settings(console="off", quiet=True, x_save_requirements=False, disable_git=True)
        run = self.wandb.init(
            project=self.project,
            group=label,
            name=f"{label} (seed {seed})",
            config=config,
            settings=settings,
            reinit="create_new",  # one run per bench run, even where the caller has a W&B run open
        )
        with run:
            for step, row in epochs(store.read_history(run_id)):
                run.log(row, step=step)
            run.summary.update({f"test_{key}": getattr(metrics.test, key) for key in TEST_METRICS})
            run.summary["train_seconds"] = metrics.train_seconds
        return str(Path(run.dir).parent)


def epochs(history) -> list[tuple[int, dict[str, float]]]:
    """(epoch, {metric: value}) per history row, the metrics a row has (no NaN: lr is absent for probes)."""
    out = []
    for _, row in history.iterrows():
        values = {c: float(row[c]) for c in HISTORY_METRICS if c in row and not math.isnan(float(row[c]))}
        out.append((int(row["epoch"]), values))
    return out


def trackers(study: str, mlflow: str | None, tensorboard: Path | None, wandb: bool = False) -> list:
    """The trackers asked for (on the command line or in the study file's `trackers:`)."""
    out = []
    if mlflow:
        out.append(MLflow(mlflow, study))
    if tensorboard:
        out.append(TensorBoard(tensorboard, study))
    if wandb:
        out.append(WandB(study))
    return out
