"""The parallel launchers: --parallel N worker processes, and --launcher ray on a real local Ray
cluster (CPU only, 2 workers), including a worker killed mid-run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.infra.store import Store
from tests.helpers import TINY, variants_of

try:
    import ray
except ImportError:
    if os.environ.get("CI"):  # CI installs the extra: a missing Ray there is a broken install, not a skip
        raise
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed: pip install -e '.[ray]'")

# Slow enough per epoch (layer4 trains) that a worker can be killed between two checkpoints.
SLOW = {**TINY, "model": {**TINY["model"], "freeze": "stem-layer3"}, "train": {**TINY["train"], "epochs": 4}}
TIMING = ["seconds", "train_images_per_sec"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One local Ray cluster for the module; its workers get the tests' isolated cache (see conftest)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "bench-cache"))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


def status(store, v):
    return json.loads((store.run_dir(v.run_id) / "status.json").read_text())


def kill_when_checkpointed(store, v, timeout=120):
    """SIGKILL the process training `v` once it has saved an epoch; the epochs saved by then."""
    deadline = time.time() + timeout
    while not store.checkpoint(v.run_id).exists() and time.time() < deadline:
        time.sleep(0.05)
    assert store.checkpoint(v.run_id).exists(), "the run never wrote an epoch checkpoint"
    os.kill(status(store, v)["pid"], signal.SIGKILL)
    return torch.load(store.checkpoint(v.run_id), weights_only=False)["history"]


@pytest.mark.slow
def test_parallel_workers_give_the_sequential_results(write_study, tmp_path, capsys):
    path = write_study({"study": "par", "defaults": TINY, "ablate": {"train.lr": [0.01]}})
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert main(["run", str(path), "--results", str(seq)]) == 0
    assert main(["run", str(path), "--results", str(par), "--parallel", "2"]) == 0
    assert capsys.readouterr().err.count("test accuracy") == 4
    variants = variants_of(path)
    for v in variants:
        a, b = Store(seq).run_dir(v.run_id), Store(par).run_dir(v.run_id)
        assert status(Store(par), v)["state"] == "done"
        # Same predictions; probabilities agree to float rounding (workers use fewer threads each).
        pa, pb = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
        assert (pa.pred == pb.pred).all()
        pd.testing.assert_frame_equal(pa, pb, rtol=1e-5)
        pd.testing.assert_frame_equal(
            pd.read_csv(a / "history.csv").drop(columns=TIMING),
            pd.read_csv(b / "history.csv").drop(columns=TIMING),
            rtol=1e-5,
        )
    assert main(["run", str(path), "--results", str(par), "--parallel", "2"]) == 0  # all done: skipped


def test_parallel_worker_i_is_pinned_to_gpu_i(monkeypatch):
    """The pinning itself, without a GPU: worker slots index the GPUs the job was given, wrapping round."""
    import queue

    from bench.infra import launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    threads = torch.get_num_threads()
    try:
        for slot, gpu in [(0, "2"), (1, "3"), (2, "2")]:
            slots = queue.Queue()
            slots.put(slot)
            launch._start_worker(slots, ["2", "3"], 1)  # as for a Slurm job given GPUs 2 and 3
            assert os.environ["CUDA_VISIBLE_DEVICES"] == gpu and launch._worker["device"].type == "cuda"
    finally:
        torch.set_num_threads(threads)
        launch._worker.clear()


def test_launcher_ray_without_ray_says_how_to_install_it(write_study, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    path = write_study({"study": "noray", "defaults": TINY})
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--launcher", "ray"]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@needs_ray
@pytest.mark.slow
def test_ray_shares_the_store_with_the_local_launcher(ray_cluster, write_study, tmp_path, capsys):
    path = write_study({"study": "ray", "defaults": TINY, "ablate": {"train.lr": [0.01, 0.03]}})
    results = str(tmp_path / "results")
    assert main(["run", str(path), "--results", results, "--only", "baseline"]) == 0  # local first
    capsys.readouterr()
    assert main(["run", str(path), "--results", results, "--launcher", "ray"]) == 0  # ray does the rest
    out = capsys.readouterr()
    assert out.err.count("test accuracy") == 2 and out.out.count("skipped") == 1
    store = Store(results)
    variants = variants_of(path)
    assert all(store.state(v) == "done" for v in variants)
    mtimes = [(store.run_dir(v.run_id) / "metrics.json").stat().st_mtime_ns for v in variants]
    assert main(["run", str(path), "--results", results]) == 0  # and the local launcher sees it all done
    assert [(store.run_dir(v.run_id) / "metrics.json").stat().st_mtime_ns for v in variants] == mtimes
    # a resource request the cluster cannot meet is bad input, not a grid that waits forever
    assert (
        main(
            [
                "run",
                str(path),
                "--results",
                results,
                "--launcher",
                "ray",
                "--gpus-per-run",
                "1",
                "--set",
                "train.epochs=1",
            ]
        )
        == 2
    )
    assert "the Ray cluster has 0 GPUs" in capsys.readouterr().err


@needs_ray
@pytest.mark.slow
def test_ray_retries_a_killed_worker_and_the_run_resumes(ray_cluster, write_study, tmp_path):
    path = write_study({"study": "retry", "defaults": SLOW})
    (v,) = variants_of(path)
    store = Store(tmp_path / "results")
    # A separate driver joining the cluster by address, as `bench run --launcher ray --address auto` does.
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            str(path),
            "--results",
            str(store.root),
            "--launcher",
            "ray",
            "--address",
            ray_cluster,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    saved = kill_when_checkpointed(store, v)
    assert 1 <= len(saved) < 4
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err
    assert store.state(v) == "done" and not store.checkpoint(v.run_id).exists()
    history = pd.read_csv(store.run_dir(v.run_id) / "history.csv")
    assert list(history.epoch) == [1, 2, 3, 4]
    # the retry resumed after the last saved epoch: those epochs were not trained again
    assert history.seconds[: len(saved)].tolist() == pytest.approx([h["seconds"] for h in saved])


@needs_ray
@pytest.mark.slow
def test_ray_records_a_failure_when_retries_are_used_up_and_the_grid_goes_on(
    ray_cluster, write_study, tmp_path, capsys
):
    path = write_study(
        {
            "study": "lost",
            "defaults": TINY,
            "variants": [{"name": "slow", "set": {"model.freeze": "stem-layer3", "train.epochs": 4}}],
        }
    )
    baseline, slow = variants_of(path)
    store = Store(tmp_path / "results")
    killer = threading.Thread(target=kill_when_checkpointed, args=(store, slow))
    killer.start()
    code = main(["run", str(path), "--results", str(store.root), "--launcher", "ray", "--max-retries", "0"])
    killer.join()
    assert code == 1
    assert store.state(baseline) == "done"
    assert (status(store, slow)["state"], status(store, slow)["error"]) == ("failed", "worker died")
    assert "failed: worker died" in capsys.readouterr().err
