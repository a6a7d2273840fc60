"""The official data sets bench reads (bench.data.official): what each is, where its files come from, its
splits and sizes. Plain data with no imports from bench, so the configuration can check a data.source
against it while bench is still being imported."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Official:
    title: str
    reader: str  # the torchvision.datasets class
    folder: str  # what the reader expects under the root
    url: str  # where the files come from
    splits: tuple[str, str | None, str]  # the reader's split names for train, val (None: carved), test
    sizes: tuple[int, int | None, int]  # images in those splits
    size: int | None  # their side in pixels; None: every image its own size (data.image_size needed)
    verified: bool  # the reader checks every file against published md5s

    @property
    def images(self) -> int:
        return sum(n for n in self.sizes if n)

    @property
    def official_val(self) -> bool:
        return self.splits[1] is not None


# fmt: off
OFFICIAL = {
    "cifar10": Official("CIFAR-10", "CIFAR10", "cifar-10-batches-py",
                        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        ("train", None, "test"), (50_000, None, 10_000), 32, True),
    "cifar100": Official("CIFAR-100", "CIFAR100", "cifar-100-python",
                         "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                         ("train", None, "test"), (50_000, None, 10_000), 32, True),
    "svhn": Official("SVHN", "SVHN", "train_32x32.mat and test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/",
                     ("train", None, "test"), (73_257, None, 26_032), 32, True),
    "stl10": Official("STL-10", "STL10", "stl10_binary", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                      ("train", None, "test"), (5_000, None, 8_000), 96, True),
    "flowers102": Official("Oxford Flowers-102", "Flowers102", "flowers-102",
                           "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
                           ("train", "val", "test"), (1_020, 1_020, 6_149), None, False),
    "pets": Official("Oxford-IIIT Pets", "OxfordIIITPet", "oxford-iiit-pet", "https://www.robots.ox.ac.uk/~vgg/data/pets/",
                     ("trainval", None, "test"), (3_680, None, 3_669), None, False),
    "dtd": Official("DTD", "DTD", "dtd/dtd", "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
                    ("train", "val", "test"), (1_880, 1_880, 1_880), None, False),
}
# fmt: on
