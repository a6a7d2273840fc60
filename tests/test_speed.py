import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.speed import check_targets, run_speed
from bench.study import Target, load_study_file
from tests.helpers import TINY


@pytest.mark.slow  # a dozen fits: each variant, its twins and its full path
def test_speed_table_has_every_figure_for_frozen_and_trainable_variants(write_study):
    path = write_study({"study": "speed", "defaults": TINY, "ablate": {"model.freeze": ["none", "stem-layer3"]}})
    started = time.perf_counter()
    table = run_speed(load_study_file(path).variants, torch.device("cpu"))  # as `bench speed` passes them
    elapsed = time.perf_counter() - started
    frozen, tuned, layer4 = table.iloc[0], table.iloc[1], table.iloc[2]
    assert (frozen.feature_cache, tuned.feature_cache, layer4.feature_cache) == ("computed", "off", "prefix computed")
    assert layer4.full_path_s > 0 and layer4.full_s_per_epoch > 0 and pd.isna(layer4.uncached_s)
    for col in ("wall_s", "cached_again_s", "uncached_s", "forward_pass_s", "train_img_s", "eval_img_s", "peak_rss_mb"):
        assert frozen[col] > 0, col
    assert 0 <= frozen.rss_growth_pct < 100
    assert tuned.model_only_train_img_s > 0 and pd.isna(tuned.uncached_s)
    # the timings are wall clock, one after another: together within the time the whole table took (a clock
    # outside bench's), and each run's epochs within that run's own wall time
    timings = ["wall_s", "cached_again_s", "uncached_s", "forward_pass_s", "full_path_s"]
    assert table[timings].sum().sum() <= elapsed
    assert (table.s_per_epoch * table.epochs <= table.wall_s).all()


def test_targets_are_judged_on_the_rows_they_apply_to():
    table = pd.DataFrame(
        [
            {"freeze": "backbone", "uncached_over_cached": 5.0, "cached_over_forward": 1.3, "rss_growth_pct": 7.0},
            {"freeze": "stem-layer3", "prefix_speedup_per_epoch": 2.5},
            {"freeze": "stem-layer2", "prefix_speedup_per_epoch": 1.5},
        ]
    )
    targets = [
        Target(column="uncached_over_cached", op=">=", bound=4.0, what="a"),
        Target(column="cached_over_forward", op="<=", bound=1.2, what="b"),
        Target(column="rss_growth_pct", op="<", bound=7.0, what="c"),  # equal to the bound: not below it
        Target(column="second_over_first", op="<", bound=0.05, what="d"),  # not measured: not judged
        Target(column="prefix_speedup_per_epoch", op=">=", bound=2.0, what="e", where={"freeze": "stem-layer3"}),
        Target(column="prefix_speedup_per_epoch", op=">=", bound=2.0, what="f"),  # every row: 1.5 fails it
    ]
    judged = check_targets(table, targets)
    assert [(what, ok) for what, _, ok in judged] == [
        ("a", True),
        ("b", False),
        ("c", False),
        ("e", True),
        ("f", False),
    ]
    assert judged[1][1] == "1.3" and judged[3][1] == "2.5"  # the measured values are reported beside the verdict


def test_a_measured_value_never_prints_as_the_bound_it_missed():
    """1.2985 against '>= 1.3' is a miss and must not read '1.3 | NO'; values away from the bound keep 3 digits."""
    table = pd.DataFrame([{"x": 1740 / 1340, "y": 1.2996, "z": 1.3, "w": 1.14}])
    targets = [Target(column=c, op=">=", bound=1.3, what=c) for c in ("x", "y", "z", "w")]
    assert check_targets(table, targets) == [
        ("x", "1.299", False),
        ("y", "1.2996", False),
        ("z", "1.3", True),
        ("w", "1.14", False),
    ]


def test_the_speed_studies_carry_their_targets():
    study = load_study_file(Path(__file__).resolve().parents[1] / "studies" / "speed-prefix-cpu.yaml")
    (target,) = study.targets
    assert (target.column, target.op, target.bound, target.where) == (
        "prefix_speedup_per_epoch",
        ">=",
        2.0,
        {"freeze": "stem-layer3"},
    )


def test_bench_speed_writes_its_table(write_study, tmp_path):
    from bench.cli import main

    path = write_study({"study": "speed", "defaults": {**TINY, "train": {**TINY["train"], "epochs": 1}}})
    assert main(["speed", str(path), "--out", str(tmp_path / "speed")]) == 0
    table = pd.read_csv(tmp_path / "speed" / "speed.csv")
    assert list(table.variant) == ["baseline"] and table.uncached_over_cached.iloc[0] > 0
    page = (tmp_path / "speed" / "speed.md").read_text()
    assert "| target | measured | met |" in page
    assert "Weights: random init (no pretraining). Data: sklearn digits." in page  # what made the figures
    assert "](speed.png)" in page and (tmp_path / "speed" / "speed.png").stat().st_size > 0


def test_speed_pages_show_figures_a_reader_takes_in_at_a_glance():
    from bench.speed import markdown

    table = pd.DataFrame(
        {
            "variant": ["a", "b"],
            "ms": [1600.4, 0.0123456],
            "ratio": [np.nan, 4.0213],
            "n": [300, 12000],
            "ok": [True, False],
        }
    )
    rows = markdown(table).splitlines()
    assert [c.strip() for c in rows[2].split("|")[1:-1]] == ["a", "1,600", "", "300", "True"]
    assert [c[0] + c[-1] for c in rows[1].split("|")[1:-1]] == [":-", "-:", "-:", "-:", ":-"]  # numbers right
    assert "e+" not in markdown(table) and "nan" not in markdown(table) and "0.0123" in rows[3] and "12,000" in rows[3]
    turned = markdown(table, turned_by="variant").splitlines()  # one column per variant, one row per measure
    assert [c.strip() for c in turned[0].split("|")[1:-1]] == ["", "a", "b"]
    assert [c.strip() for c in turned[2].split("|")[1:-1]] == ["ms", "1,600", "0.0123"]
    assert [c.strip() for c in turned[3].split("|")[1:-1]] == ["ratio", "", "4.02"]


def test_a_cell_a_target_judges_reads_as_the_targets_row_prints_it():
    """A speed-up of 1.1496 that missed >= 1.15 printed '1.15' in the tables above the target's 'NO': a cell a
    target bounds is printed with the digits it takes not to read as that bound, in plain and turned tables; a
    cell of the same column the target does not judge, and every other cell, keep three digits."""
    from bench.speed import markdown
    from bench.study import Target

    table = pd.DataFrame({"variant": ["a", "b"], "gain": [1.1496, 1.1496], "ms": [1.1496, 2.0]})
    targets = [Target(column="gain", where={"variant": "a"}, op=">=", bound=1.15, what="a's gain")]
    rows = markdown(table, targets=targets).splitlines()
    assert [c.strip() for c in rows[2].split("|")[1:-1]] == ["a", "1.1496", "1.15"]
    assert [c.strip() for c in rows[3].split("|")[1:-1]] == ["b", "1.15", "2"]
    turned = markdown(table, turned_by="variant", targets=targets).splitlines()
    assert [c.strip() for c in turned[2].split("|")[1:-1]] == ["gain", "1.1496", "1.15"]
    assert markdown(table) == markdown(table, targets=[])  # no target, no change


def test_bench_speed_writes_each_row_as_its_variant_ends(write_study, tmp_path, monkeypatch):
    from bench import speed
    from bench.cli import main

    def fake(v, datasets, cache, device, progress=None, peak=None):  # the second variant fails, as a time limit would
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


@pytest.mark.slow  # two small networks, each pass timed in every choice
def test_bench_speed_kernels_times_every_choice_and_marks_what_a_run_picks(write_study, tmp_path, monkeypatch):
    from bench.cli import main
    from bench.kernels import REPEATS
    from bench.training import layout

    # the layout a run would take, as its small-batch timing says (here: set by the test, per resolution)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    big = 48
    picks = {16: {"contiguous": 1.0, "channels_last": 2.0}, big: {"contiguous": 2.0, "channels_last": 1.0}}
    monkeypatch.setattr(layout, "measure", lambda net, batch, r, device, dtype, what: picks[r])
    from bench import speed

    drawn, draw = {}, speed.kernels_figure

    def kernels_figure(*args):  # what the page's figure is drawn with
        drawn["gains"] = args[4]
        return draw(*args)

    monkeypatch.setattr(speed, "kernels_figure", kernels_figure)
    model = {**TINY["model"], "arch": "resnet18", "freeze": "none"}
    study = {
        "study": "kernels",
        "defaults": {**TINY, "model": model},
        "baseline": False,
        "variants": [
            {"name": "small", "set": {"input.resolution": 16}},
            {"name": "big", "set": {"input.resolution": big}},
        ],
        "targets": [{"column": "picked_over_fastest", "op": ">=", "bound": 0.0, "what": "always met"}],
    }
    started = time.perf_counter()
    assert main(["speed", str(write_study(study)), "--kernels", "--out", str(tmp_path / "k")]) == 0
    elapsed = time.perf_counter() - started
    table = pd.read_csv(tmp_path / "k" / "kernels.csv")
    assert table.groupby(["variant", "pass"]).picked.sum().eq(1).all()  # one choice picked per pass
    picked = table[table.picked].set_index(["variant", "pass"]).choice
    folded = ", BatchNorm folded"  # a frozen pass runs folded: the picked forward row is the folded one
    assert picked["small", "forward"] == "contiguous" + folded and picked["big", "forward"] == "channels_last" + folded
    assert set(table[table["pass"] == "forward"].choice) == {
        f"{f}{x}" for f in ("contiguous", "channels_last") for x in ("", folded)
    }
    assert (
        picked["small", "train step"] == "contiguous, fused" and picked["big", "train step"] == "channels_last, fused"
    )
    assert set(table[table["pass"] == "adam step"].choice) == {"for-loop", "foreach", "fused"}
    calls = 1 + REPEATS  # at least: a warm-up call and REPEATS samples of one call or more, timed outside bench
    assert (table.ms > 0).all() and (table.ms * calls / 1000).sum() <= elapsed
    md = (tmp_path / "k" / "kernels.md").read_text()
    assert "float32 matmul" in md and "| always met |" in md and "picked_over_default" in md
    assert "Weights: random init (no pretraining). Synthetic tensors (no data read)" in md
    assert "](kernels.png)" in md and (tmp_path / "k" / "kernels.png").stat().st_size > 0
    # each heading's gain is the speed-ups table's pick over torch's default for that variant and pass
    ups = pd.read_csv(tmp_path / "k" / "kernels.csv").groupby(["variant", "pass"], sort=False).size()
    assert set(drawn["gains"]) == set(ups.index) and all(g.startswith("the pick ") for g in drawn["gains"].values())


def _bars(ax) -> list[tuple[str, float]]:
    return [(p.get_gid(), p.get_x() + p.get_width()) for p in ax.patches]  # where each bar ends


def test_the_kernels_figure_draws_the_table_it_is_drawn_from():
    from bench.report.speed_plots import kernels_figure

    rows = [
        ("a", "forward", "contiguous", 100.0, 50.0, False),
        ("a", "forward", "channels_last", 80.0, 62.5, True),
        ("a", "train step", "contiguous, for-loop", 300.0, 40.0, False),
        ("a", "train step", "channels_last, fused", 250.0, 48.0, True),
        ("a", "adam step", "for-loop", 40.0, np.nan, False),
        ("a", "adam step", "fused", 8.0, np.nan, True),
    ]
    table = pd.DataFrame(rows, columns=["variant", "pass", "choice", "ms", "pct_of_matmul", "picked"])
    table = table.assign(img_s=32000 / table.ms, gflop_s=table.pct_of_matmul * 2)
    gains = {("a", "forward"): "the pick 1.25x torch's default"}  # the writer's words (speed.gain_words)
    fig = kernels_figure(table, "CPU (test)", 200.0, "Weights: random init (no pretraining).", gains)
    passes, steps = fig.axes
    # one bar per row, as long as the table says, the picked one marked; the optimizer steps on their own axis
    assert _bars(passes) == [("other", 50.0), ("picked", 62.5), ("other", 40.0), ("picked", 48.0)]
    assert _bars(steps) == [("other", 40.0), ("picked", 8.0)]
    assert [t.get_text() for t in passes.texts if t.get_gid() == "heading"] == [
        "a · forward: the pick 1.25x torch's default",
        "a · train step",
    ]
    assert [t.get_text() for t in passes.get_yticklabels()] == ["contiguous", "channels_last"] + [
        "contiguous, for-loop",
        "channels_last, fused",
    ]
    assert [line.get_xdata()[0] for line in passes.lines] == [100]  # the matmul's own throughput
    assert "Weights: random init" in fig.get_suptitle() and "200 GFLOP/s" in passes.get_xlabel()


def test_a_headings_gain_reads_as_its_target_judges_it():
    """A pick 1.147x torch's default that missed a target of >= 1.15x must not read '1.15x' in the figure: where
    a target bounds the speed-up, the heading prints it as the target's row does, and says met or missed."""
    from bench.speed import gain_words
    from bench.study import Target

    ups = pd.DataFrame(
        [("r64", "train step", 1.14704), ("r224", "forward", 1.55994), ("r64", "forward", 1.06792)],
        columns=["variant", "pass", "picked_over_default"],
    )
    targets = [
        Target(
            column="picked_over_default", where={"variant": "r64", "pass": "train step"}, op=">=", bound=1.15, what="x"
        ),
        Target(
            column="picked_over_default", where={"variant": "r224", "pass": "forward"}, op=">=", bound=1.3, what="y"
        ),
        Target(column="picked_over_fastest", op=">=", bound=0.95, what="every pass"),  # not the heading's number
    ]
    assert gain_words(ups, targets) == {
        ("r64", "train step"): "the pick 1.147x torch's default (target ≥ 1.15x: missed)",
        ("r224", "forward"): "the pick 1.56x torch's default (target ≥ 1.3x: met)",
        ("r64", "forward"): "the pick 1.07x torch's default",
    }


def test_the_cache_figure_shows_frozen_variants_only():
    from bench.report.speed_plots import cache_figure

    frozen = {"variant": "lab", "resolution": 224, "uncached_s": 137.0, "wall_s": 32.4, "uncached_over_cached": 4.2413}
    tuned = {"variant": "tuned", "resolution": 224, "uncached_s": np.nan, "wall_s": 70.0}
    fig = cache_figure(pd.DataFrame([{**frozen, "forward_pass_s": 31.3}, tuned]), "CPU (test)", "Weights: x.")
    (ax,) = fig.axes
    assert _bars(ax) == [("other", 137.0), ("picked", 32.4), ("other", 31.3)]  # what bench does in colour
    assert "32.4 s (4.24x less than the backbone every epoch)" in [t.get_text() for t in ax.texts]  # the table's
    assert cache_figure(pd.DataFrame([tuned]), "CPU (test)", "Weights: x.") is None
    assert cache_figure(pd.DataFrame([{"variant": "prefix", "wall_s": 3.0}]), "CPU (test)", "Weights: x.") is None


def test_the_model_only_rate_counts_every_step_as_the_pipelines_rate_does(write_study, monkeypatch):
    """Images over the total time of the timed steps (timm's benchmark.py, and train_img_s), not a median step:
    one slow step in five must pull the rate down as it pulls the pipeline's down."""
    from bench import speed

    sleeps = iter([0.0] * 2 + [0.01, 0.01, 0.2, 0.01, 0.01])  # two warm-up steps, then five timed ones

    monkeypatch.setattr(speed, "step_call", lambda *a, **k: lambda: time.sleep(next(sleeps)))
    defaults = {**TINY, "model": {**TINY["model"], "freeze": "none"}}
    (v,) = [v for v in load_study_file(write_study({"study": "s", "defaults": defaults})).variants]
    rate = speed.model_only_train_rate(v, torch.device("cpu"), steps=5, warmup=2)
    bs = v.config.train.batch_size
    assert rate <= bs * 5 / 0.24  # every step's time counted; a median step (0.01 s) would say bs / 0.01
    assert next(sleeps, None) is None  # exactly the warm-up and timed steps ran
