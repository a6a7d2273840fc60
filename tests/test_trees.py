"""What lies in an image folder: links, hidden files, FIFOs, huge images and damaged decode caches, each on a real
small tree (real symlinks, real hidden files, real PNGs). The fingerprint and the reader follow one rule."""

import hashlib
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from bench import data
from bench.config import DataConfig
from bench.data import folder
from tests.test_identity import Exploit, image_folder


def fingerprint(root):
    return data.data_fingerprint(DataConfig(source="folder", path=str(root), val_size=6))


def load(root, **kw):
    return data.load(DataConfig(source="folder", path=str(root), val_size=6, **kw))


def refused_by_both(root, match):
    """The fingerprint (bench list, run ids) and the reader (training) refuse the tree alike."""
    with pytest.raises(data.DataError, match=match):
        fingerprint(root)
    with pytest.raises(data.DataError, match=match):
        folder.samples(root / "train")


def old_tree_sha256(root):
    """The fingerprint as it was computed before this rule (rglob, names starting with '.' left out)."""
    h = hashlib.sha256()
    for p in sorted(p for p in root.rglob("*") if not p.name.startswith(".")):
        h.update(str(p.relative_to(root)).encode() + (b"/" if p.is_dir() else b"\0"))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_ordinary_trees_and_tar_gz_keep_their_fingerprints(tmp_path):
    root = image_folder(tmp_path / "images")
    (root / "train" / "cat" / "sub").mkdir()  # a nested folder and a stray file: both counted
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "cat" / "sub" / "x.png")
    (root / "train" / "README.txt").write_text("notes")
    assert folder.tree_sha256(root) == old_tree_sha256(root)  # existing folder run ids stay
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="images")
    assert fingerprint(archive) == "folder:" + hashlib.sha256(archive.read_bytes()).hexdigest()[:16]


def test_the_reader_lists_images_in_torchvision_order(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = image_folder(tmp_path / "images", n=3)
    for sub in ("b", "a", "a/z"):
        (root / "train" / "dog" / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "dog" / sub / "0.PNG")
    classes, found = folder.samples(root / "train")
    expected = make_dataset(str(root / "train"), find_classes(str(root / "train"))[1], extensions=IMG_EXTENSIONS)
    assert classes == ["cat", "dog", "frog"]
    assert [(str(p), t) for p, t in found] == expected


def test_train_and_test_as_links_to_other_folders_are_refused(tmp_path):
    """Row 1: the loader followed them, the fingerprint did not; now both refuse them by name."""
    elsewhere = image_folder(tmp_path / "elsewhere")
    root = tmp_path / "images"
    root.mkdir()
    for split in ("train", "test"):
        (root / split).symlink_to(elsewhere / split, target_is_directory=True)
    with pytest.raises(data.DataError, match=r"images/test is a symbolic link \(to .*elsewhere/test\).*cp -rL"):
        fingerprint(root)
    with pytest.raises(data.DataError, match="symbolic link"):
        load(root)


def test_data_path_itself_may_be_a_link(tmp_path):
    real = image_folder(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert fingerprint(link) == fingerprint(real)
    assert len(load(link).train) == len(load(real).train) == 30


def test_a_link_loop_in_a_class_folder_is_refused(tmp_path):
    """Row 2: `train/cat/loop -> ..` read every image many times, labelled cat."""
    root = image_folder(tmp_path / "images")
    (root / "train" / "cat" / "loop").symlink_to("..", target_is_directory=True)
    refused_by_both(root, r"cat/loop is a symbolic link \(to \.\.\)")


@pytest.mark.parametrize("what", ["class folder", "file"])
def test_links_whose_target_can_change_are_refused(tmp_path, what):
    """Row 3: a linked class folder or image could change without the tree changing."""
    root = image_folder(tmp_path / "images")
    other = image_folder(tmp_path / "other", seed=1)
    if what == "class folder":
        (root / "train" / "bird").symlink_to(other / "train" / "cat", target_is_directory=True)
        refused_by_both(root, r"train/bird is a symbolic link")
    else:
        (root / "train" / "cat" / "linked.png").symlink_to(other / "train" / "dog" / "000.png")
        refused_by_both(root, r"cat/linked.png is a symbolic link")
    (root / "train" / "cat" / "dangling.png").symlink_to(tmp_path / "gone.png")  # a broken link too
    with pytest.raises(data.DataError, match="symbolic link"):
        fingerprint(root)


def test_hidden_files_and_folders_are_skipped_by_both(tmp_path):
    """Row 4: 20 hidden PNGs were trained on (55 -> 75 images) but not fingerprinted."""
    root = image_folder(tmp_path / "images")
    before, n_before = fingerprint(root), len(load(root).train) + len(load(root).val)
    pixels = np.full((8, 8, 3), 255, np.uint8)
    for i in range(20):
        Image.fromarray(pixels).save(root / "train" / "cat" / f".hidden{i}.png")
    (root / "train" / "dog" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    for junk in (".ipynb_checkpoints", "__MACOSX"):  # would have been class folders
        (root / "train" / junk).mkdir()
        Image.fromarray(pixels).save(root / "train" / junk / "000.png")
    (root / "train" / "frog" / ".cache").mkdir()
    Image.fromarray(pixels).save(root / "train" / "frog" / ".cache" / "000.png")
    assert fingerprint(root) == before  # the same run id ...
    ds = load(root, split_seed=1)  # ... for the same images (another split seed: not the decode cache)
    assert len(ds.train) + len(ds.val) == n_before == 36 and ds.classes == ["cat", "dog", "frog"]
    assert not any((img == 255).all() for img in np.concatenate([ds.train.x.numpy(), ds.val.x.numpy()]))


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    root = image_folder(tmp_path / "images")
    os.mkfifo(root / "train" / "cat" / "pipe.png")
    refused_by_both(root, r"pipe.png is neither a file nor a folder")


def png_header(width, height):
    """A PNG that claims `width` x `height` pixels without holding them (Pillow reads the size first)."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 14_000])  # above the limit; above Pillow's own error (2 x the limit)
def test_a_decompression_bomb_names_the_file_and_the_limit(tmp_path, side):
    root = image_folder(tmp_path / "images")
    (root / "train" / "cat" / "huge.png").write_bytes(png_header(side, side))
    with pytest.raises(data.DataError) as e:
        load(root)
    assert "huge.png is too large to decode" in str(e.value) and f"{folder.MAX_PIXELS:,} pixels" in str(e.value)
    assert str(side * side) in str(e.value).replace(",", "")  # how large it is


def test_a_damaged_decode_cache_is_discarded_and_rebuilt(tmp_path):
    root = image_folder(tmp_path / "images")
    first = load(root)
    (cache,) = (data.cache_root() / "decoded").glob(f"{fingerprint(root).replace(':', '-')}-*.npz")
    cache.write_bytes(cache.read_bytes()[:1000])  # a truncated zip
    again = load(root)
    assert np.array_equal(again.train.x, first.train.x) and np.array_equal(again.test.y, first.test.y)
    assert np.load(cache, allow_pickle=False)["x_train"].shape[0] == 36  # rewritten whole
    marker = tmp_path / "exploit-ran"
    cache.write_bytes(pickle.dumps(Exploit(str(marker))))  # a pickle in its place
    third = load(root)
    assert not marker.exists()  # never unpickled
    assert np.array_equal(third.train.x, first.train.x)
    np.save(cache.with_suffix(""), np.zeros(3))  # a plain .npy array where the archive should be
    os.replace(cache.with_suffix(".npy"), cache)
    assert np.array_equal(load(root).val.x, first.val.x)
