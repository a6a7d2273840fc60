"""The study file expanded (bench.study): ablate, grid, hand-written variants and seeds; --set and --only; paths and
$VARIABLES resolved; every shipped study valid; repeated seeds refused."""

from pathlib import Path

import pytest

from bench.cli import main
from bench.config import ConfigError
from bench.infra.identity import Fingerprints, run_id
from bench.study import load_study_file, select
from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[1]


def test_ablate_grid_variants_and_seeds_expand(write_study):
    path = write_study("""
study: s
defaults:
  train: {epochs: 5, lr: 0.001}
ablate:
  model.freeze: [none, stem-layer3]
grid:
  train.schedule: [step, cosine]
  input.augment: [none, flip-crop]
variants:
  - name: long
    set: {train.epochs: 20, train.schedule: cosine}
  - name: costly
    set: {model.freeze: none}
    seeds: [7]
seeds: [0, 1]
""")
    study = load_study_file(path)
    names = list(dict.fromkeys(v.name for v in study.variants))
    assert names == [
        "baseline",
        "freeze=none",
        "freeze=stem-layer3",
        "schedule=step,augment=none",
        "schedule=step,augment=flip-crop",
        "schedule=cosine,augment=none",
        "schedule=cosine,augment=flip-crop",
        "long",
        "costly",
    ]
    assert len(study.variants) == 2 * (len(names) - 1) + 1
    assert [v.seed for v in study.variants if v.name == "costly"] == [7]  # a variant's own seeds
    by = {(v.name, v.seed): v.config for v in study.variants}
    assert by[("baseline", 0)].model.freeze == "backbone"  # library default
    assert by[("freeze=none", 1)].model.freeze == "none" and by[("freeze=none", 1)].seed == 1
    assert by[("freeze=none", 1)].train.epochs == 5  # everything else at the defaults
    c = by[("schedule=cosine,augment=flip-crop", 0)]
    assert (c.train.schedule, c.input.augment) == ("cosine", "flip-crop")
    assert (by[("long", 0)].train.epochs, by[("long", 0)].train.schedule) == (20, "cosine")
    # identity: same config -> same id, any difference (seed included) -> another id
    fp = Fingerprints(data="digits:x", weights="none")
    ids = {(v.name, v.seed): run_id(v.config, fp) for v in study.variants}
    assert ids[("baseline", 0)] == run_id(load_study_file(path).variants[0].config, fp)
    assert len(set(ids.values())) == len(study.variants)


def test_set_overrides_every_variant_and_only_filters(write_study):
    path = write_study({"study": "s", "ablate": {"model.freeze": ["none", "stem-layer2"], "train.lr": [0.01]}})
    study = load_study_file(path, {"train.epochs": 1, "data.limit_train": 2000})
    assert all(v.config.train.epochs == 1 and v.config.data.limit_train == 2000 for v in study.variants)
    assert [v.name for v in select(study, ["freeze=*"])] == ["freeze=none", "freeze=stem-layer2"]
    assert [v.name for v in select(study, ["lr=*", "baseline"])] == ["baseline", "lr=0.01"]
    with pytest.raises(ConfigError, match="matches no variant; variants are: baseline, freeze=none"):
        select(study, ["nothing*"])


def test_relative_paths_resolve_against_the_study_file(write_study, tmp_path):
    path = write_study(
        {
            "study": "s",
            "defaults": {"data": {"source": "folder", "path": "data/jpeg"}, "model": {"weights": "file:w/r50.pth"}},
        }
    )
    cfg = load_study_file(path).variants[0].config
    assert cfg.data.path == str(tmp_path / "data" / "jpeg")
    assert cfg.model.weights == f"file:{tmp_path / 'w' / 'r50.pth'}"


def test_environment_variables_in_paths_expand_and_unset_ones_are_named(write_study, tmp_path, monkeypatch):
    study = {
        "study": "s",
        "defaults": {"data": {"source": "folder", "path": "${BENCH_DATA}/jpeg.tar.gz"}},
        "ablate": {"model.weights": ["file:$WEIGHTS/r50.pth"]},
    }
    path = write_study(study)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_DATA", "data")  # relative: from the current directory, as a shell would take it
    monkeypatch.setenv("WEIGHTS", "/w")
    base, other = load_study_file(path).variants
    assert base.config.data.path == str(tmp_path / "data" / "jpeg.tar.gz")
    assert other.config.model.weights == "file:/w/r50.pth"
    monkeypatch.delenv("BENCH_DATA")
    monkeypatch.delenv("WEIGHTS")
    with pytest.raises(ConfigError) as e:
        load_study_file(path)
    problems = e.value.problems
    assert any(
        "data.path '${BENCH_DATA}/jpeg.tar.gz' uses $BENCH_DATA, which is not set: export BENCH_DATA=DIR" in p
        for p in problems
    )
    assert sum("$BENCH_DATA" in p for p in problems) == 1  # said once for the study, not once per variant
    assert any("model.weights '$WEIGHTS/r50.pth' uses $WEIGHTS" in p for p in problems)


def test_shipped_study_files_are_valid():
    real = load_study_file(ROOT / "ablations.yaml")
    base = next(v.config for v in real.variants if v.name == "baseline")
    # the lab report's recipe
    assert (base.model.weights, base.model.freeze, base.input.resolution, base.input.normalize) == (
        "torchvision:IMAGENET1K_V1",
        "backbone",
        224,
        "unit",
    )
    assert (base.train.optimizer, base.train.lr, base.train.batch_size, base.train.epochs) == ("adam", 0.001, 32, 5)
    assert (base.model.head.hidden, base.data.val_size) == (256, 5000)
    axes = {k for v in real.variants for k in v.overrides}
    assert {
        "model.freeze",
        "input.augment",
        "train.schedule",
        "train.epochs",
        "input.resolution",
        "input.normalize",
        "train.optimizer",
        "model.weights",
    } <= axes
    for f in (ROOT / "studies").glob("*.yaml"):
        assert load_study_file(f).variants


def test_repeated_seeds_are_refused_at_load_time(write_study, capsys):
    path = write_study(
        {"study": "s", "defaults": TINY, "seeds": [0, 0, 1, 1], "variants": [{"name": "x", "seeds": [2, 2]}]}
    )
    assert main(["list", str(path)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "seeds: got [0, 0, 1, 1]; value error, seeds 0, 1 repeated; list each seed once (line" in err
    assert "variants.0.seeds: got [2, 2]; value error, seed 2 repeated" in err


def test_only_picks_a_variant_by_its_exact_name_before_any_glob(write_study, capsys):
    names = ["a[1]", "a1", "b*", "bx", "c?", "cc"]
    path = write_study(
        {"study": "g", "defaults": TINY, "baseline": False, "variants": [{"name": n, "set": {}} for n in names]}
    )
    study = load_study_file(path)
    for pattern, picked in (
        ("a[1]", ["a[1]"]),  # as a glob it would pick a1 only
        ("b*", ["b*"]),
        ("c?", ["c?"]),
        ("a*", ["a[1]", "a1"]),  # not a name: a glob
        ("?x", ["bx"]),
    ):
        assert [v.name for v in select(study, [pattern])] == picked, pattern
    assert main(["list", str(path), "--format", "names"]) == 0
    listed = capsys.readouterr().out.splitlines()
    for name in listed:  # the Slurm recipe: each line of --format names selects itself alone
        assert main(["list", str(path), "--only", name, "--format", "names"]) == 0
        assert capsys.readouterr().out.splitlines() == [name]
