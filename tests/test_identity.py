"""Run identity: results are reused only for the same data, weights and code, wherever they lie."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from bench.cli import main
from bench.data.folder import tree_sha256
from bench.infra import identity
from bench.infra.store import Store
from tests.helpers import TINY, variants_of


def image_folder(root, seed=0, n=12, size=8):
    """train/ and test/ with three classes of random RGB PNGs."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("test", 4)):
        for c in ("cat", "dog", "frog"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i:03d}.png")
    return root


FOLDER = {**TINY, "data": {"source": "folder", "path": "images", "val_size": 6}}


def status_of(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["list", *argv, "--format", "csv"]) == 0
    return capsys.readouterr().out


def test_replaced_images_make_the_runs_stale_and_never_hit_old_features(write_study, tmp_path, capsys):
    image_folder(tmp_path / "images", seed=0)
    path = write_study({"study": "imgs", "defaults": FOLDER})
    results = str(tmp_path / "results")
    assert main(["run", str(path), "--results", results]) == 0
    (old,) = variants_of(path)
    old_metrics = Store(results).read_metrics(old.run_id)

    shutil.rmtree(tmp_path / "images")
    image_folder(tmp_path / "images", seed=1)  # other images, same path, same counts
    (new,) = variants_of(path)
    assert new.run_id != old.run_id and new.fingerprints.data != old.fingerprints.data
    assert "stale: data changed" in status_of(capsys, str(path), "--results", results)
    capsys.readouterr()
    assert main(["run", str(path), "--results", results]) == 0
    store = Store(results)
    assert store.state(new) == "done" and store.read_metrics(new.run_id).feature_cache == "computed"  # not a hit
    assert store.read_metrics(old.run_id) == old_metrics  # the old run kept aside, untouched
    manifest = store.read_manifest("imgs")
    assert [e.run_id for e in manifest.variants] == [new.run_id]  # the report shows the fresh run only


def test_overwritten_weights_file_is_noticed(write_study, tmp_path, capsys):
    weights = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    cfg = {**TINY, "model": {**TINY["model"], "weights": f"file:{weights}"}}
    path = write_study({"study": "w", "defaults": cfg})
    results = str(tmp_path / "results")
    assert main(["run", str(path), "--results", results]) == 0
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet50().state_dict(), weights)  # same size, same path, other weights
    assert "stale: weights changed" in status_of(capsys, str(path), "--results", results)
    capsys.readouterr()
    assert main(["run", str(path), "--results", results]) == 0
    (v,) = variants_of(path)
    assert Store(results).read_metrics(v.run_id).feature_cache == "computed"  # the old features are not reused


def test_a_moved_store_and_data_still_match(write_study, tmp_path, capsys):
    image_folder(tmp_path / "a" / "images")
    path = write_study({"study": "move", "defaults": {**FOLDER, "data": {**FOLDER["data"], "path": "a/images"}}})
    assert main(["run", str(path), "--results", str(tmp_path / "a" / "results")]) == 0
    shutil.move(tmp_path / "a", tmp_path / "b")  # another machine, another mount point
    text = path.read_text().replace("a/images", "b/images")
    path.write_text(text)
    assert "pending" not in status_of(capsys, str(path), "--results", str(tmp_path / "b" / "results"))
    capsys.readouterr()
    assert main(["run", str(path), "--results", str(tmp_path / "b" / "results")]) == 0
    assert "skipped" in capsys.readouterr().out


def test_runs_of_other_code_are_shown_and_rerun_only_when_asked(write_study, tmp_path, capsys, monkeypatch):
    path = write_study({"study": "code", "defaults": TINY})
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results)]) == 0
    here = identity.code_versions()
    monkeypatch.setattr(identity, "code_versions", lambda: {**here, "torch": "9.9.9"})
    assert "other code (torch" in status_of(capsys, str(path), "--results", str(results))
    capsys.readouterr()
    assert main(["run", str(path), "--results", str(results)]) == 0
    assert "skipped" in capsys.readouterr().out  # not re-run on its own
    assert main(["run", str(path), "--results", str(results), "--rerun-stale"]) == 0
    (v,) = variants_of(path)
    assert Store(results).read_header(v.run_id).code["torch"] == "9.9.9"
    assert len(list((results / "runs").glob(f"{v.run_id}.replaced-*"))) == 1  # the old run kept aside


def test_fingerprints_are_remembered_not_recomputed(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "images")
    first = tree_sha256(folder)
    monkeypatch.setattr(type(folder), "read_bytes", lambda self: pytest.fail(f"re-read {self}"))
    assert tree_sha256(folder) == first  # stats unchanged: read from the memo
    monkeypatch.undo()
    (folder / "train" / "cat" / "000.png").write_bytes((folder / "train" / "dog" / "000.png").read_bytes())
    assert tree_sha256(folder) != first


class Exploit:
    """Unpickling this calls open(target, 'w'): code from the file runs."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_crafted_checkpoint_cannot_run_code(write_study, tmp_path):
    marker = tmp_path / "exploit-ran"
    cfg = {**TINY, "model": {**TINY["model"], "freeze": "stem-layer3"}}
    path = write_study({"study": "evil", "defaults": cfg})
    (v,) = variants_of(path)
    store = Store(tmp_path / "results")
    store.run_dir(v.run_id).mkdir(parents=True)
    store.checkpoint(v.run_id).write_bytes(pickle.dumps({"net": Exploit(str(marker))}))
    assert main(["run", str(path), "--results", str(store.root)]) == 0  # the file is refused, the run starts over
    assert not marker.exists()
    assert json.loads((store.run_dir(v.run_id) / "status.json").read_text())["state"] == "done"
