import numpy as np
import pandas as pd
import pytest
import torch

from bench.speed import check_targets, run_speed
from bench.study import load_study_file
from tests.helpers import TINY


def test_speed_table_has_every_figure_for_frozen_and_trainable_variants(write_study):
    path = write_study({"study": "speed", "defaults": TINY, "ablate": {"model.freeze": ["none", "stem-layer3"]}})
    table = run_speed(load_study_file(path).variants, torch.device("cpu"))  # as `bench speed` passes them
    frozen, tuned, layer4 = table.iloc[0], table.iloc[1], table.iloc[2]
    assert (frozen.feature_cache, tuned.feature_cache, layer4.feature_cache) == ("computed", "off", "prefix computed")
    assert layer4.full_path_s > 0 and layer4.full_s_per_epoch > 0 and pd.isna(layer4.uncached_s)
    assert layer4.prefix_speedup_layer4 == layer4.full_s_per_epoch / layer4.s_per_epoch
    for col in ("wall_s", "cached_again_s", "uncached_s", "forward_pass_s", "train_img_s", "eval_img_s", "peak_rss_mb"):
        assert frozen[col] > 0, col
    assert frozen.uncached_over_cached == frozen.uncached_s / frozen.wall_s
    assert 0 <= frozen.rss_growth_pct < 100
    assert tuned.model_only_train_img_s > 0 and pd.isna(tuned.uncached_s)
    assert tuned.pipeline_over_model_only == tuned.train_img_s / tuned.model_only_train_img_s


def test_targets_are_judged_on_the_measured_ratios():
    table = pd.DataFrame(
        [
            {"uncached_over_cached": 5.0, "cached_over_forward": 1.3, "second_over_first": 0.01, "rss_growth_pct": 7.0},
            {"pipeline_over_model_only": 1.02},
        ]
    )
    assert [ok for _, _, ok in check_targets(table)] == [True, False, True, True, False]
    assert check_targets(table)[1][1] == "1.3"  # the measured value is reported beside the verdict


def test_bench_speed_writes_its_table(write_study, tmp_path):
    from bench.cli import main

    path = write_study({"study": "speed", "defaults": {**TINY, "train": {**TINY["train"], "epochs": 1}}})
    assert main(["speed", str(path), "--out", str(tmp_path / "speed")]) == 0
    table = pd.read_csv(tmp_path / "speed" / "speed.csv")
    assert list(table.variant) == ["baseline"] and table.uncached_over_cached.iloc[0] > 0
    assert "| target | measured | met |" in (tmp_path / "speed" / "speed.md").read_text()


def test_bench_speed_writes_each_row_as_its_variant_ends(write_study, tmp_path, monkeypatch):
    from bench import speed
    from bench.cli import main

    def fake(v, datasets, cache, device, progress=None):  # the second variant fails, as a time limit would cut it
        if v.name != "baseline":
            raise RuntimeError("cut short")
        return {"variant": v.name, "wall_s": 1.0}

    monkeypatch.setattr(speed, "speed_of", fake)
    path = write_study({"study": "speed", "defaults": TINY, "ablate": {"train.lr": [0.01]}})
    with pytest.raises(RuntimeError, match="cut short"):
        main(["speed", str(path), "--out", str(tmp_path / "speed")])
    assert list(pd.read_csv(tmp_path / "speed" / "speed.csv").variant) == ["baseline"]


def test_a_compiled_variant_is_timed_on_a_warm_epoch_with_its_compile_time_apart(write_study, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **k: model)  # no C++ compiler needed: eager stands in
    defaults = {**TINY, "model": {**TINY["model"], "freeze": "none"}, "train": {**TINY["train"], "epochs": 1}}
    path = write_study(
        {"study": "speed", "defaults": defaults, "variants": [{"name": "c", "set": {"train.compile": True}}]}
    )
    row = run_speed([v for v in load_study_file(path).variants if v.name == "c"], torch.device("cpu")).iloc[0]
    assert row.epochs == 2  # the first epoch compiles, the second is the one timed
    assert "compile_s" in row and np.isfinite(row.compile_s) and row.train_img_s > 0
