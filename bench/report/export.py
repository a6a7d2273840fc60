"""`bench export`: every run of every study as one tidy table (a row per run; flattened config
keys, metrics and provenance as columns), the shape pandas and seaborn expect."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.infra.store import Store
from bench.report.runs import load_runs
from bench.util import flatten

METRIC_COLUMNS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
RUN_COLUMNS = (
    "best_epoch",
    "best_val_acc",
    "final_train_acc",
    "final_val_acc",
    "epochs",
    "train_seconds",
    "train_images_per_sec",
    "feature_cache",
    "weights",
    "pretrained",
    "dataset",
    "n_train",
    "n_val",
    "n_test",
    "device",
    "precision",
)


def runs_table(root: Path, study: str | None = None) -> pd.DataFrame:
    """One row per (study, variant, seed) in the store's manifests; failed, pending and damaged runs included
    (the last without metrics: state 'damaged', and `detail` says what is wrong)."""
    rows = []
    for name in [study] if study else Store(root).study_names():
        for run in load_runs(root, name).runs:
            row = {
                "study": name,
                "variant": run.variant,
                "seed": run.seed,
                "run_id": run.run_id,
                "state": run.state,
                "detail": run.detail,
            }
            row.update({f"config.{k}": v for k, v in flatten(run.config or {}).items() if k != "seed"})
            if run.state == "done":  # a damaged run's numbers are not published: `detail` says why
                row.update({f"test_{k}": getattr(run.metrics.test, k) for k in METRIC_COLUMNS})
                row.update({k: getattr(run.metrics, k) for k in RUN_COLUMNS})
                row.update({f"hardware.{k}": v for k, v in run.metrics.hardware.items()})
            row.update({f"fingerprint.{k}": v for k, v in run.fingerprints.items()})
            row.update({f"code.{k}": v for k, v in run.code.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def write(table: pd.DataFrame, path: Path) -> None:
    """CSV or Parquet by the file's suffix (Parquet needs pyarrow: pip install -e '.[export]')."""
    from bench.infra.files import atomic_save

    if path.suffix == ".parquet":
        atomic_save(path, lambda f: table.to_parquet(f, index=False))
    else:
        atomic_save(path, lambda f: f.write(table.to_csv(index=False).encode()))
