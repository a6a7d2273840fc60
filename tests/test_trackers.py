"""W&B: a real offline run per bench run, read back from the run file W&B writes (the records `wandb sync`
would upload), and compared with the run's record in the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import bench
from bench.infra.store import Store
from tests.helpers import TINY, extra_installed


def records(path: Path):
    """The protobuf records of a .wandb file: a 7-byte header (':W&B', magic, version), then LevelDB's log
    format, records of (crc32 4, length 2, type 1) + data in 32 KiB blocks, long ones split across blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or the last piece of a split record
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_offline_run(folder: Path) -> dict:
    """Project, group, name, config, history rows by step and the summary of one offline run."""
    (path,) = folder.glob("run-*.wandb")
    out = {"config": {}, "history": {}, "summary": {}}
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(project=r.run.project, group=r.run.run_group, name=r.run.display_name)
            out["config"].update({key(i): json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "history":
            row = {key(i): json.loads(i.value_json) for i in r.history.item}
            out["history"][r.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in r.summary.update})
    return out


@pytest.mark.skipif(not extra_installed("wandb"), reason="the wandb extra is not installed: pip install -e '.[wandb]'")
def test_wandb_offline_run_holds_the_config_history_and_test_metrics(write_study, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    path = write_study({"study": "tracked", "defaults": TINY, "ablate": {"train.lr": [0.01]}})
    results = tmp_path / "results"
    runs = bench.run(path, results=results, wandb=True, progress=False)
    assert list(runs.state) == ["done", "done"]

    folders = sorted((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # one W&B run per bench run
    logged = {r["config"]["bench.run_id"]: r for r in map(read_offline_run, folders)}
    assert sorted(logged) == sorted(runs.run_id)
    store = Store(results)
    for _, row in runs.iterrows():
        w = logged[row.run_id]
        assert (w["project"], w["group"], w["name"]) == ("tracked", row.variant, f"{row.variant} (seed 0)")
        assert w["config"]["train.lr"] == pytest.approx(row["config.train.lr"])  # flattened: dotted keys
        assert w["config"]["model.arch"] == "resnet50" and w["config"]["bench.seed"] == 0
        history = store.read_history(row.run_id)
        assert sorted(w["history"]) == list(history.epoch) == [1, 2]
        for epoch, values in w["history"].items():
            expected = history.set_index("epoch").loc[epoch]
            assert values["val_acc"] == pytest.approx(expected.val_acc) and "lr" in values
        assert w["summary"]["test_accuracy"] == pytest.approx(store.read_metrics(row.run_id).test.accuracy)


def test_wandb_missing_is_a_tracker_error(monkeypatch):
    import builtins

    from bench.infra.trackers import TrackerError, WandB

    real = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(TrackerError, match=r"pip install -e '\.\[wandb\]'"):
        WandB("study")


def mlflow_installed() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        return False
    return True


@pytest.mark.skipif(not mlflow_installed(), reason="the trackers extra is not installed: pip install -e '.[trackers]'")
def test_mlflow_gets_each_run_in_two_batches_not_a_call_per_value(write_study, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    def one_by_one(*args, **kwargs):
        raise AssertionError("a value logged on its own: a request per parameter or metric")

    batches = []
    real = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_param", one_by_one)
    monkeypatch.setattr(MlflowClient, "log_metric", one_by_one)
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, *a, **k: batches.append(k) or real(self, *a, **k))
    path = write_study({"study": "batched", "defaults": TINY})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = bench.run(path, results=tmp_path / "results", mlflow=uri, progress=False)
    assert [len(b.get("params", [])) > 0 for b in batches] == [True, False]  # the params, then the metrics
    client = MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("batched").experiment_id])
    assert logged.data.params["train.lr"] == "0.003" and len(logged.data.params) == len(batches[0]["params"])
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_acc")] == [1, 2]
    assert logged.data.metrics["test_accuracy"] == pytest.approx(runs.test_accuracy[0])
