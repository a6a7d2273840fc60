import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from bench.cli import main
from bench.infra.store import Store
from tests.helpers import TINY, variants_of


def study(write_study, name="study.yaml", **extra):
    return write_study({"study": "tiny", "defaults": TINY, **extra}, name)


def run_dirs(results):
    return sorted((results / "runs").iterdir())


def test_run_stores_every_result_and_skips_what_is_done(write_study, tmp_path, capsys):
    path = study(write_study, ablate={"train.lr": [0.01]}, seeds=[0, 1])
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 0
    dirs = run_dirs(results)
    assert len(dirs) == 4
    for d in dirs:
        assert {p.name for p in d.iterdir()} >= {
            "config.json",
            "status.json",
            "metrics.json",
            "history.csv",
            "predictions.csv",
        }
        assert not (d / "checkpoint.pt").exists()
        assert json.loads((d / "status.json").read_text())["state"] == "done"
        history = pd.read_csv(d / "history.csv")
        assert list(history.epoch) == [1, 2] and history.val_acc.between(0, 1).all()
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["weights"] == "random init (no pretraining)" and metrics["pretrained"] is False
        assert metrics["n_test"] == 60 and metrics["feature_cache"] in ("computed", "hit")
    manifest = json.loads((results / "studies" / "tiny.json").read_text())
    assert [(v["name"], v["seed"]) for v in manifest["variants"]] == [
        ("baseline", 0),
        ("baseline", 1),
        ("lr=0.01", 0),
        ("lr=0.01", 1),
    ]

    mtimes = {d: (d / "metrics.json").stat().st_mtime_ns for d in dirs}
    capsys.readouterr()
    assert main(["run", str(path), "--results", str(results)]) == 0  # nothing left to do
    assert "skipped" in capsys.readouterr().out
    assert {d: (d / "metrics.json").stat().st_mtime_ns for d in run_dirs(results)} == mtimes

    # a changed study keeps unchanged runs and adds new ones, never reusing a result
    assert main(["run", str(path), "--results", str(results), "--set", "train.epochs=1", "--only", "baseline"]) == 0
    assert len(run_dirs(results)) == 6
    assert {d: (d / "metrics.json").stat().st_mtime_ns for d in dirs} == mtimes


def test_saved_metrics_agree_with_scikit_learn_on_saved_predictions(write_study, tmp_path):
    results = tmp_path / "results"
    assert main(["run", str(study(write_study)), "--results", str(results)]) == 0
    (d,) = run_dirs(results)
    pred = pd.read_csv(d / "predictions.csv")
    metrics = json.loads((d / "metrics.json").read_text())["test"]
    probs = pred.filter(like="p_").to_numpy()
    assert (probs.argmax(1) == pred.pred).all() and abs(probs.sum(1) - 1).max() < 1e-4
    p, r, f1, _ = precision_recall_fscore_support(pred.label, pred.pred, average="macro", zero_division=0)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(pred.label, pred.pred))
    assert (metrics["precision_macro"], metrics["recall_macro"], metrics["f1_macro"]) == pytest.approx((p, r, f1))
    assert metrics["confusion_matrix"] == confusion_matrix(pred.label, pred.pred, labels=range(10)).tolist()
    # `bench verify` does the same recomputation for a whole store, and catches a tampered file
    assert main(["verify", "--results", str(results)]) == 0
    saved = json.loads((d / "metrics.json").read_text())
    saved["test"]["accuracy"] += 0.01
    (d / "metrics.json").write_text(json.dumps(saved))
    assert main(["verify", "--results", str(results)]) == 1


def test_a_failing_run_is_recorded_and_the_grid_goes_on(write_study, tmp_path, capsys):
    nan = tmp_path / "nan.pth"
    import torchvision

    state = torchvision.models.resnet50().state_dict()
    state["layer4.0.conv1.weight"].fill_(float("nan"))
    torch.save(state, nan)
    path = study(
        write_study,
        variants=[{"name": "broken", "set": {"model.weights": f"file:{nan}", "model.freeze": "stem-layer3"}}],
    )
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 1
    out = capsys.readouterr()
    assert "loss became nan at epoch 1, step 0" in out.err
    by_name = {json.loads((d / "config.json").read_text())["variant"]: d for d in run_dirs(results)}
    assert json.loads((by_name["baseline"] / "status.json").read_text())["state"] == "done"
    status = json.loads((by_name["broken"] / "status.json").read_text())
    assert (status["state"], status["error"], status["epoch"]) == ("failed", "diverged", 1)
    assert main(["run", str(path), "--results", str(results)]) == 1  # still failed, not retried...
    assert json.loads((by_name["broken"] / "status.json").read_text())["finished"] == status["finished"]
    assert (
        main(["run", str(path), "--results", str(results), "--retry-failed", "--only", "broken"]) == 1
    )  # ...unless asked


def test_bad_input_exits_2_before_anything_runs(write_study, tmp_path, capsys):
    results = tmp_path / "results"
    path = write_study("study: s\ndefaults:\n  train: {lr: -1}\n")
    assert main(["run", str(path), "--results", str(results)]) == 2
    assert "train.lr: got -1" in capsys.readouterr().err
    missing = study(write_study, "missing.yaml", defaults={**TINY, "data": {"source": "folder", "path": "nowhere"}})
    assert main(["run", str(missing), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--data-dir DIR" in err  # the command line's own fix, added by the CLI
    if not torch.cuda.is_available():  # an impossible option is named as such, not blamed on the study file
        assert main(["run", str(missing), "--results", str(results), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--device cuda, but torch sees no CUDA device" in err and "invalid study file" not in err
    assert not (results / "runs").exists()


def test_list_shows_grid_cost_and_status(write_study, tmp_path, capsys):
    path = study(write_study, ablate={"model.freeze": ["none"]})
    assert main(["list", str(path), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "freeze=none" in out and "pending" in out and "TFLOP" in out


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_and_matches_an_uninterrupted_one(write_study, tmp_path):
    cfg = {**TINY, "model": {**TINY["model"], "freeze": "stem-layer3"}, "train": {**TINY["train"], "epochs": 8}}
    path = write_study({"study": "kill", "defaults": cfg})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    (variant,) = variants_of(path)
    ckpt = Store(killed).checkpoint(variant.run_id)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "the run never wrote an epoch checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(killed)
    assert store.state(variant) == "running"  # cut off: never read back as done
    assert not (store.run_dir(variant.run_id) / "metrics.json").exists()

    assert main(["run", str(path), "--results", str(killed)]) == 0  # resumes from the checkpoint
    assert main(["run", str(path), "--results", str(clean)]) == 0
    a, b = (Store(r).run_dir(variant.run_id) for r in (killed, clean))
    pd.testing.assert_frame_equal(pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv"))
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    pd.testing.assert_frame_equal(
        ha.drop(columns=["seconds", "train_images_per_sec"]), hb.drop(columns=["seconds", "train_images_per_sec"])
    )


@pytest.mark.slow
def test_sigterm_stops_promptly_and_the_next_run_resumes(write_study, tmp_path):
    cfg = {**TINY, "model": {**TINY["model"], "freeze": "stem-layer3"}, "train": {**TINY["train"], "epochs": 6}}
    path = write_study({"study": "term", "defaults": cfg})
    (variant,) = variants_of(path)
    store = Store(tmp_path / "results")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(store.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.time() + 120
    while not store.checkpoint(variant.run_id).exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - t0 < 30
    assert "interrupted" in err
    assert store.state(variant) == "running" and store.checkpoint(variant.run_id).exists()
    done_epochs = torch.load(store.checkpoint(variant.run_id), weights_only=False)["history"]
    assert 1 <= len(done_epochs) < 6
    # the next run picks up after the last finished epoch: those epochs are not trained again
    assert main(["run", str(path), "--results", str(store.root)]) == 0
    history = pd.read_csv(store.run_dir(variant.run_id) / "history.csv")
    assert list(history.epoch) == [1, 2, 3, 4, 5, 6]
    assert history.seconds[: len(done_epochs)].tolist() == pytest.approx([h["seconds"] for h in done_epochs])


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError("host")]
)
def test_out_of_memory_is_recorded_with_a_hint(write_study, tmp_path, monkeypatch, error):
    import bench.infra.runner

    def oom(*args, **kwargs):
        raise error

    monkeypatch.setattr(bench.infra.runner, "fit", oom)
    results = tmp_path / "results"
    assert main(["run", str(study(write_study, ablate={"train.lr": [0.01]})), "--results", str(results)]) == 1
    statuses = [json.loads((d / "status.json").read_text()) for d in run_dirs(results)]
    assert len(statuses) == 2 and all(s["state"] == "failed" and s["error"] == "out of memory" for s in statuses)
    assert "smaller train.batch_size" in statuses[0]["detail"]


def test_recorded_validation_accuracy_is_the_tested_epochs(write_study, tmp_path):
    path = write_study(
        {"study": "last", "defaults": {**TINY, "train": {**TINY["train"], "epochs": 3, "select": "last"}}}
    )
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 0
    (d,) = run_dirs(results)
    history = pd.read_csv(d / "history.csv")
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["best_epoch"] == 3 and metrics["best_val_acc"] == pytest.approx(history.val_acc.iloc[-1])


def test_the_backbone_built_to_check_the_weights_is_taken_by_the_first_run_and_changes_no_result(
    write_study, tmp_path, monkeypatch
):
    """The pre-flight check builds each pretrained backbone once; the first run of those weights takes it instead
    of building its own, and its result is the same to the last bit as a run that builds it (the random numbers
    its head and training draw are those a build would have left)."""
    from bench import data, models
    from bench.config import RunConfig
    from bench.models import Prebuilt
    from bench.training.loop import fit
    from tests.test_models import saved_resnet50

    weights = tmp_path / "r18.pth"
    saved_resnet50(weights, arch="resnet18")
    spec = {**TINY, "model": {**TINY["model"], "arch": "resnet18", "weights": f"file:{weights}", "freeze": "stem"}}
    built = []
    real = models.build_backbone
    monkeypatch.setattr(models, "build_backbone", lambda *a: built.append(a) or real(*a))
    assert main(["run", str(study(write_study, defaults=spec, seeds=[0, 1])), "--results", str(tmp_path / "r")]) == 0
    assert [w for w, _ in built].count(f"file:{weights}") == 2  # the check's (seed 0, taken by run 0), run 1's: not 3

    cfg = RunConfig(**spec)
    ds, cpu = data.load(cfg.data), torch.device("cpu")
    torch.manual_seed(123)  # whatever state the caller left: the prebuilt run must not depend on it
    prebuilt = Prebuilt(cfg.model.arch, cfg.model.weights, cfg.seed)
    after = torch.rand(3)
    took, built_anew = fit(cfg, ds, cpu, prebuilt=prebuilt), fit(cfg, ds, cpu)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)  # building it ahead left the caller's random state alone
    timing = ("seconds", "train_images_per_sec")
    assert [{k: v for k, v in row.items() if k not in timing} for row in took.history] == [
        {k: v for k, v in row.items() if k not in timing} for row in built_anew.history
    ]
    assert (took.test_logits == built_anew.test_logits).all()
    with pytest.raises(RuntimeError, match="taken already"):
        prebuilt.take()
    with pytest.raises(ValueError, match="prebuilt for"):
        fit(cfg.model_copy(update={"seed": 1}), ds, cpu, prebuilt=Prebuilt(cfg.model.arch, cfg.model.weights, 0))


@pytest.mark.parametrize("arch", ["resnet18", "cifar_resnet20"])
def test_a_prebuilt_backbone_leaves_the_random_state_a_build_leaves(tmp_path, monkeypatch, arch):
    """For the libraries' own weights too (torchvision's from the hub cache): the state after taking a prebuilt
    backbone is the state after seeding and building it, and the weights are the same."""
    import torchvision

    from bench.models import Prebuilt, build_backbone
    from bench.pretrained import hub_file
    from tests.test_models import saved_resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if arch == "resnet18":
        weights = "torchvision:IMAGENET1K_V1"
        saved_resnet50(hub_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url), arch="resnet18")
    else:
        weights = "none"  # a CIFAR network has no library weights; its random init is what is drawn
    prebuilt = Prebuilt(arch, weights, 7)
    torch.manual_seed(0)
    net = prebuilt.take()
    after_take = torch.rand(5)
    torch.manual_seed(7)
    again = build_backbone(weights, arch)
    assert torch.equal(torch.rand(5), after_take)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
