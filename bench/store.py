"""The results store: one folder of plain files per run, every file written atomically.

    <root>/runs/<run_id>/       the run record (bench.record says which files and keys)
    <root>/studies/<study>.json which variant (name, seed) maps to which run_id

A run counts as done only when status.json says so *and* its saved config equals the one
asked for; status.json is written after everything else, so a run killed at any point is
never read back as done. A per-run lock (an OS file lock, released by the kernel if the
process dies) keeps two `bench run` processes from training the same run.
"""

from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager
from pathlib import Path

import pandas as pd

from bench import record
from bench.files import atomic_write, now, read_json, try_lock, write_json
from bench.record import RunHeader, RunMetrics, RunStatus, StudyManifest
from bench.study import Study, Variant


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- layout --------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def checkpoint(self, run_id: str) -> Path:
        return self.run_dir(run_id) / record.CHECKPOINT

    def study_file(self, name: str) -> Path:
        return self.root / "studies" / f"{name}.json"

    def study_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "studies").glob("*.json"))

    # ---- writing -------------------------------------------------------------------------------

    def state(self, variant: Variant) -> str | None:
        """'done', 'failed', 'running' (or cut off), or None for a run never started."""
        d = self.run_dir(variant.run_id)
        try:
            status = self.read_status(variant.run_id).state
            saved = self.read_header(variant.run_id).config
        except (OSError, ValueError):
            return None
        if saved != variant.config.model_dump(mode="json"):
            return None  # never reuse a result whose config differs (hand edit, hash collision)
        if status == "done" and not all((d / f).exists() for f in record.DONE_FILES):
            return None
        return status

    def claim(self, run_id: str) -> AbstractContextManager[bool]:
        """Yields True while this process holds the run's lock, False if another process does."""
        return try_lock(self.run_dir(run_id) / ".lock")

    def start(self, variant: Variant, study: str) -> None:
        d = self.run_dir(variant.run_id)
        header = RunHeader(
            run_id=variant.run_id,
            study=study,
            variant=variant.name,
            seed=variant.seed,
            overrides=variant.overrides,
            config=variant.config.model_dump(mode="json"),
        )
        write_json(d / record.CONFIG, header.model_dump(mode="json"))
        self._status(variant.run_id, RunStatus(state="running", started=now(), pid=os.getpid()))

    def finish(self, run_id: str, history: list[dict], metrics: RunMetrics, predictions: pd.DataFrame) -> None:
        d = self.run_dir(run_id)
        atomic_write(d / record.HISTORY, pd.DataFrame(history).to_csv(index=False))
        atomic_write(d / record.PREDICTIONS, predictions.to_csv(index=False, float_format="%.6g"))
        write_json(d / record.METRICS, metrics.dump())
        self._status(run_id, RunStatus(state="done", finished=now()))
        self.checkpoint(run_id).unlink(missing_ok=True)

    def fail(self, run_id: str, error: str, detail: str, history: list[dict] | None = None, **extra) -> None:
        if history:
            atomic_write(self.run_dir(run_id) / record.HISTORY, pd.DataFrame(history).to_csv(index=False))
        self._status(run_id, RunStatus(state="failed", finished=now(), error=error, detail=detail, **extra))
        self.checkpoint(run_id).unlink(missing_ok=True)

    def _status(self, run_id: str, status: RunStatus) -> None:
        status.host = socket.gethostname()
        write_json(self.run_dir(run_id) / record.STATUS, status.model_dump(mode="json", exclude_none=True))

    def record_study(self, study: Study, command: str) -> None:
        manifest = StudyManifest(
            study=study.name,
            file=str(study.path),
            description=study.description,
            command=command,
            updated=now(),
            variants=[
                record.StudyEntry(name=v.name, seed=v.seed, run_id=v.run_id, overrides=v.overrides)
                for v in study.variants
            ],
        )
        write_json(self.study_file(study.name), manifest.model_dump(mode="json"))

    # ---- reading (OSError when a file is missing, RecordError when it is malformed) -------------

    def _read(self, run_id: str, name: str, kind: type[record.Record]):
        path = self.run_dir(run_id) / name
        try:
            obj = read_json(path)
        except ValueError as e:
            raise record.RecordError(f"{path}: not JSON ({e})") from None
        return record.parse(kind, obj, str(path))

    def read_header(self, run_id: str) -> RunHeader:
        return self._read(run_id, record.CONFIG, RunHeader)

    def read_status(self, run_id: str) -> RunStatus:
        return self._read(run_id, record.STATUS, RunStatus)

    def read_metrics(self, run_id: str) -> RunMetrics:
        return self._read(run_id, record.METRICS, RunMetrics)

    def read_predictions(self, run_id: str, n_test: int | None) -> pd.DataFrame:
        try:
            p = pd.read_csv(self.run_dir(run_id) / record.PREDICTIONS)
        except (ValueError, pd.errors.ParserError) as e:
            raise record.RecordError(str(e)) from None
        return record.check_predictions(p, n_test)

    def read_history(self, run_id: str) -> pd.DataFrame:
        try:
            h = pd.read_csv(self.run_dir(run_id) / record.HISTORY)
        except (ValueError, pd.errors.ParserError) as e:
            raise record.RecordError(str(e)) from None
        return record.check_history(h)

    def read_manifest(self, name: str) -> StudyManifest:
        path = self.study_file(name)
        try:
            obj = read_json(path)
        except ValueError as e:
            raise record.RecordError(f"{path}: not JSON ({e})") from None
        return record.parse(StudyManifest, obj, str(path))
