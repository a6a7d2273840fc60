"""Reading the results store back for reports: studies, their runs, and what is wrong with any run.

A finished run whose metrics.json or predictions.csv is missing or malformed is named in a
warning and marked 'damaged'; failed and pending runs keep their state, so reports show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.record import RecordError, RunMetrics
from bench.store import Store


class ReportError(Exception):
    """A report or comparison that cannot be made; the message says how to fix it."""


@dataclass
class Run:
    variant: str
    seed: int
    run_id: str
    overrides: dict
    state: str  # done | failed | running | pending | damaged
    detail: str = ""
    config: dict | None = None
    metrics: RunMetrics | None = None
    history: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None

    @property
    def correct(self) -> np.ndarray:
        return (self.predictions["pred"] == self.predictions["label"]).to_numpy()


@dataclass
class StudyRuns:
    name: str
    file: str
    description: str
    command: str
    runs: list[Run]
    warnings: list[str] = field(default_factory=list)  # problems found while reading the store

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.runs))

    def done(self, variant: str) -> list[Run]:
        return sorted((r for r in self.runs if r.variant == variant and r.state == "done"), key=lambda r: r.seed)

    def of(self, variant: str) -> list[Run]:
        return [r for r in self.runs if r.variant == variant]

    def config(self, variant: str) -> dict | None:
        """The stored resolved config of the variant's first run that has one."""
        return next((r.config for r in self.of(variant) if r.config), None)


def load_runs(root: Path, name: str) -> StudyRuns:
    """A study's manifest and every run it names, read from the store at `root`."""
    store = Store(root)
    try:
        manifest = store.read_manifest(name)
    except (OSError, RecordError) as e:
        raise ReportError(
            f"cannot read {store.study_file(name)} ({e}); re-run `bench run` on the study file to rewrite it"
        ) from None
    warnings: list[str] = []
    runs = [_read_run(store, v.name, v.seed, v.run_id, v.overrides, warnings) for v in manifest.variants]
    return StudyRuns(manifest.study, manifest.file, manifest.description, manifest.command, runs, warnings)


def _read_run(store: Store, variant: str, seed: int, run_id: str, overrides: dict, warnings: list[str]) -> Run:
    d = store.run_dir(run_id)
    run = Run(variant, seed, run_id, overrides, "pending")
    try:
        run.config = store.read_header(run_id).config
    except (OSError, RecordError):
        pass
    try:
        status = store.read_status(run_id)
    except (OSError, RecordError):
        return run  # never started, or killed before it wrote anything
    run.state = status.state
    if run.state == "failed":
        why = (str(status.detail or "").splitlines() or [""])[0]
        run.detail = f"{status.error or 'failed'}: {why}" if why else str(status.error or "")
    if run.state != "done":
        return run

    def damaged(what: str, e: Exception) -> Run:
        warnings.append(f"run {d} ({run.variant}, seed {run.seed}): {what} ({type(e).__name__}: {e}); run left out")
        run.state, run.detail = "damaged", what
        return run

    try:
        run.metrics = store.read_metrics(run_id)
    except (OSError, RecordError) as e:
        return damaged("metrics.json missing or unreadable", e)
    try:
        run.predictions = store.read_predictions(run_id, run.metrics.n_test)
    except (OSError, RecordError) as e:
        return damaged("predictions.csv missing or unreadable", e)
    try:
        run.history = store.read_history(run_id)
    except (OSError, RecordError) as e:
        warnings.append(
            f"run {d} ({run.variant}, seed {run.seed}): history.csv unreadable ({e}); "
            "left out of the learning curves only"
        )
    return run


def verify(study: StudyRuns) -> list[tuple[Run, float]]:
    """Recompute each finished run's test metrics with scikit-learn straight from predictions.csv,
    independently of the code that trained it; return (run, largest absolute difference)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    out = []
    for run in (r for r in study.runs if r.state == "done"):
        y, p, saved = run.predictions["label"], run.predictions["pred"], run.metrics.test
        labels = range(len(saved.per_class))
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)
        diffs = [
            abs(saved.accuracy - accuracy_score(y, p)),
            abs(saved.precision_macro - prec),
            abs(saved.recall_macro - rec),
            abs(saved.f1_macro - f1),
            float(np.abs(np.array(saved.confusion_matrix) - confusion_matrix(y, p, labels=labels)).max()),
        ]
        out.append((run, max(diffs)))
    return out
