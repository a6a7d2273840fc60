"""Records and study files that would have been published or listed wrongly: forged metrics and predictions,
repeated seeds, unreadable metrics in `bench list`, a run whose process is gone, names that look like globs."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.infra.store import Store
from bench.report import load_runs
from bench.report.export import runs_table
from bench.study import load_study_file
from tests.helpers import TINY, variants_of, write_manifest
from tests.test_report import write_run


@pytest.fixture
def forged(tmp_path):
    """Two variants x 3 seeds; seed 0 of 'other' has a hand-edited accuracy, seed 1 a forged predictions.csv."""
    root = tmp_path / "results"
    entries = []
    for name, p in (("baseline", 0.3), ("other", 0.2)):
        for seed in range(3):
            write_run(root, f"{name}-{seed}", name, seed, p)
            entries.append((name, seed, f"{name}-{seed}", {}))
    write_manifest(root, "forged", entries)
    runs = root / "runs"
    m = json.loads((runs / "other-0" / "metrics.json").read_text())
    m["test"]["accuracy"] = 0.99
    (runs / "other-0" / "metrics.json").write_text(json.dumps(m))
    pred = pd.read_csv(runs / "other-1" / "predictions.csv")
    pred["pred"] = pred["label"]  # every image right, metrics.json untouched
    pred.to_csv(runs / "other-1" / "predictions.csv", index=False)
    return root


def test_records_that_disagree_with_their_predictions_are_never_published(forged, tmp_path, capsys):
    runs = load_runs(forged, "forged")
    assert [r.state for r in runs.of("other")] == ["damaged", "damaged", "done"]
    assert "says test accuracy 0.99" in runs.of("other")[0].detail
    assert "confusion matrix disagrees" in runs.of("other")[1].detail
    assert [r.state for r in runs.of("baseline")] == ["done"] * 3  # honest records pass the check

    assert main(["report", "--results", str(forged), "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "(other, seed 0): metrics.json says test accuracy 0.99" in err and "(other, seed 1)" in err
    assert "99.00" not in (tmp_path / "r" / "forged" / "report.md").read_text()

    table = runs_table(forged)
    row = table[(table.variant == "other") & (table.seed == 0)].iloc[0]
    assert row.state == "damaged" and np.isnan(row.test_accuracy)  # no forged number in the export
    assert main(["export", "--results", str(forged), "--out", str(tmp_path / "runs.csv")]) == 0
    assert "forged: other (seed 0, run other-0): metrics.json says" in capsys.readouterr().err.replace("\n", " ")

    assert main(["compare", "other", "baseline", "--results", str(forged)]) == 0
    out, err = capsys.readouterr()
    assert "run left out" in err and "(other, seed 1)" in err.replace("\n", " ")
    assert main(["verify", "--results", str(forged)]) == 1  # verify still says by how much
    err = capsys.readouterr().err.replace("\n", " ")
    assert "other (seed 0, other-0) differs by 0.8" in err  # 0.99 written, about 0.2 right
    assert "other (seed 1, other-1) could not be verified: predictions.csv: the predicted class" in err


def test_list_names_unreadable_metrics_and_runs_whose_process_is_gone(write_study, tmp_path, capsys):
    path = write_study({"study": "l", "defaults": TINY, "seeds": [0, 1]})
    results = tmp_path / "results"
    done, other = variants_of(path)
    assert main(["run", str(path), "--results", str(results), "--only", "baseline"]) == 0
    store = Store(results)
    metrics = store.run_dir(done.run_id) / "metrics.json"
    good = json.loads(metrics.read_text())
    for damage in ("{not json", json.dumps({k: v for k, v in good.items() if k != "train_seconds"})):
        metrics.write_text(damage)
        capsys.readouterr()
        assert main(["list", str(path), "--results", str(results)]) == 0
        out, err = capsys.readouterr()
        assert "damaged (metrics.json)" in out and "Traceback" not in out + err
        assert f"baseline (seed 0): {metrics}" in err.replace("\n", "")
    metrics.write_text(json.dumps(good))

    # seed 1: started, its process killed (a pid that no longer exists), then alive (this process)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = load_study_file(path)
    store.start(other, study.name)
    status_file = store.run_dir(other.run_id) / "status.json"
    status = json.loads(status_file.read_text())
    assert status["pid"] == os.getpid()
    assert "running" in listing(capsys, path, results, 1)
    status_file.write_text(json.dumps({**status, "pid": dead.pid}))
    assert f"interrupted (process {dead.pid} is gone" in listing(capsys, path, results, 1)
    status_file.write_text(json.dumps({**status, "host": "another-host", "pid": dead.pid}))
    assert "running" in listing(capsys, path, results, 1)  # another host's processes cannot be seen


def listing(capsys, path, results, seed) -> str:
    capsys.readouterr()
    assert main(["list", str(path), "--results", str(results), "--format", "json"]) == 0
    return next(r["status"] for r in json.loads(capsys.readouterr().out) if r["seed"] == seed)
