"""Living with a long study: live history, listings, show, dry runs, export, trackers, cache, version."""

import json

import pandas as pd
import pytest

from bench.cli import main
from bench.infra.store import Store
from tests.helpers import TINY, extra_installed, variants_of


def study(write_study, **extra):
    return write_study({"study": "live", "defaults": TINY, **extra})


def test_history_is_written_after_every_epoch_and_logged_when_piped(write_study, tmp_path, capsys, monkeypatch):
    import bench.training.loop

    path = study(write_study, defaults={**TINY, "train": {**TINY["train"], "epochs": 3}})
    (v,) = variants_of(path)
    store = Store(tmp_path / "results")
    seen = []
    real = bench.training.loop.predict

    def spy(*args, **kwargs):  # at every validation pass, the history so far is already on disk
        f = store.run_dir(v.run_id) / "history.csv"
        seen.append(len(pd.read_csv(f)) if f.exists() else 0)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.training.loop, "predict", spy)
    assert main(["run", str(path), "--results", str(store.root)]) == 0
    assert seen[:3] == [0, 1, 2]  # validation of epoch e runs after e-1 rows were written
    err = capsys.readouterr().err
    for epoch in (1, 2, 3):  # stderr is not a terminal here, as in a Slurm log: a line per epoch
        assert f"epoch {epoch}/3: train loss" in err


def test_list_formats_and_80_columns(write_study, tmp_path, capsys, monkeypatch):
    path = study(write_study, ablate={"train.lr": [0.01, 0.03]})
    assert main(["list", str(path), "--format", "names"]) == 0
    assert capsys.readouterr().out.split() == ["baseline", "lr=0.01", "lr=0.03"]
    assert main(["list", str(path), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["pending"] * 3 and all(len(r["run_id"]) == 12 for r in rows)
    assert main(["list", str(path), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split(",")[:3] == ["variant", "seed", "tflop"]
    assert main(["list", str(path)]) == 0  # piped: one plain line per run, for grep
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["baseline", "lr=0.01", "lr=0.03"] and "│" not in lines[2]
    from rich.console import Console

    from bench import console

    with monkeypatch.context() as m:  # at an 80-column terminal: a table that fits
        m.setattr(console, "out", Console(force_terminal=True, width=80, record=True))
        assert main(["list", str(path)]) == 0
        shown = console.out.export_text()
    assert max(len(line) for line in shown.splitlines()) <= 80 and "lr=0.01" in shown and "pending" in shown


def test_show_and_dry_run_change_nothing(write_study, tmp_path, capsys):
    path = study(write_study)
    results = tmp_path / "results"
    assert main(["show", str(path), "baseline", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    (v,) = variants_of(path)
    assert f"run id: {v.run_id}" in out and "state: pending" in out and "lr: 0.003" in out
    assert main(["run", str(path), "--results", str(results), "--dry-run"]) == 0
    assert "trains: pending" in capsys.readouterr().out and not (results / "runs").exists()
    assert main(["show", str(path), "nope", "--results", str(results)]) == 2
    assert "no variant 'nope'" in capsys.readouterr().err


def test_export_is_one_tidy_table(write_study, tmp_path):
    path = study(write_study, ablate={"train.lr": [0.01]}, seeds=[0, 1])
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 0
    for out in (tmp_path / "runs.csv", tmp_path / "runs.parquet"):
        assert main(["export", "--results", str(results), "--out", str(out)]) == 0
        table = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
        assert len(table) == 4 and set(table.variant) == {"baseline", "lr=0.01"}
        assert {"config.train.lr", "test_accuracy", "best_val_acc", "fingerprint.data", "code.torch"} <= set(table)
        metrics = Store(results).read_metrics(table.run_id[0])
        assert table.test_accuracy[0] == pytest.approx(metrics.test.accuracy)


@pytest.mark.skipif(
    not extra_installed("mlflow", "tensorboard"),
    reason="the trackers extra is not installed: pip install -e '.[trackers]'",
)
def test_mlflow_and_tensorboard_hold_every_finished_run(write_study, tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = study(write_study, ablate={"train.lr": [0.01]})
    results, uri, board = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "tb"
    assert main(["run", str(path), "--results", str(results), "--mlflow", uri, "--tensorboard", str(board)]) == 0
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("live")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["bench.variant"] for r in runs) == ["baseline", "lr=0.01"]
    for r in runs:
        metrics = Store(results).read_metrics(r.data.tags["bench.run_id"])
        assert r.data.metrics["test_accuracy"] == pytest.approx(metrics.test.accuracy)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")] == [1, 2]
        assert r.data.params["train.lr"] in ("0.003", "0.01")
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"metrics.json", "predictions.csv", "history.csv", "config.json"} <= names
    folders = sorted(p for p in (board / "live").iterdir())
    assert len(folders) == 2
    ea = EventAccumulator(str(folders[0]))
    ea.Reload()
    assert [e.step for e in ea.Scalars("val_acc")] == [1, 2] and "test_accuracy" in ea.Tags()["scalars"]
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "r"), "--mlflow", uri]) == 0
    report_runs = [r for r in client.search_runs([exp.experiment_id]) if "bench.report" in r.data.tags]
    assert len(report_runs) == 1


def test_cache_listing_clearing_and_version(write_study, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    assert main(["run", str(study(write_study)), "--results", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "features" in out and "1 files" in out
    (tmp_path / "cache" / "flops.json").write_text("{}")
    assert main(["cache", "clear", "features"]) == 0
    assert not (tmp_path / "cache" / "features").exists() and (tmp_path / "cache" / "flops.json").exists()
    assert main(["cache", "clear", "all"]) == 0
    assert not list((tmp_path / "cache").iterdir())
    assert main(["cache", "clear", "nothing-like-this"]) == 2
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("bench 0.2.0+")


def test_every_command_has_help_with_an_example(capsys):
    from bench.cli import EXAMPLES, parser

    commands = parser()._subparsers._group_actions[0].choices
    assert set(commands) == set(EXAMPLES)
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        said = " ".join(capsys.readouterr().out.split())
        assert "example: " + " ".join(EXAMPLES[name].split()) in said, name


def test_validation_test_and_features_have_progress():
    import torch

    from bench import data
    from bench.config import RunConfig
    from bench.training import loop as train

    shown = []

    def progress(description, total):
        shown.append((description, total))
        return lambda n: None

    cfg = RunConfig.model_validate(TINY)
    train.fit(cfg, data.load(cfg.data), torch.device("cpu"), progress=progress, feature_cache=False)
    names = [d for d, _ in shown]
    assert "epoch 1/2 validation" in names and any(d.startswith("test") for d in names)
    cached = []
    train.fit(
        cfg.model_copy(update={"seed": 5}),
        data.load(cfg.data),
        torch.device("cpu"),
        progress=lambda d, t: cached.append(d) or (lambda n: None),
    )
    assert any("features" in d for d in cached)
