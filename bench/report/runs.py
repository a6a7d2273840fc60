"""Reading the results store back for reports: studies, their runs, and what is wrong with any run.

A finished run whose metrics.json or predictions.csv is missing or malformed, or whose metrics disagree
with its predictions, is named in a warning and marked 'damaged'; failed and pending runs keep their
state, so reports show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.infra.record import RecordError, RunMetrics
from bench.infra.store import Store


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
    fingerprints: dict = field(default_factory=dict)  # data and weights, as recorded when it ran
    code: dict = field(default_factory=dict)  # bench, torch, torchvision, timm versions that made it

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
        header = store.read_header(run_id)
        run.config, run.code = header.config, header.code
        run.fingerprints = (header.identity or {}).get("fingerprints", {})
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

    def damaged(what: str, cause: str = "", then: str = "") -> Run:
        warnings.append(f"run {d} ({run.variant}, seed {run.seed}): {what}{cause}; run left out{then}")
        run.state, run.detail = "damaged", what
        return run

    try:
        run.metrics = store.read_metrics(run_id)
    except (OSError, RecordError) as e:
        return damaged("metrics.json missing or unreadable", f" ({type(e).__name__}: {e})")
    try:
        run.predictions = store.read_predictions(run_id, run.metrics.n_test)
    except (OSError, RecordError) as e:
        return damaged("predictions.csv missing or unreadable", f" ({type(e).__name__}: {e})")
    if why := disagreement(run.metrics, run.predictions):
        return damaged(why, then=" (`bench verify` checks it)")
    try:
        run.history = store.read_history(run_id)
    except (OSError, RecordError) as e:
        warnings.append(
            f"run {d} ({run.variant}, seed {run.seed}): history.csv unreadable ({e}); "
            "left out of the learning curves only"
        )
    return run


def disagreement(metrics: RunMetrics, predictions: pd.DataFrame) -> str | None:
    """How a run's metrics.json disagrees with its own predictions.csv (a hand edit, a forged file), or None:
    accuracy, macro precision, recall and F1 and the confusion matrix recomputed from the labels and predicted
    classes with numpy, cheaply enough for every read (`verify` checks the same with scikit-learn)."""
    saved = metrics.test
    n = len(saved.per_class)
    y, p = predictions["label"].to_numpy(), predictions["pred"].to_numpy()
    if len(y) and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= n):
        return f"predictions.csv holds a class index outside 0..{n - 1}"
    cm = np.bincount(y.astype(np.int64) * n + p.astype(np.int64), minlength=n * n).reshape(n, n)
    if not np.array_equal(cm, np.array(saved.confusion_matrix)):
        return "metrics.json's confusion matrix disagrees with predictions.csv"
    hits, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
    precision = np.divide(hits, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros(n), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    recomputed = {
        "accuracy": hits.sum() / max(len(y), 1),
        "precision_macro": precision.mean(),
        "recall_macro": recall.mean(),
        "f1_macro": f1.mean(),
    }
    for key, value in recomputed.items():
        if abs(getattr(saved, key) - value) > 1e-6:
            return f"metrics.json says test {key} {getattr(saved, key):.4g}, predictions.csv gives {value:.4g}"
    return None


def verify(study: StudyRuns) -> tuple[list[tuple[Run, float]], list[tuple[Run, str]]]:
    """Recompute each finished run's test metrics with scikit-learn straight from predictions.csv,
    independently of the code that trained it. Returns (run, largest absolute difference) for the
    runs checked, and (run, why) for those that could not be: damaged files, probabilities that are
    missing, not finite, not summing to 1 or not agreeing with the predicted class."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    checked, unverifiable = [], []
    for run in study.runs:
        if run.state == "damaged" and (run.metrics is None or run.predictions is None):
            unverifiable.append((run, run.detail))
            continue
        if run.state not in ("done", "damaged"):  # damaged with both files: they disagree, by how much is shown
            continue
        if why := _bad_probabilities(run):
            unverifiable.append((run, why))
            continue
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
        checked.append((run, max(diffs)))
    return checked, unverifiable


def _bad_probabilities(run: Run) -> str | None:
    columns = [c for c in run.predictions.columns if c.startswith("p_")]
    if len(columns) != len(run.metrics.test.per_class):
        return f"predictions.csv has {len(columns)} probability columns for {len(run.metrics.test.per_class)} classes"
    probs = run.predictions[columns].to_numpy(dtype=float)
    if not np.isfinite(probs).all():
        return "predictions.csv has empty or non-finite probabilities"
    sums = probs.sum(1)
    if np.abs(sums - 1).max() > 1e-3:
        return f"predictions.csv probabilities do not sum to 1 (one row sums to {sums[np.abs(sums - 1).argmax()]:.4g})"
    if (probs.argmax(1) != run.predictions["pred"].to_numpy()).any():
        return "predictions.csv: the predicted class is not the most probable one in some rows"
    return None
