from pathlib import Path

import pytest
from pydantic import ValidationError

from bench.config import ConfigError, RunConfig
from bench.infra.identity import Fingerprints, run_id
from bench.study import load_study_file

ROOT = Path(__file__).resolve().parents[1]


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
