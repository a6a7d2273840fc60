"""The official data sets, read by torchvision's readers from tiny files this test writes in each set's
official format. Every image is one flat colour that encodes its label, so splits and labels can be
checked after any resize."""

import hashlib
import pickle

import numpy as np
import pytest
import scipy.io
from PIL import Image

from bench import data
from bench.config import DataConfig
from bench.data import official


def colour(label: int) -> int:
    return 20 + 2 * label  # distinct grey levels for up to 100 classes; a flat image keeps them through a resize


def labels_of(split) -> np.ndarray:
    """The label each image encodes (its centre pixel), to compare with the label read."""
    x = split.x.numpy()
    return (x[:, 0, x.shape[2] // 2, x.shape[3] // 2].astype(int) - 20) // 2


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def flat_images(labels, side: int) -> np.ndarray:
    """(N, side, side, 3) uint8 images of each label's colour; the corner pixel numbers the image."""
    x = np.stack([np.full((side, side, 3), colour(y), np.uint8) for y in labels])
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(len(x)) % 256, np.arange(len(x)) // 256
    return x


def image_ids(split) -> set[int]:
    return set((split.x[:, 0, 0, 0].int() + 256 * split.x[:, 1, 0, 0].int()).tolist())


def balanced(classes: int, per_class: int) -> list[int]:
    return [c for _ in range(per_class) for c in range(classes)]


def check(ds, sizes, classes=None):
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    for split in (ds.train, ds.val, ds.test):
        assert np.array_equal(labels_of(split), split.y.numpy())
    if classes is not None:
        assert ds.classes == classes


# ---- the writers: each set's files in its official layout ------------------------------------------


def write_cifar100(root, monkeypatch):
    from torchvision.datasets import CIFAR100

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    sums = {}
    for name, y in (("train", balanced(100, 3)), ("test", balanced(100, 1))):
        rows = flat_images(y, 32).transpose(0, 3, 1, 2).reshape(len(y), -1)  # CIFAR's rows: R, G, B planes
        entry = {"data": rows, "fine_labels": y, "coarse_labels": [c // 5 for c in y]}
        (folder / name).write_bytes(pickle.dumps(entry))
        sums[name] = md5(folder / name)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    # torchvision checks each file against the published md5s: point them at this test's files
    monkeypatch.setattr(CIFAR100, "train_list", [["train", sums["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", sums["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5(folder / "meta")})


def write_svhn(root, monkeypatch):
    from torchvision.datasets import SVHN

    root.mkdir(parents=True)
    split_list = {}
    for split, y in (("train", balanced(10, 4)), ("test", balanced(10, 2))):
        x = flat_images(y, 32).transpose(1, 2, 3, 0)  # the .mat files hold (32, 32, 3, N)
        official_y = np.array([[10 if d == 0 else d] for d in y], np.uint8)  # digit 0 is labelled 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": official_y})
        split_list[split] = [SVHN.split_list[split][0], f"{split}_32x32.mat", md5(root / f"{split}_32x32.mat")]
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, **split_list})


def write_stl10(root, monkeypatch):
    from torchvision.datasets import STL10

    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, y in (("train", balanced(10, 4)), ("test", balanced(10, 2)), ("unlabeled", [0])):
        # column-major 96 x 96 planes, as the binary release stores them
        x = flat_images(y, 96).transpose(0, 3, 2, 1)
        x[:, :, 0, 1] = 0  # one off-centre pixel, to check the transpose back: it must land at row 1, column 0
        x.tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (np.array(y, np.uint8) + 1).tofile(folder / f"{split}_y.bin")  # labels 1..10
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    monkeypatch.setattr(
        STL10, "train_list", [[f, md5(folder / f)] for f in ("train_X.bin", "train_y.bin", "unlabeled_X.bin")]
    )
    monkeypatch.setattr(STL10, "test_list", [[f, md5(folder / f)] for f in ("test_X.bin", "test_y.bin")])
    return names


def write_image(path, label: int, size) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour(label),) * 3).save(path, format="PNG")  # lossless, under the official name


SIZES = [(40, 30), (25, 50), (64, 64), (33, 17)]  # images of many sizes, as these sets have


def write_flowers(root, monkeypatch):
    from torchvision.datasets import Flowers102

    folder = root / "flowers-102"
    labels = balanced(102, 4)  # 408 images: one of each class for train and val, two for test
    for i, y in enumerate(labels, 1):
        write_image(folder / "jpg" / f"image_{i:05d}.jpg", y, SIZES[i % len(SIZES)])
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array(labels) + 1})  # official labels 1..102
    ids = np.arange(1, 409)
    scipy.io.savemat(folder / "setid.mat", {"trnid": ids[:102], "valid": ids[102:204], "tstid": ids[204:]})
    monkeypatch.setattr(
        Flowers102,
        "_file_dict",
        {
            **Flowers102._file_dict,
            **{k: (f, md5(folder / f)) for k, f in (("label", "imagelabels.mat"), ("setid", "setid.mat"))},
        },
    )


def write_pets(root):
    folder = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    (folder / "annotations").mkdir(parents=True)
    for split, per_class in (("trainval", 6), ("test", 2)):
        lines = []
        for i, y in enumerate(balanced(3, per_class)):
            image_id = f"{breeds[y]}_{split}{i}"
            write_image(folder / "images" / f"{image_id}.jpg", y, SIZES[i % len(SIZES)])
            lines.append(f"{image_id} {y + 1} {1 + (y != 0)} 1")  # CLASS-ID SPECIES BREED-ID, from 1
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def write_dtd(root):
    folder = root / "dtd" / "dtd"
    textures = ["banded", "dotted", "zigzagged"]
    (folder / "labels").mkdir(parents=True)
    for split in ("train", "val", "test"):
        lines = []
        for i, y in enumerate(balanced(3, 2)):
            name = f"{textures[y]}_{split}_{i}.jpg"
            write_image(folder / "images" / textures[y] / name, y, SIZES[i % len(SIZES)])
            lines.append(f"{textures[y]}/{name}")
        (folder / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return textures


# ---- the tests ---------------------------------------------------------------------------------------


def test_cifar100_fine_labels_and_carved_validation(tmp_path, monkeypatch):
    write_cifar100(tmp_path, monkeypatch)
    ds = data.load(DataConfig(source="cifar100", path=str(tmp_path), download=False, val_size=100))
    check(ds, (200, 100, 100), [f"fine{i}" for i in range(100)])
    assert ds.train.x.shape[1:] == (3, 32, 32) and "CIFAR-100" in ds.description


def test_svhn_digit_zero_is_class_zero(tmp_path, monkeypatch):
    write_svhn(tmp_path / "svhn", monkeypatch)
    ds = data.load(DataConfig(source="svhn", path=str(tmp_path / "svhn"), download=False, val_size=10))
    check(ds, (30, 10, 20), [str(d) for d in range(10)])
    assert ds.test.y.tolist().count(0) == 2  # the two test images labelled 10 in the file


def test_stl10_labelled_images_in_their_orientation(tmp_path, monkeypatch):
    names = write_stl10(tmp_path, monkeypatch)
    ds = data.load(DataConfig(source="stl10", path=str(tmp_path), download=False, val_size=10))
    check(ds, (30, 10, 20), names)  # the unlabelled image is not in any split
    assert ds.train.x.shape[1:] == (3, 96, 96)
    assert (ds.train.x[:, :, 1, 0] == 0).all() and (ds.train.x[:, :, 0, 1] != 0).all()  # rows and columns as shot
    small = data.load(DataConfig(source="stl10", path=str(tmp_path), download=False, val_size=10, image_size=32))
    check(small, (30, 10, 20))
    assert small.train.x.shape[1:] == (3, 32, 32) and small.fingerprint != ds.fingerprint


def test_flowers102_official_validation_split_and_one_stored_size(tmp_path, monkeypatch):
    write_flowers(tmp_path, monkeypatch)
    cfg = DataConfig(source="flowers102", path=str(tmp_path), download=False, image_size=24)
    ds = data.load(cfg)
    check(ds, (102, 102, 204))
    assert len(ds.classes) == 102 and ds.classes[0] == "pink primrose"  # torchvision's class names
    assert ds.train.x.shape[1:] == (3, 24, 24)
    assert list(data.cache_root().glob("decoded/flowers102-*-24px-*.npz"))  # decoded once, then from the cache
    again = data.load(cfg)
    assert all((getattr(again, s).x == getattr(ds, s).x).all() for s in ("train", "val", "test"))


def test_pets_and_dtd_read_their_annotation_files(tmp_path):
    write_pets(tmp_path)
    pets = data.load(DataConfig(source="pets", path=str(tmp_path), download=False, image_size=16, val_size=3))
    check(pets, (15, 3, 6), ["Abyssinian", "American Bulldog", "Bengal"])
    textures = write_dtd(tmp_path)
    dtd = data.load(DataConfig(source="dtd", path=str(tmp_path), download=False, image_size=16))
    check(dtd, (6, 6, 6), textures)


def test_data_size_subsets_are_stratified_nested_and_leave_validation_and_test_alone(tmp_path, monkeypatch):
    write_cifar100(tmp_path, monkeypatch)
    base = {"source": "cifar100", "path": str(tmp_path), "download": False, "val_size": 100}
    full = data.load(DataConfig(**base))
    half = data.load(DataConfig(**base, train_fraction=0.5))
    count = data.load(DataConfig(**base, limit_train=150))
    assert (len(half.train), len(count.train)) == (100, 150)
    assert np.bincount(half.train.y.numpy()).tolist() == [1] * 100  # one of each of the 100 classes
    for small, large in ((half, count), (count, full)):  # every smaller subset lies inside the larger one
        assert image_ids(small.train) < image_ids(large.train)
    for other in (half, count):
        assert all((getattr(other, s).x == getattr(full, s).x).all() for s in ("val", "test"))
    assert len({full.fingerprint, half.fingerprint, count.fingerprint}) == 3
    with pytest.raises(data.DataError, match=r"data.train_fraction=0.01 keeps 2 of the 200 training images.*>= 0.5"):
        data.load(DataConfig(**base, train_fraction=0.01))


@pytest.mark.parametrize(
    "source, title, where",
    [
        ("cifar100", "CIFAR-100", "cifar-100-python"),
        ("svhn", "SVHN", "train_32x32.mat"),
        ("stl10", "STL-10", "stl10_binary"),
        ("flowers102", "Oxford Flowers-102", "flowers-102"),
        ("pets", "Oxford-IIIT Pets", "oxford-iiit-pet"),
        ("dtd", "DTD", "dtd"),
    ],
)
def test_a_missing_set_says_where_its_files_go_and_where_to_get_them(tmp_path, source, title, where):
    sized = {"image_size": 32} if official.OFFICIAL[source].size is None else {}
    with pytest.raises(data.DataError) as e:
        data.load(DataConfig(source=source, path=str(tmp_path), download=False, **sized))
    msg = str(e.value)
    assert f"official {title} not found under {tmp_path / where}" in msg and "(data.download is false)" in msg
    assert "download it from http" in msg and "set data.path to the folder that holds" in msg


def test_memory_need_is_stated_and_a_set_that_cannot_fit_is_refused():
    cfg = DataConfig(source="flowers102", image_size=512)
    assert official.check_memory(cfg, available=64 * 2**30) == 8_189 * 3 * 512 * 512
    with pytest.raises(data.DataError, match=r"Oxford Flowers-102 at 512 px needs 6.0 GiB.*2.0 GiB is available"):
        official.check_memory(cfg, available=2 * 2**30)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"source": "pets"}, "has images of many sizes: set data.image_size"),
        ({"source": "cifar100", "limit_train": 100, "train_fraction": 0.1}, "set one of them"),
        ({"source": "cifar100", "train_fraction": 1.5}, "less than or equal to 1"),
    ],
)
def test_data_settings_that_cannot_work_are_refused_at_load_time(settings, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**settings)


def test_validation_size_does_not_apply_to_sets_with_an_official_validation_split():
    # e.g. `--set data.source=dtd` on a study whose CIFAR defaults give val_size: the official split is used
    assert DataConfig(source="dtd", image_size=64, val_size=500) == DataConfig(source="dtd", image_size=64)
    assert DataConfig(source="pets", image_size=64, val_size=500).val_size == 500


def test_a_data_size_axis_runs_and_draws_accuracy_against_training_images(write_study, tmp_path):
    from bench.cli import main
    from bench.report.figures import data_size_points
    from bench.report.runs import load_runs
    from tests.helpers import TINY

    defaults = {**TINY, "data": {"source": "digits", "val_size": 100, "limit_test": 60}}
    path = write_study(
        {
            "study": "sizes",
            "defaults": defaults,
            "grid": {"data.train_fraction": [0.1, 0.4, 1.0], "model.head.hidden": [0, 32]},
            "baseline": False,
            "seeds": [0, 1],
        }
    )
    results, out = tmp_path / "results", tmp_path / "reports"
    assert main(["run", str(path), "--results", str(results)]) == 0
    points = data_size_points(load_runs(results, "sizes"))
    assert sorted(set(points.n_train)) == [125, 499, 1247]  # of the 1,247 left after validation
    assert sorted(set(points.recipe)) == ["hidden=0", "hidden=32"] and len(points) == 12
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    assert (out / "sizes" / "figures" / "data_size.png").stat().st_size > 0
    page = (out / "sizes" / "report.md").read_text()
    assert "## Accuracy against training images" in page and "each inside the next" in page


def test_listing_a_study_never_downloads_a_missing_set(write_study, tmp_path, monkeypatch, capsys):
    from bench.cli import main

    def no_download(cfg, split, download):
        raise AssertionError(f"bench list tried to read or download {cfg.source}")

    monkeypatch.setattr(official, "reader", no_download)
    defaults = {"data": {"source": "dtd", "path": str(tmp_path / "nothing"), "image_size": 32}}
    path = write_study({"study": "textures", "defaults": {**defaults, "model": {"weights": "none"}}})
    assert main(["list", str(path)]) == 0
    out = capsys.readouterr()
    assert "official DTD not found under" in out.out + out.err and "bench run` downloads it" in out.out + out.err
