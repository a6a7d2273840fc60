from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.config import ConfigError, RunConfig
from bench.identity import Fingerprints, run_id
from bench.study import load_study_file, select

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


def errors(write_study, text) -> str:
    with pytest.raises(ConfigError) as e:
        load_study_file(write_study(text))
    return str(e.value)


def test_yaml_syntax_error_gives_line_and_column(write_study):
    msg = errors(write_study, "study: s\ndefaults:\n  train: {epochs: 5\n  model: x\n")
    assert "YAML syntax error at line 4, column" in msg


def test_unknown_key_suggests_the_close_match_and_line(write_study):
    msg = errors(write_study, "study: s\ndefaults:\n  train:\n    lerning_rate: 0.1\n    epocs: 3\n")
    assert "defaults.train.epocs: unknown key 'train.epocs' (did you mean 'train.epochs'?) (line 5)" in msg
    assert "train.lerning_rate" in msg  # every problem is reported at once
    msg = errors(write_study, "study: s\nablate:\n  model.freez: [none]\n")
    assert "ablate.model.freez: unknown key 'model.freez' (did you mean 'model.freeze'?) (line 3)" in msg
    msg = errors(write_study, "study: s\nabalte:\n  model.freeze: [none]\n")
    assert "abalte: unknown key (did you mean 'ablate'?)" in msg


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "ablate:\n  train.lr: [0.1, -1]\n",
            "variant 'lr=-1': train.lr: got -1; input should be greater than 0 (line 3)",
        ),
        (
            "defaults:\n  input: {resolution: 0}\n",
            "input.resolution: got 0; input should be greater than or equal to 16",
        ),
        (
            "ablate:\n  model.freeze: [stem-layer5]\n",
            "model.freeze: got 'stem-layer5'; input should be 'backbone', 'stem-layer3'",
        ),
        ("defaults:\n  train: {epochs: five}\n", "train.epochs: got 'five'; input should be a valid integer"),
        ("ablate:\n  train.lr: []\n", "ablate.train.lr: empty list of values"),
        ("baseline: false\n", "the study has no variants"),
        (
            "variants:\n  - {name: a, set: {train.lr: 0.1}}\n  - {name: a, set: {train.lr: 0.2}}\n",
            "duplicate variant name 'a'",
        ),
        (
            "defaults:\n  model: {weights: imagenet}\n",
            "model.weights: got 'imagenet'; value error, expected none, torchvision:IMAGENET1K_V1",
        ),
        (
            "defaults:\n  train: {epochs: 2, warmup_epochs: 2}\n",
            "train.warmup_epochs (2.0) must be less than train.epochs (2)",
        ),
        ("defaults:\n  data: {source: folder}\n", "data.source 'folder' needs data.path"),
    ],
)
def test_impossible_values_name_the_key_and_what_is_allowed(write_study, text, expected):
    assert expected in errors(write_study, "study: s\n" + text)


def test_set_errors_are_attributed_to_the_command_line(write_study):
    path = write_study("study: s\n")
    with pytest.raises(
        ConfigError, match=r"train.batch_size: got 0; input should be greater than or equal to 1 \(from --set\)"
    ):
        load_study_file(path, {"train.batch_size": 0}, given_by="--set")
    with pytest.raises(
        ConfigError, match=r"--set train.epoch: unknown key 'train.epoch' \(did you mean 'train.epochs'\?\)"
    ):
        load_study_file(path, {"train.epoch": 1}, given_by="--set")


def test_run_config_is_frozen_and_hash_is_canonical():
    a, b = RunConfig(), RunConfig.model_validate({"train": {"lr": "1e-3"}})  # --set passes strings through YAML
    fp = Fingerprints(data="cifar10:x", weights="sha256:y")
    assert run_id(a, fp) == run_id(b, fp)
    with pytest.raises(ValidationError):  # frozen: a config cannot change after validation
        a.train.lr = 1.0
