"""The results store: one folder of plain files per run, every file written atomically.

    <root>/runs/<run_id>/       the run record (bench.infra.record says which files and keys)
    <root>/studies/<study>.json which variant (name, seed) maps to which run_id

A run counts as done only when status.json says so *and* its saved config equals the one
asked for; status.json is written after everything else, so a run killed at any point is
never read back as done. A per-run lock (an OS file lock, released by the kernel if the
process dies) keeps two `bench run` processes from training the same run.
"""

from __future__ import annotations

import functools
import os
import socket
from contextlib import AbstractContextManager
from pathlib import Path

import pandas as pd

from bench.config import RunConfig
from bench.infra import identity, record
from bench.infra.files import NotWritable, alive, atomic_write, free_bytes, now, read_json, sweep, try_lock, write_json
from bench.infra.record import RunHeader, RunMetrics, RunStatus, StudyManifest
from bench.study import Study, Variant

NO_SPACE = "no space left"  # a failure of the disk, not of the run: retried by the next `bench run`


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- layout --------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def checkpoint(self, run_id: str) -> Path:
        return self.run_dir(run_id) / record.CHECKPOINT

    def weights(self, run_id: str) -> Path:
        return self.run_dir(run_id) / record.WEIGHTS

    def study_file(self, name: str) -> Path:
        return self.root / "studies" / f"{name}.json"

    def study_names(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "studies").glob("*.json"))

    # ---- writing -------------------------------------------------------------------------------

    def state(self, variant: Variant) -> str | None:
        """'done', 'failed', 'running' (or cut off), or None for a run never started."""
        d = self.run_dir(variant.run_id)
        try:
            status = self.read_status(variant.run_id)
            header = self.read_header(variant.run_id)
            # the saved config must say what the saved identity says (a hand edit of either shows)
            saved = identity.identity(RunConfig.model_validate(header.config), variant.fingerprints)
        except (OSError, ValueError):
            return None
        if not header.identity == saved == identity.identity(variant.config, variant.fingerprints):
            return None  # never reuse a result made from other settings, data or weights (hand edit, collision)
        if status.state == "done" and not all((d / f).exists() for f in record.DONE_FILES):
            return None
        if status.state == "failed" and status.error == NO_SPACE:
            return None  # the disk was full: nothing wrong with the run, try again
        return status.state

    def other_code(self, variant: Variant) -> dict[str, tuple[str, str]]:
        """{package: (version that made the stored run, version here)} where they differ."""
        try:
            made_by = self.read_header(variant.run_id).code
        except (OSError, ValueError):
            return {}
        here = identity.code_versions()
        return {k: (made_by.get(k, "?"), v) for k, v in here.items() if made_by.get(k) != v}

    def set_aside(self, run_id: str) -> Path:
        """Move a run's folder out of the way (kept, never overwritten) so the run can be made anew."""
        aside = self.root / "runs" / f"{run_id}.replaced-{now().replace(':', '')}"
        os.replace(self.run_dir(run_id), aside)
        return aside

    def sweep(self) -> list[Path]:
        """Remove what killed `bench` processes of this host left half-written in the store."""
        folders = [self.root / "studies", *(p for p in (self.root / "runs").glob("*") if p.is_dir())]
        return [p for folder in folders for p in sweep(folder)]

    def claim(self, run_id: str, wait: bool = False) -> AbstractContextManager[bool]:
        """Yields True while this process holds the run's lock, False if another process does
        (with `wait`, once the other process has let go)."""
        return try_lock(self.run_dir(run_id) / ".lock", wait)

    def start(self, variant: Variant, study: str) -> None:
        d = self.run_dir(variant.run_id)
        header = RunHeader(
            run_id=variant.run_id,
            study=study,
            variant=variant.name,
            seed=variant.seed,
            overrides=variant.overrides,
            config=variant.config.model_dump(mode="json"),
            identity=identity.identity(variant.config, variant.fingerprints),
            code=identity.code_versions(),
        )
        write_json(d / record.CONFIG, header.model_dump(mode="json"))
        self._status(variant.run_id, RunStatus(state="running", started=now(), pid=os.getpid()))

    def write_history(self, run_id: str, history: list[dict]) -> None:
        atomic_write(self.run_dir(run_id) / record.HISTORY, pd.DataFrame(history).to_csv(index=False))

    def finish(self, run_id: str, history: list[dict], metrics: RunMetrics, predictions: pd.DataFrame) -> None:
        d = self.run_dir(run_id)
        self.write_history(run_id, history)
        atomic_write(d / record.PREDICTIONS, predictions.to_csv(index=False, float_format="%.6g"))
        write_json(d / record.METRICS, metrics.dump())
        self._status(run_id, RunStatus(state="done", finished=now()))
        self.checkpoint(run_id).unlink(missing_ok=True)

    def fail(self, run_id: str, error: str, detail: str, keep_checkpoint: bool = False, **extra) -> None:
        """Record a failed run; its checkpoint goes unless kept for a retry (a full disk)."""
        self._status(run_id, RunStatus(state="failed", finished=now(), error=error, detail=detail, **extra))
        if not keep_checkpoint:
            self.checkpoint(run_id).unlink(missing_ok=True)

    def _status(self, run_id: str, status: RunStatus) -> None:
        status.host = socket.gethostname()
        write_json(self.run_dir(run_id) / record.STATUS, status.model_dump(mode="json", exclude_none=True))

    def record_study(self, study: Study, variants: list[Variant], command: str) -> None:
        """Point the study's manifest at these variants' runs; entries of variants not run now
        (--only) or run with other settings (--set: another label) are kept, so a partial re-run
        never hides a finished run."""
        entries = [
            record.StudyEntry(name=study.label(v), seed=v.seed, run_id=v.run_id, overrides=v.overrides)
            for v in variants
        ]
        new = {(e.name, e.seed) for e in entries}
        try:
            kept = [e for e in self.read_manifest(study.name).variants if (e.name, e.seed) not in new]
        except (OSError, ValueError):
            kept = []
        manifest = StudyManifest(
            study=study.name,
            file=str(study.path),
            description=study.description,
            command=command,
            updated=now(),
            variants=kept + entries,
        )
        write_json(self.study_file(study.name), manifest.model_dump(mode="json"))

    def replaced(self, study: Study, variant: Variant) -> str | None:
        """Why the run the manifest holds for this variant is not this one: 'data changed',
        'weights changed' (its results are stale and kept aside), or None."""
        try:
            entry = next(
                e
                for e in self.read_manifest(study.name).variants
                if (e.name, e.seed) == (study.label(variant), variant.seed)
            )
            old = self.read_header(entry.run_id).identity or {}
        except (OSError, ValueError, StopIteration):
            return None
        if entry.run_id == variant.run_id:
            return None
        current = identity.identity(variant.config, variant.fingerprints)
        changed = [k for k in ("data", "weights") if old.get("fingerprints", {}).get(k) != current["fingerprints"][k]]
        settings = lambda tree: {k: v for k, v in tree.items() if k != "fingerprints"}
        return f"{' and '.join(changed)} changed" if changed and settings(old) == settings(current) else None

    def interrupted(self, run_id: str) -> str | None:
        """Why a run whose status says 'running' is not: its process, on this host, is gone (None when it is
        alive, or runs on another host, where it cannot be seen)."""
        try:
            status = self.read_status(run_id)
        except (OSError, ValueError):
            return None
        if status.state == "running" and status.host == socket.gethostname() and status.pid and not alive(status.pid):
            return f"process {status.pid} is gone"
        return None

    def check_space(self, variants: list[Variant]) -> None:
        """Raise NotWritable unless the store's disk can take the largest checkpoint of these runs, twice
        (a new checkpoint is written beside the previous one, then renamed over it)."""
        if not variants:
            return
        need, v = max((2 * checkpoint_bytes(v.config), v.name) for v in variants)
        free = free_bytes(self.root)
        if free < need:
            raise NotWritable(
                f"the results store (--results) has {free / 2**20:,.0f} MiB free at {self.root}, but {v} needs "
                f"about {need / 2**20:,.0f} MiB while it trains (its checkpoint, twice: it is written beside the "
                "previous one); free some space or point --results at a larger disk"
            )

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


def checkpoint_bytes(cfg: RunConfig) -> int:
    """About how large a run's checkpoint.pt grows: the network twice (its last and its best weights) and
    the optimizer's state (Adam 2 values, SGD with momentum 1 per parameter), 4 bytes each; a frozen
    backbone's run checkpoints its head only (counted as nothing). ResNet-18 with Adam: 180 MB, ResNet-50: 380 MB."""
    if cfg.model.freeze == "backbone":
        return 0
    per_param = 2 + (2 if cfg.train.optimizer in ("adam", "adamw") else int(cfg.train.momentum > 0))
    return 4 * per_param * _parameters(cfg.model.arch)


@functools.cache
def _parameters(arch: str) -> int:
    import torch

    from bench.models import build_backbone

    with torch.device("meta"):  # shapes only: no memory, no weights
        return sum(p.numel() for p in build_backbone("none", arch).parameters())
