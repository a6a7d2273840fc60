"""bench/references.yaml against the paper's tables, and against itself."""

import re
from pathlib import Path

import pytest
import yaml

from bench.report.describe import references

ROOT = Path(__file__).resolve().parents[1]

# He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 / arXiv:1512.03385v1,
# transcribed here independently of the data file. Error rates in percent.
TABLE_2 = {"ResNet-18": 27.88, "ResNet-34": 25.03}  # top-1 only; option A (identity) shortcuts
TABLE_3 = {
    "ResNet-34 B": (24.52, 7.46),
    "ResNet-50": (22.85, 6.71),
    "ResNet-101": (21.75, 6.05),
    "ResNet-152": (21.43, 5.71),
}
TABLE_4 = {
    "ResNet-34 B": (21.84, 5.71),
    "ResNet-50": (20.74, 5.25),
    "ResNet-101": (19.87, 4.60),
    "ResNet-152": (19.38, 4.49),
}
TABLE_6 = {
    "ResNet-20": (20, 0.27, 8.75),
    "ResNet-32": (32, 0.46, 7.51),
    "ResNet-44": (44, 0.66, 7.17),
    "ResNet-56": (56, 0.85, 6.97),
    "ResNet-110": (110, 1.7, 6.43),
    "ResNet-1202": (1202, 19.4, 7.93),
}
# Proceedings pages, as read (2026-11-26) in a page-split copy of the CVPR Open Access PDF (see the
# data file's header): Table 2 on the fifth page (774), Tables 3-5 on the sixth (775), Table 6 on the
# seventh (776, not 777).
# Page 778 holds only the references.
CVPR_PAGES = {2: 774, 3: 775, 4: 775, 6: 776}


@pytest.fixture(scope="module")
def refs():
    return references()


def rows(refs, table):
    return {r["model"]: r for r in refs["he2016"]["tables"][table]["rows"]}


def test_imagenet_tables_match_the_paper(refs):
    assert {m: r["top1_error"] for m, r in rows(refs, "imagenet_depth").items()} == TABLE_2
    for name, transcribed, number in (("imagenet_10crop", TABLE_3, 3), ("imagenet_single_model", TABLE_4, 4)):
        t = refs["he2016"]["tables"][name]
        assert t["table"] == number
        assert {m: (r["top1_error"], r["top5_error"]) for m, r in rows(refs, name).items()} == transcribed


def test_cifar10_table_matches_the_paper(refs):
    t = refs["he2016"]["tables"]["cifar10"]
    assert t["table"] == 6
    assert {m: (r["layers"], r["params_m"], r["error"]) for m, r in rows(refs, "cifar10").items()} == TABLE_6
    r110 = rows(refs, "cifar10")["ResNet-110"]
    assert (r110["error_mean"], r110["error_std"], r110["runs"]) == (6.61, 0.16, 5)  # "best (mean±std)" of 5


def test_paper_figures_are_consistent(refs):
    paper = refs["he2016"]
    first, last = paper["pages"]
    assert (first, last) == (770, 778)
    pages = [t["page"] for t in sorted(paper["tables"].values(), key=lambda t: t["table"])]
    assert all(first <= p < last for p in pages) and pages == sorted(pages)  # p. 778: references only
    for t in paper["tables"].values():
        assert t["page"] == t["arxiv_page"] + 769  # the arXiv v1 -> proceedings mapping, confirmed for these
        assert isinstance(t["page_verified"], bool)
    for model, ten_crop in rows(refs, "imagenet_10crop").items():
        single = rows(refs, "imagenet_single_model")[model]
        assert ten_crop["top5_error"] < ten_crop["top1_error"]
        assert single["top1_error"] < ten_crop["top1_error"]  # multi-scale beats 10-crop for every depth
    cifar = list(rows(refs, "cifar10").values())
    assert all((r["layers"] - 2) % 6 == 0 for r in cifar)  # CIFAR ResNets have 6n+2 layers
    assert [r["params_m"] for r in cifar] == sorted(r["params_m"] for r in cifar)
    r110 = rows(refs, "cifar10")["ResNet-110"]
    assert r110["error"] <= r110["error_mean"]  # the best run is no worse than the mean


def test_paper_pages_are_the_verified_proceedings_pages(refs):
    tables = refs["he2016"]["tables"].values()
    assert {t["table"] for t in tables} == set(CVPR_PAGES)
    for t in tables:
        assert t["page"] == CVPR_PAGES[t["table"]], f"Table {t['table']}"
        assert t["page_verified"] is True  # and it says what it was checked against, and when
        assert "CVPR" in t["checked_against"] and "numbers_checked_against" in t
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", t["checked_on"])


def test_lab_report_figures_are_ranges(refs):
    lab = refs["lab_report"]
    assert lab["accuracy"] == {"train": [80, 85], "val": [75, 82], "test": [78, 85]}
    for low, high in lab["accuracy"].values():
        assert 0 <= low < high <= 100
    assert "5 epochs" in lab["recipe"] and "Adam" in lab["recipe"] and "frozen" in lab["recipe"]


def test_the_data_file_ships_with_the_package_and_numbers_live_only_there(refs):
    assert refs == yaml.safe_load((ROOT / "bench" / "references.yaml").read_text())
    assert re.search(r'"\*\.yaml"', (ROOT / "pyproject.toml").read_text())  # package data
    code = "".join(p.read_text() for p in (ROOT / "bench").glob("*.py"))
    for value in ("22.85", "20.74", "8.75", "6.43", "7.93"):
        assert value not in code, f"reference figure {value} is hard-coded; it belongs in references.yaml"
