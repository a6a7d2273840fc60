"""The fault table of the run-identity issue: each row a real, small run with the fault injected."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import data
from bench.cli import main
from bench.config import DataConfig
from bench.infra import files
from bench.infra.store import Store
from tests.helpers import TINY, variants_of, write_manifest
from tests.test_identity import image_folder
from tests.test_report import write_run


def status(store, v):
    return json.loads((store.run_dir(v.run_id) / "status.json").read_text())


def leftovers(*folders):
    return [p for folder in folders for p in folder.rglob("*.tmp")]


@pytest.mark.parametrize("target", ["checkpoint.pt", "metrics.json", "features"])
def test_a_full_disk_fails_the_run_cleanly_and_the_next_run_works(write_study, tmp_path, monkeypatch, target):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))  # features not cached by an earlier test
    freeze = "stem-layer3" if target == "checkpoint.pt" else "backbone"  # only trained backbones checkpoint
    path = write_study({"study": "full", "defaults": {**TINY, "model": {**TINY["model"], "freeze": freeze}}})
    (v,) = variants_of(path)
    store = Store(tmp_path / "results")
    real_fsync = os.fsync

    def full(fd):  # the disk fills up while this one file is written
        if target in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full)
    assert main(["run", str(path), "--results", str(store.root)]) == 1
    s = status(store, v)
    assert s["state"] == "failed" and s["error"] == "no space left" and "no space left at " in s["detail"]
    assert target in s["detail"]
    assert not leftovers(store.root, files.cache_root())  # temporary files removed
    monkeypatch.setattr(files.os, "fsync", real_fsync)  # space freed
    assert main(["run", str(path), "--results", str(store.root)]) == 0  # retried without being asked
    assert status(store, v)["state"] == "done"


def test_unwritable_places_are_named_before_anything_is_decoded(write_study, tmp_path, capsys, monkeypatch):
    path = write_study({"study": "w", "defaults": TINY})
    monkeypatch.setattr(data, "load", lambda cfg: pytest.fail("decoded before the check"))
    (tmp_path / "file").write_text("")
    assert main(["run", str(path), "--results", str(tmp_path / "file" / "results")]) == 2
    assert "is a file where a folder should be" in capsys.readouterr().err
    long = write_study({"study": "s" * 300, "defaults": TINY}, "long.yaml")
    assert main(["run", str(long), "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "File name too long" in err and "use a shorter name" in err and "Traceback" not in err
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "file" / "r")]) == 2
    assert "the report folder (--out)" in capsys.readouterr().err


def test_a_folder_without_write_permission_is_named(write_study, tmp_path, capsys, monkeypatch):
    path = write_study({"study": "w", "defaults": TINY})
    monkeypatch.setattr(data, "load", lambda cfg: pytest.fail("decoded before the check"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: the kernel's refusal, as an ordinary user gets it, stands in
        mkdir = Path.mkdir

        def refused(self, *args, **kwargs):
            if self.is_relative_to(locked):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", refused)
    assert main(["run", str(path), "--results", str(locked / "results")]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and str(locked / "results") in err and "Traceback" not in err


def test_an_alias_bomb_is_refused_quickly(write_study, capsys):
    bomb = "study: bomb\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):  # 10**9 values once expanded
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]\n"
    path = write_study(bomb)
    started = time.perf_counter()
    assert main(["list", str(path)]) == 2
    assert time.perf_counter() - started < 1
    err = capsys.readouterr().err
    assert "its YAML aliases expand to 1,111,111,1" in err and "(more than 100,000)" in err  # 10**9 + ... values


def test_a_study_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("study: caf\xe9\n".encode("latin-1"))
    assert main(["list", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text: byte 10 is 0xe9" in err and "Traceback" not in err


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folder_oddities_decode_correctly_or_are_named(tmp_path):
    root = image_folder(tmp_path / "ok", n=4)
    (root / "train" / "README.txt").write_text("stray file")  # ignored
    (root / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    deep = np.full((8, 8), 65535 // 2, dtype=np.uint16)  # a 16-bit grey image: scaled, never clipped
    write_png(root / "train" / "cat" / "100.png", deep)
    palette = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).convert("P")
    palette.save(root / "train" / "dog" / "100.png")
    Image.fromarray(np.full((8, 8, 4), 200, dtype=np.uint8), "RGBA").save(root / "train" / "frog" / "100.png")
    ds = data.load(DataConfig(source="folder", path=str(root), val_size=3))
    everything = np.concatenate([ds.train.x.numpy(), ds.val.x.numpy()])
    assert any((img == 127).all() for img in everything)  # 32767/65535 -> 127, not 255

    (root / "train" / "empty").mkdir()
    with pytest.raises(data.DataError, match=r"empty.*remove the empty class folder"):
        data.load(DataConfig(source="folder", path=str(root), val_size=3, split_seed=1))
    (root / "train" / "empty").rmdir()
    write_png(root / "train" / "cat" / "101.png", np.zeros((9, 9, 3), dtype=np.uint8))
    with pytest.raises(data.DataError, match=r"image .*101.png is 9x9 px but .* is 8x8"):
        data.load(DataConfig(source="folder", path=str(root), val_size=3, split_seed=2))

    one = tmp_path / "one"
    for split in ("train", "test"):
        write_png(one / split / "only" / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(data.DataError, match=r"1 class folder\(s\) \(only\); a classifier needs at least 2"):
        data.load(DataConfig(source="folder", path=str(one), val_size=1))


def test_splits_smaller_than_the_classes_name_the_key_and_the_minimum(write_study, capsys):
    with pytest.raises(data.DataError, match=r"data.val_size=5 is smaller than the number of classes \(10\).*>= 10"):
        data.load(DataConfig(source="digits", val_size=5))
    path = write_study({"study": "few", "defaults": {**TINY, "data": {**TINY["data"], "limit_test": 3}}})
    assert main(["list", str(path)]) == 2  # below any class count: refused when the file is read
    assert "data.limit_test: got 3; input should be greater than or equal to 10" in capsys.readouterr().err


def test_a_class_too_small_to_stratify(tmp_path):
    root = image_folder(tmp_path / "imgs", n=4)
    for p in sorted((root / "train" / "frog").iterdir())[1:]:
        p.unlink()
    with pytest.raises(data.DataError, match=r"class 'frog' has 1 training image\(s\).*at least 2"):
        data.load(DataConfig(source="folder", path=str(root), val_size=3))


def test_a_last_batch_of_one_image_trains_with_batchnorm(write_study, tmp_path):
    cfg = {**TINY, "model": {**TINY["model"], "head": {"hidden": 8, "norm": True}}, "train": {"batch_size": 17}}
    path = write_study({"study": "one", "defaults": {**cfg, "data": {**TINY["data"], "limit_train": 35}}})
    assert 35 % 17 == 1
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 0
    (d,) = (tmp_path / "r" / "runs").iterdir()
    assert json.loads((d / "status.json").read_text())["state"] == "done"


def test_a_loss_that_explodes_but_stays_finite_is_diverged(write_study, tmp_path, capsys):
    cfg = {
        **TINY,
        "train": {**TINY["train"], "lr": 10, "optimizer": "sgd"},
        "model": {**TINY["model"], "head": {"hidden": 0}},
    }
    path = write_study({"study": "boom", "defaults": cfg})
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 1
    (d,) = (tmp_path / "r" / "runs").iterdir()
    s = json.loads((d / "status.json").read_text())
    assert s["error"] == "diverged" and "loss became" in s["detail"]


NAMES = "[red]x[/red] *a*_b_ $5 50% {c} \\d & #1 |e| ~f~ <g>"


def test_user_text_is_shown_literally_and_typeset_safely(write_study, tmp_path, capsys):
    path = write_study({"study": "odd", "defaults": TINY, "variants": [{"name": NAMES, "set": {"train.lr": 0.01}}]})
    results, out = tmp_path / "results", tmp_path / "reports"
    assert main(["run", str(path), "--results", str(results)]) == 0
    assert f"> {NAMES} (seed 0)" in capsys.readouterr().err.replace("\n", "")  # rich markup not interpreted
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    page = (out / "odd" / "report.md").read_text()
    assert r"\[red\]x\[/red\] \*a\*\_b\_ \$5 50% {c} \\d & #1 \|e\| \~f\~ \<g\>" in page
    tex = (out / "odd" / "tables" / "results.tex").read_text()
    assert r"\$5 50\% \{c\} \textbackslash{}d \& \#1" in tex
    if not (os.environ.get("CI") or __import__("shutil").which("pdflatex")):
        return
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=out / "odd",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]


@pytest.mark.slow
def test_two_runs_on_one_store_both_exit_0(write_study, tmp_path):
    path = write_study({"study": "two", "defaults": TINY, "ablate": {"train.lr": [0.01, 0.03]}})
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(tmp_path / "results")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = sum(err.count("test accuracy") for _, err in outputs)
    assert trained == 3  # each run trained once, by whichever process got it first


def test_a_writable_check_never_removes_what_another_process_put_in_a_new_store(tmp_path, monkeypatch):
    """Two `bench run`s on a store that does not exist yet check it at the same moment: the folders
    one check made and removes again may already hold the other's files, or be gone under its probe."""
    studies = tmp_path / "results" / "studies"
    unlink = Path.unlink

    def other_process_writes_meanwhile(self, *a, **k):
        unlink(self, *a, **k)
        if self.name.endswith(".check"):
            (studies / "two.json").write_text("{}")

    monkeypatch.setattr(Path, "unlink", other_process_writes_meanwhile)
    files.check_writable(studies, "two.json", "the results store")
    assert (studies / "two.json").read_text() == "{}"

    mkdir = Path.mkdir
    removed = []

    def other_check_removes_the_folder_once(self, *a, **k):
        mkdir(self, *a, **k)
        if self == tmp_path / "new" and not removed:
            self.rmdir()  # the other checker's clean-up, between this mkdir and this probe
            removed.append(self)

    monkeypatch.setattr(Path, "mkdir", other_check_removes_the_folder_once)
    files.check_writable(tmp_path / "new", "two.json", "the results store")
    assert removed and not (tmp_path / "new").exists()  # checked on the second try, cleaned up after


def damaged_store(tmp_path):
    root = tmp_path / "results"
    variants = []
    for name, p in (
        ("baseline", 0.8),
        ("other", 0.7),
        ("nan", 0.7),
        ("unnormalised", 0.7),
        ("no-key", 0.7),
        ("null", 0.7),
        ("shape", 0.7),
    ):
        write_run(root, f"{name}-0", name, 0, p)
        variants.append((name, 0, f"{name}-0", {}))
    runs = root / "runs"
    pred = pd.read_csv(runs / "nan-0" / "predictions.csv")
    pred.loc[3, "p_cat"] = np.nan
    pred.to_csv(runs / "nan-0" / "predictions.csv", index=False)
    pred = pd.read_csv(runs / "unnormalised-0" / "predictions.csv")
    pred[["p_cat", "p_dog", "p_frog"]] *= 2
    pred.to_csv(runs / "unnormalised-0" / "predictions.csv", index=False)
    for name, edit in (
        ("no-key", lambda m: m.pop("final_val_acc")),
        ("null", lambda m: m.update(epochs=None)),
        ("shape", lambda m: m["test"].update(confusion_matrix=[[1, 2], [3, 4]])),
    ):
        m = json.loads((runs / f"{name}-0" / "metrics.json").read_text())
        edit(m)
        (runs / f"{name}-0" / "metrics.json").write_text(json.dumps(m))
    write_manifest(root, "damaged", variants)
    return root


def test_verify_names_every_run_it_could_not_verify(tmp_path, capsys):
    root = damaged_store(tmp_path)
    assert main(["verify", "--results", str(root)]) == 1
    err = capsys.readouterr().err.replace("\n", " ")
    for name, why in (
        ("nan", "non-finite probabilities"),
        ("unnormalised", "do not sum to 1"),
        ("no-key", "metrics.json missing or unreadable"),
        ("null", "metrics.json"),
        ("shape", "metrics.json"),
    ):
        assert f"{name} (seed 0, {name}-0) could not be verified" in err and why in err, name
    assert "baseline (seed 0" not in err and "Traceback" not in err


def test_report_and_compare_survive_hand_edited_records(tmp_path, capsys):
    root = damaged_store(tmp_path)
    assert main(["report", "--results", str(root), "--out", str(tmp_path / "r"), "--format", "md"]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    for name in ("no-key", "null", "shape"):
        assert f"({name}, seed 0): metrics.json missing or unreadable" in err
    assert "confusion_matrix must be 3 x 3" in err and "Traceback" not in err
    assert main(["compare", "other", "baseline", "--results", str(root)]) == 0
    assert main(["compare", "shape", "baseline", "--results", str(root)]) == 2
    assert "no finished run (damaged: metrics.json missing or unreadable)" in capsys.readouterr().err


def test_interrupts_say_what_they_interrupted(write_study, tmp_path, capsys, monkeypatch):
    image_folder(tmp_path / "images")
    path = write_study(
        {"study": "int", "defaults": {**TINY, "data": {"source": "folder", "path": "images", "val_size": 6}}}
    )

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("bench.data.folder.samples", interrupted)  # listing the images: every load
    assert main(["run", str(path), "--results", str(tmp_path / "results")]) == 130
    assert "interrupted while checking the data and weights: nothing was trained" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["run", str(path), "--results", str(tmp_path / "results")]) == 0
    monkeypatch.setattr("bench.report.build.references_table", interrupted)
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "r")]) == 130
    assert "interrupted while writing the report: each file written so far is complete" in capsys.readouterr().err
    assert not leftovers(tmp_path / "r")
