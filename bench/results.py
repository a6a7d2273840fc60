"""Reading the results store back for reports: studies, their runs, and what is wrong with any run.

A finished run whose metrics.json or predictions.csv is missing or unreadable is named in a
warning and marked 'damaged'; failed and pending runs keep their state, so reports show them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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
    metrics: dict | None = None
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
    warnings: list[str] = field(default_factory=list)

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.runs))

    def done(self, variant: str) -> list[Run]:
        return sorted((r for r in self.runs if r.variant == variant and r.state == "done"), key=lambda r: r.seed)

    def of(self, variant: str) -> list[Run]:
        return [r for r in self.runs if r.variant == variant]


def study_names(root: Path) -> list[str]:
    return sorted(p.stem for p in (Path(root) / "studies").glob("*.json"))


def load_study(root: Path, name: str) -> StudyRuns:
    root = Path(root)
    path = root / "studies" / f"{name}.json"
    try:
        spec = json.loads(path.read_text())
        variants = spec["variants"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportError(f"cannot read {path} ({e}); re-run `bench run` on the study file to rewrite it") from None
    warnings: list[str] = []
    runs = [_read_run(root, v, warnings) for v in variants]
    return StudyRuns(spec.get("study", name), spec.get("file", ""), spec.get("description", ""),
                     spec.get("command", ""), runs, warnings)


def _read_json(path: Path):
    return json.loads(path.read_text())


# What the report reads from metrics.json; a run whose file lacks any of it is treated as damaged.
REQUIRED = [("test", k) for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class",
                                  "confusion_matrix")] + \
           [(k,) for k in ("best_val_acc", "final_train_acc", "final_val_acc", "epochs", "train_seconds",
                           "train_images_per_sec")]


def _read_run(root: Path, v: dict, warnings: list[str]) -> Run:
    d = root / "runs" / v["run_id"]
    run = Run(v["name"], v["seed"], v["run_id"], v.get("overrides", {}), "pending")
    try:
        run.config = _read_json(d / "config.json")["config"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        status = _read_json(d / "status.json")
        run.state = status["state"]
    except (OSError, ValueError, KeyError, TypeError):
        return run  # never started, or killed before it wrote anything
    if run.state == "failed":
        why = (str(status.get("detail") or "").splitlines() or [""])[0]
        run.detail = f"{status.get('error', 'failed')}: {why}" if why else str(status.get("error", ""))
    if run.state != "done":
        return run

    def damaged(what: str, e: Exception) -> Run:
        warnings.append(f"run {d} ({run.variant}, seed {run.seed}): {what} ({type(e).__name__}: {e}); run left out")
        run.state, run.detail = "damaged", what
        return run

    try:
        run.metrics = _read_json(d / "metrics.json")
        for path in REQUIRED:
            m = run.metrics
            for key in path:
                m = m[key]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return damaged("metrics.json missing or unreadable", e)
    try:
        p = pd.read_csv(d / "predictions.csv")
        if not {"index", "label", "pred"} <= set(p.columns) or p[["index", "label", "pred"]].isna().any().any():
            raise ValueError("expected columns index, label, pred with no empty cells")
        if len(p) != run.metrics.get("n_test", len(p)):
            raise ValueError(f"{len(p)} rows, but metrics.json says {run.metrics['n_test']} test images")
        run.predictions = p.sort_values("index").reset_index(drop=True)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        return damaged("predictions.csv missing or unreadable", e)
    try:
        run.history = pd.read_csv(d / "history.csv")
        if not {"epoch", "train_loss", "val_loss", "train_acc", "val_acc"} <= set(run.history.columns):
            raise ValueError("expected columns epoch, train_loss, val_loss, train_acc, val_acc")
    except (OSError, ValueError, pd.errors.ParserError) as e:
        warnings.append(f"run {d} ({run.variant}, seed {run.seed}): history.csv unreadable ({e}); "
                        "left out of the learning curves only")
        run.history = None
    return run


def verify(study: StudyRuns) -> list[tuple[Run, float]]:
    """Recompute each finished run's test metrics with scikit-learn straight from predictions.csv,
    independently of the code that trained it; return (run, largest absolute difference)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    out = []
    for run in (r for r in study.runs if r.state == "done"):
        y, p, saved = run.predictions["label"], run.predictions["pred"], run.metrics["test"]
        labels = range(len(saved["per_class"]))
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=labels, average="macro", zero_division=0)
        diffs = [abs(saved["accuracy"] - accuracy_score(y, p)), abs(saved["precision_macro"] - prec),
                 abs(saved["recall_macro"] - rec), abs(saved["f1_macro"] - f1),
                 float(np.abs(np.array(saved["confusion_matrix"]) - confusion_matrix(y, p, labels=labels)).max())]
        out.append((run, max(diffs)))
    return out
