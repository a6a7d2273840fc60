import hashlib
import json
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from bench import data
from bench.config import DataConfig, InputConfig
from bench.training.transforms import BatchTransform, flip_crop

CLASSES = ["cat", "dog", "frog"]


def make_folder(root, per_class=(12, 4), size=8, seed=0):
    """An image-folder tree with PNGs whose colour encodes the class, so labels can be checked."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 50, (size, size, 3), dtype=np.uint8)
                img[..., c] = 200 + i  # the class channel is bright
                Image.fromarray(img).save(root / split / name / f"{i:04d}.png")
    return root


def test_folder_source_reads_labels_splits_and_caches(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = data.load(DataConfig(source="folder", path=str(root), val_size=6))
    assert ds.classes == CLASSES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 6, 12)
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.shape[1:] == (3, 8, 8)
    for split in (ds.train, ds.val, ds.test):  # every image's bright channel is its label
        assert torch.equal(split.x.float().mean((2, 3)).argmax(1), split.y)
    assert torch.bincount(ds.val.y).tolist() == [2, 2, 2]  # stratified
    assert list((data.cache_root() / "decoded").glob("*.npz"))
    again = data.load(DataConfig(source="folder", path=str(root), val_size=6))  # from the cache
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.val.y, ds.val.y)


def test_folder_source_reads_a_tar_gz_like_the_shared_copy(tmp_path):
    root = make_folder(tmp_path / "cifar10-jpeg")
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar10-jpeg")
    ds = data.load(DataConfig(source="folder", path=str(archive), val_size=3))
    assert ds.classes == CLASSES and len(ds.test) == 12
    assert torch.equal(ds.test.x.float().mean((2, 3)).argmax(1), ds.test.y)


def test_validation_split_depends_on_split_seed_only(tmp_path):
    root = make_folder(tmp_path / "imgs")
    a = data.load(DataConfig(source="folder", path=str(root), val_size=6, split_seed=0))
    b = data.load(DataConfig(source="folder", path=str(root), val_size=6, split_seed=0, limit_train=12))
    c = data.load(DataConfig(source="folder", path=str(root), val_size=6, split_seed=1))
    assert torch.equal(a.val.x, b.val.x)  # limiting the training set leaves validation alone
    assert len(b.train) == 12 and torch.bincount(b.train.y).tolist() == [4, 4, 4]
    assert not torch.equal(a.val.x, c.val.x)
    # no image is in two splits
    flat = lambda s: {bytes(img.numpy()) for img in s.x}
    assert not flat(a.train) & flat(a.val)


def test_folder_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(data.DataError, match=r"data.path .*nowhere does not exist: set it to an image-folder tree"):
        data.load(DataConfig(source="folder", path=str(tmp_path / "nowhere")))
    (tmp_path / "flat").mkdir()
    with pytest.raises(data.DataError, match=r"has no train/ folder"):
        data.load(DataConfig(source="folder", path=str(tmp_path / "flat")))
    root = make_folder(tmp_path / "bad")
    (root / "train" / "dog" / "0001.png").write_bytes(b"not an image")
    with pytest.raises(data.DataError, match=r"cannot decode image .*dog/0001.png"):
        data.load(DataConfig(source="folder", path=str(root), val_size=3))
    assert not list((data.cache_root() / "decoded").glob("*.tmp*"))  # nothing half-written
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(data.DataError, match=r"cannot read .*broken.tar.gz as a .tar.gz"):
        data.load(DataConfig(source="folder", path=str(tmp_path / "broken.tar.gz")))
    with pytest.raises(data.DataError, match=r"val_size=100 leaves too few training images"):
        data.load(DataConfig(source="folder", path=str(make_folder(tmp_path / "small")), val_size=100))


def test_digits_source_ships_offline():
    ds = data.load(DataConfig(source="digits", val_size=100))
    assert ds.classes == [str(i) for i in range(10)]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1247, 100, 450)
    assert ds.train.x.shape[1:] == (3, 8, 8) and ds.train.x.max() == 255


def write_fake_cifar(root, n_train=60, n_test=20):
    """cifar-10-batches-py as torchvision reads it: pickled dicts of flat uint8 rows."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {}
    for name, n in [*((f"data_batch_{i}", n_train // 5) for i in range(1, 6)), ("test_batch", n_test)]:
        labels = [i % 10 for i in range(n)]
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch))
        files[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    files["batches.meta"] = hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()
    return files


def test_official_cifar10_reader_offline(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    files = write_fake_cifar(tmp_path)
    # torchvision checks the md5 of each file: point its lists at this test's files
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", files[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", files["test_batch"]]])
    monkeypatch.setattr(
        CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": files["batches.meta"]}
    )
    ds = data.load(DataConfig(source="cifar10", path=str(tmp_path), download=False, val_size=10))
    assert ds.classes[0] == "airplane" and (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 20)
    assert ds.train.x.shape[1:] == (3, 32, 32)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    first = torch.from_numpy(raw["data"][0].reshape(3, 32, 32))
    assert torch.equal(ds.test.x[0], first) and ds.test.y[0] == 0


def test_official_cifar10_missing_offline_says_where_and_how(tmp_path):
    with pytest.raises(data.DataError, match=r"official CIFAR-10 not found under .*cifar-10-batches-py.*set data.path"):
        data.load(DataConfig(source="cifar10", path=str(tmp_path), download=False))


def test_flip_crop_moves_pixels_without_inventing_them():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).repeat(64, 1, 1, 1)
    out = flip_crop(x, pad=2)
    assert out.shape == x.shape
    # the centre 4x4 of each crop is a translated (maybe flipped) window of the original image
    assert set(out[:, :, 2:6, 2:6].unique().tolist()) <= set(x.unique().tolist())
    assert len({tuple(o.flatten().tolist()) for o in out}) > 10  # images are augmented independently


def test_batch_transform_resizes_and_normalizes():
    x = torch.full((4, 3, 8, 8), 255, dtype=torch.uint8)
    unit = BatchTransform(InputConfig(resolution=32, normalize="unit"), train=False)(x)
    assert unit.shape == (4, 3, 32, 32) and torch.allclose(unit, torch.ones_like(unit))
    imnet = BatchTransform(InputConfig(resolution=16, normalize="imagenet"), train=False)(x)
    assert torch.allclose(
        imnet[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]), atol=1e-5
    )
    policy = BatchTransform(InputConfig(resolution=16, augment="trivialaugment"), train=True)
    assert policy(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)).shape == (5, 3, 16, 16)
    evaluation = BatchTransform(InputConfig(resolution=16, augment="flip-crop"), train=False)
    assert evaluation.augment == "none"  # evaluation never augments


def test_a_tar_gz_read_in_place_gives_the_tree_s_images_and_decodes_only_those_used(tmp_path, monkeypatch):
    """The archive is never extracted; its members are listed in the tree's order (nested folders, upper-case
    extensions, hidden files skipped), so every split holds the same images as the extracted tree, and a study
    that uses a few of them decodes those few."""
    from bench.data import folder
    from tests.test_identity import image_folder

    root = image_folder(tmp_path / "tree" / "cifar", n=30)
    for sub in ("b", "a", "a/z"):  # nested folders sort as torchvision's ImageFolder sorts them
        (root / "train" / "dog" / sub).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), len(sub), np.uint8)).save(root / "train" / "dog" / sub / "0.PNG")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"not an image")  # skipped by both
    (root / "train" / "notes.txt").write_text("not a class")
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    decoded = []
    real = folder.decode_images
    monkeypatch.setattr(folder, "decode_images", lambda p, refs, *a: decoded.append(refs) or real(p, refs, *a))
    for kw in ({}, {"limit_train": 10, "limit_test": 10}):
        cfg = {"source": "folder", "val_size": 6, **kw}
        a = data.load(DataConfig(path=str(root), **cfg))
        b = data.load(DataConfig(path=str(archive), **cfg))
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(a, split).x, getattr(b, split).x), (kw, split)
            assert torch.equal(getattr(a, split).y, getattr(b, split).y), (kw, split)
        assert a.classes == b.classes == ["cat", "dog", "frog"]
    assert not (data.cache_root() / "extracted").exists()
    full, subset = decoded[1], decoded[3]  # the archive's decodes: the whole set, then only what the study uses
    assert len(full["train"]) == 93 and len(full["test"]) == 12
    assert len(subset["train"]) == 10 + 6 and len(subset["test"]) == 10  # training and validation images, test
    assert all(name.startswith("cifar/") for name in subset["train"])


def archived_folder(tmp_path, monkeypatch) -> DataConfig:
    """A 3-class image folder packed as cifar.tar.gz (one top folder), a fresh cache, and a small study's data."""
    from tests.test_identity import image_folder

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = image_folder(tmp_path / "tree" / "cifar", n=30)
    path = tmp_path / "cifar.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    return DataConfig(source="folder", path=str(path), val_size=6, limit_train=10, limit_test=10)


def test_a_tar_gz_is_read_once_on_a_first_run_and_its_listing_remembered(tmp_path, monkeypatch):
    """A first load lists the archive and keeps the images' bytes in the same pass (no second read); a later
    load takes the listing from the cache, named by the archive's content; a damaged listing is made again;
    an archive too big to keep is read a second time for the images used only."""
    from bench.data import archive, folder

    cfg = archived_folder(tmp_path, monkeypatch)
    scans, reads = [], []
    scan, read = archive._scan, archive.read_members
    monkeypatch.setattr(archive, "_scan", lambda *a: scans.append(a) or scan(*a))
    monkeypatch.setattr(archive, "read_members", lambda *a: reads.append(a) or read(*a))
    first = data.load(cfg)
    assert (len(scans), len(reads)) == (1, 0)  # listed and read in one pass
    again = data.load(cfg.model_copy(update={"limit_train": 12}))  # other images: decoded, not listed again
    assert (len(scans), len(reads)) == (1, 1)
    assert torch.equal(again.test.x, first.test.x)
    memo = next((tmp_path / "cache" / "listings").glob("*.json"))
    memo.write_text('{"train": {"classes": [1]}}')
    assert torch.equal(data.load(cfg).train.x, first.train.x) and len(scans) == 2  # damaged: listed anew
    monkeypatch.setattr(archive, "KEEP_BYTES", 10)
    for part in ("listings", "decoded"):
        shutil.rmtree(tmp_path / "cache" / part)
    assert torch.equal(data.load(cfg).train.x, first.train.x) and (len(scans), len(reads)) == (3, 2)
    assert folder.listing_file("other content") != memo


def test_links_in_a_tar_gz_are_refused_by_name(tmp_path):
    from tests.test_identity import image_folder

    root = image_folder(tmp_path / "tree")
    (root / "train" / "cat" / "link.png").symlink_to(root / "train" / "dog" / "000.png")
    archive = tmp_path / "linked.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tree")
    with pytest.raises(data.DataError, match=r"linked.tar.gz: tree/train/cat/link.png is a link \(to .*\).*re-pack"):
        data.load(DataConfig(source="folder", path=str(archive), val_size=6))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("compression", ["gz", "", "bz2"])
def test_the_fast_archive_reader_reads_what_tarfile_reads(tmp_path, fmt, compression):
    """bench reads plain ustar and GNU archives (gzip or none) itself, 2.5x faster than tarfile: it must give
    tarfile's members, kinds and bytes, names with a ustar prefix, non-UTF-8 bytes, folders with and without a
    trailing slash included; anything else (pax headers, GNU long names, bzip2) goes to tarfile."""
    import io

    from bench.data import archive

    path = tmp_path / f"x.tar{'.' + compression if compression else ''}"
    deep = "/".join(["folder" * 3] * 6)  # 125 characters: a ustar prefix, or a long-name header
    entries = [
        ("root", None),
        ("root/train/", None),
        ("root/train/cat", None),
        ("root/train/cat/0.jpg", b"\xff\xd8jpeg" * 300),
        ("root/train/cat/empty.jpg", b""),
        ("root/train/dog/caf\xe9.jpg", b"two"),
        (f"root/{deep}/x.png", b"deep"),
        ("root/test/dog/1.jpg", b"one"),
    ]
    if fmt == tarfile.USTAR_FORMAT:  # a ustar header cannot hold a 300-character name at all
        entries = [e for e in entries if deep not in e[0]] + [(f"root/{'a' * 120}/{'b' * 90}.png", b"prefixed")]
    with tarfile.open(path, f"w:{compression}", format=fmt, encoding="latin-1") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)

    def keep(m, size):
        return m.name.endswith("g")

    slow = archive._read_tarfile(path, keep)
    fast = archive._read_ustar(path, keep)
    assert archive._read(path, keep) == slow
    assert len(slow[0]) == len(entries) and sum(m.kind == "dir" for m in slow[0]) == 3
    assert sorted(slow[1].values()) == sorted(c for n, c in entries if c is not None and n.endswith("g"))
    takes_it = compression != "bz2" and (fmt == tarfile.USTAR_FORMAT or not any(len(n) > 100 for n, _ in entries))
    if fmt == tarfile.PAX_FORMAT:
        takes_it = False  # non-ASCII names are in pax headers
    assert (fast is not None) == takes_it
    if fast is not None:
        assert fast == slow


def test_the_fast_archive_reader_leaves_links_and_damage_to_tarfile(tmp_path):
    import io

    from bench.data import archive

    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("a/file.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("a/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "file.jpg"
        tar.addfile(link)
    assert archive._read_ustar(path, lambda m, s: True) is None
    assert archive._read(path, lambda m, s: True)[0][1] == archive.Member("a/link.jpg", "link", "file.jpg")
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("a/file.jpg")
        info.size = 3000
        tar.addfile(info, io.BytesIO(bytes(3000)))
    damaged = bytearray(whole.read_bytes())
    damaged[10] ^= 1  # a name byte: the checksum no longer matches
    (tmp_path / "damaged.tar").write_bytes(damaged)
    (tmp_path / "short.tar").write_bytes(whole.read_bytes()[:2000])
    for name in ("damaged.tar", "short.tar"):
        assert archive._read_ustar(tmp_path / name, lambda m, s: True) is None
        with pytest.raises(data.DataError, match=f"cannot read .*{name}"):
            archive._read(tmp_path / name, lambda m, s: True)


def test_image_folders_take_torchvision_s_image_extensions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from bench.data import folder

    assert folder.IMG_EXTENSIONS == IMG_EXTENSIONS


def test_a_study_s_images_are_read_in_another_process_without_torch_and_then_not_again(tmp_path, monkeypatch):
    """bench run reads an image folder's .tar.gz in another process while it imports torch: that process imports
    no torch and leaves the listing and the decoded images in the cache, so data.load reads no archive; the
    data set is the one a load without it gives."""
    import os
    import subprocess
    import sys

    from bench.data import archive, background

    cfg = archived_folder(tmp_path, monkeypatch)
    spec = json.dumps([cfg.model_dump(mode="json")])
    code = (
        f"import sys; from bench.data import background as b; r = b.main([{spec!r}]); "
        "assert 'torch' not in sys.modules; sys.exit(r)"
    )
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "other cache")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
    assert list((tmp_path / "other cache" / "listings").glob("*.json"))

    background.start([cfg, cfg.model_copy(update={"source": "digits", "path": None})])  # only the folder is read
    assert list(background._running) == [cfg]
    reads = []
    monkeypatch.setattr(archive, "_read", lambda *a: reads.append(a))
    got = data.load(cfg)
    assert not background._running and reads == []  # waited for, and found everything cached
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    fresh = data.load(cfg)
    assert all(torch.equal(getattr(got, s).x, getattr(fresh, s).x) for s in ("train", "val", "test"))
    assert got.fingerprint == fresh.fingerprint


def test_a_background_read_that_fails_leaves_the_error_to_data_load(tmp_path, monkeypatch):
    from bench.data import background

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b truncated")
    cfg = DataConfig(source="folder", path=str(tmp_path / "broken.tar.gz"), val_size=6)
    background.start([cfg])
    process = background._running[cfg]
    with pytest.raises(data.DataError, match=r"cannot read .*broken.tar.gz as a .tar.gz"):
        data.load(cfg)
    assert process.returncode == 1
