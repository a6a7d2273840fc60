"""The results store (bench.infra.store): a result is reused only for the configuration asked for, one process
trains a run, a partial re-run keeps the manifest whole, a killed process leaves no temporary files."""

import json
import os
import subprocess
import sys

import pytest

from bench.cli import main
from bench.infra import files
from bench.infra.store import Store
from tests.helpers import TINY, variants_of
from tests.test_runner import study


def test_a_result_whose_config_differs_is_never_reused(write_study, tmp_path):
    path = study(write_study)
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 0
    (variant,) = variants_of(path)
    store = Store(results)
    assert store.state(variant) == "done"
    cfg_file = store.run_dir(variant.run_id) / "config.json"
    saved = json.loads(cfg_file.read_text())
    saved["config"]["train"]["lr"] = 0.5  # edited by hand
    cfg_file.write_text(json.dumps(saved))
    assert store.state(variant) is None
    (store.run_dir(variant.run_id) / "status.json").unlink()
    assert store.state(variant) is None


@pytest.mark.slow
def test_two_processes_never_train_the_same_run(write_study, tmp_path):
    path = study(write_study)
    (variant,) = variants_of(path)
    store = Store(tmp_path / "results")
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(store.root)]
    with store.claim(variant.run_id) as mine:  # as if another bench process were training it
        assert mine
        with Store(tmp_path / "results").claim(variant.run_id) as theirs:
            assert not theirs
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        said = ""
        for line in proc.stderr:  # until it says it waits for the holder
            said += line
            if "waiting" in line:
                break
        assert proc.poll() is None and "waiting" in said, said  # it waits instead of training beside the holder
        assert not (store.run_dir(variant.run_id) / "metrics.json").exists()
    out, err = proc.communicate(timeout=300)  # let go: it takes the run over
    assert proc.returncode == 0, said + err
    assert "another bench process is training baseline" in (said + err).replace("\n", " ")
    assert store.state(variant) == "done"


def test_a_partial_rerun_keeps_every_finished_run_in_the_manifest(write_study, tmp_path, capsys):
    path = write_study({"study": "part", "defaults": TINY, "ablate": {"train.lr": [0.01]}})
    results = str(tmp_path / "results")
    assert main(["run", str(path), "--results", results]) == 0
    assert main(["run", str(path), "--results", results, "--only", "baseline", "--set", "train.epochs=1"]) == 0
    assert main(["run", str(path), "--results", results, "--only", "lr=*"]) == 0
    names = [e.name for e in Store(results).read_manifest("part").variants]
    assert sorted(names) == ["baseline", "baseline [train.epochs=1]", "lr=0.01"]
    assert main(["report", "--results", results, "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    table = (tmp_path / "r" / "part" / "tables" / "results.md").read_text()
    assert "| baseline " in table and r"baseline \[train.epochs=1\]" in table and "lr=0.01" in table


def test_temporary_files_of_a_killed_process_are_removed(write_study, tmp_path):
    path = write_study({"study": "tmp", "defaults": TINY})
    (v,) = variants_of(path)
    store = Store(tmp_path / "results")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    run_dir = store.run_dir(v.run_id)
    run_dir.mkdir(parents=True)
    host = files._HOST
    left = [
        run_dir / f".metrics.json.{host}-{pid}.abc123.tmp",
        files.cache_root() / f".fingerprints.json.{host}-{pid}.x.tmp",
    ]
    alive = run_dir / f".history.csv.{host}-{os.getpid()}.def456.tmp"  # this live process: kept
    for p in [*left, alive]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("half")
    assert main(["run", str(path), "--results", str(store.root)]) == 0
    assert not any(p.exists() for p in left) and alive.exists()
