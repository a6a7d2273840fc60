"""The results store: one folder of plain files per run, every file written atomically.

    <root>/runs/<run_id>/config.json       resolved config (run_id = hash of it)
                         status.json       running | done | failed (+ why), written last
                         history.csv       one row per epoch
                         metrics.json      test metrics from scikit-learn, timings, provenance
                         predictions.csv   test set: index, label, pred, one probability per class
                         checkpoint.pt     last finished epoch, only while the run is unfinished
    <root>/studies/<study>.json            which variant (name, seed) maps to which run_id

A run counts as done only when status.json says so *and* its saved config equals the one
asked for; status.json is written after everything else, so a run killed at any point is
never read back as done. A per-run lock (flock, released by the kernel if the process dies)
keeps two `bench run` processes from training the same run.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path

import pandas as pd

from bench.config import RunConfig, Study, Variant


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(f.name, 0o644)  # tempfile makes 0600 files; results are meant to be shared
    os.replace(f.name, path)


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def checkpoint(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint.pt"

    def state(self, variant: Variant) -> str | None:
        """'done', 'failed', 'running' (or cut off), or None for a run never started."""
        d = self.run_dir(variant.run_id)
        try:
            status = json.loads((d / "status.json").read_text())["state"]
            saved = json.loads((d / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if saved != variant.config.model_dump(mode="json"):
            return None  # never reuse a result whose config differs (hand edit, hash collision)
        if status == "done" and not all((d / f).exists() for f in ("metrics.json", "predictions.csv", "history.csv")):
            return None
        return status

    @contextlib.contextmanager
    def claim(self, run_id: str):
        """Yield True while this process holds the run's lock, False if another process does."""
        d = self.run_dir(run_id)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def start(self, variant: Variant, study: str) -> None:
        d = self.run_dir(variant.run_id)
        write_json(d / "config.json", {"run_id": variant.run_id, "study": study, "variant": variant.name,
                                       "seed": variant.seed, "overrides": variant.overrides,
                                       "config": variant.config.model_dump(mode="json")})
        write_json(d / "status.json", {"state": "running", "started": now(), "host": socket.gethostname(),
                                       "pid": os.getpid()})

    def finish(self, variant: Variant, history: list[dict], metrics: dict, predictions: pd.DataFrame) -> None:
        d = self.run_dir(variant.run_id)
        atomic_write(d / "history.csv", pd.DataFrame(history).to_csv(index=False))
        atomic_write(d / "predictions.csv", predictions.to_csv(index=False, float_format="%.6g"))
        write_json(d / "metrics.json", metrics)
        write_json(d / "status.json", {"state": "done", "finished": now(), "host": socket.gethostname()})
        self.checkpoint(variant.run_id).unlink(missing_ok=True)

    def fail(self, variant: Variant, error: str, detail: str, history: list[dict] | None = None, **extra) -> None:
        d = self.run_dir(variant.run_id)
        if history:
            atomic_write(d / "history.csv", pd.DataFrame(history).to_csv(index=False))
        write_json(d / "status.json", {"state": "failed", "finished": now(), "error": error, "detail": detail,
                                       "host": socket.gethostname(), **extra})
        self.checkpoint(variant.run_id).unlink(missing_ok=True)

    def record_study(self, study: Study, command: str) -> None:
        write_json(self.root / "studies" / f"{study.name}.json", {
            "study": study.name, "file": str(study.path), "description": study.description,
            "command": command, "updated": now(),
            "variants": [{"name": v.name, "seed": v.seed, "run_id": v.run_id, "overrides": v.overrides}
                         for v in study.variants]})

    def load_config(self, run_id: str) -> RunConfig:
        return RunConfig.model_validate(json.loads((self.run_dir(run_id) / "config.json").read_text())["config"])
