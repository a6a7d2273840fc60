"""A real full disk: a 20 MB tmpfs mounted for the test (as root, where the kernel allows it; skipped elsewhere)."""

import errno
import json
import shutil
import subprocess

import pytest
import torch

from bench.cli import main
from bench.infra.files import atomic_save
from bench.infra.store import Store, checkpoint_bytes
from tests.helpers import TINY, variants_of

STEM_LAYER3 = {**TINY, "model": {**TINY["model"], "freeze": "stem-layer3"}}  # layer4 trains: ~240 MB checkpoints


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB file system of its own at tmp_path/disk."""
    where = tmp_path / "disk"
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(where)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and the right to mount): {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_torchs_wrapped_error_on_a_full_disk_is_no_space_left_at_path(small_disk):
    target = small_disk / "checkpoint.pt"
    with pytest.raises(OSError) as e:  # torch raises RuntimeError('[enforce fail at inline_container.cc] ...')
        atomic_save(target, lambda f: torch.save({"w": torch.zeros(10_000_000)}, f))  # 40 MB
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert list(small_disk.iterdir()) == []  # the temporary file is gone, the space free again


def test_a_grid_that_cannot_fit_is_refused_before_it_starts(small_disk, write_study, capsys):
    path = write_study({"study": "big", "defaults": STEM_LAYER3})
    (v,) = variants_of(path)
    assert checkpoint_bytes(v.config) > 100 * 2**20  # ResNet-50 with Adam: the whole backbone counted
    assert main(["run", str(path), "--results", str(small_disk)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"MiB free at {small_disk}, but baseline needs about" in err and "free some space" in err
    assert not Store(small_disk).run_dir(v.run_id).exists()  # nothing started


def test_a_disk_that_fills_during_a_run_fails_it_cleanly_and_the_next_run_works(
    small_disk, write_study, monkeypatch, capsys
):
    path = write_study({"study": "big", "defaults": STEM_LAYER3})
    (v,) = variants_of(path)
    store = Store(small_disk)
    monkeypatch.setattr(Store, "check_space", lambda self, variants: None)  # as if the disk filled meanwhile
    assert main(["run", str(path), "--results", str(small_disk)]) == 1
    status = json.loads((store.run_dir(v.run_id) / "status.json").read_text())
    assert status["error"] == "no space left"
    assert status["detail"].startswith(f"no space left at {store.checkpoint(v.run_id)}: free some space")
    assert not list(small_disk.rglob("*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=1g", str(small_disk)], check=True)  # space freed
    assert main(["run", str(path), "--results", str(small_disk)]) == 0  # retried without being asked
    assert json.loads((store.run_dir(v.run_id) / "status.json").read_text())["state"] == "done"
