"""The Python API as a notebook user meets it: docs/notebook.md's snippet run as written on the offline
demo, its DataFrames checked against the store; errors raised, not returned; the caller's signals kept."""

from __future__ import annotations

import math
import re
import signal
from pathlib import Path

import pandas as pd
import pytest

import bench
from bench.config import ConfigError
from bench.infra.store import Store
from bench.report import ReportError
from bench.study import load_study_file

ROOT = Path(__file__).resolve().parents[1]
QUICK = " [train.epochs=1, data.limit_train=300]"  # the label the snippet's set= gives its variants
RUNS = [(v.name, v.seed) for v in load_study_file(ROOT / "studies" / "demo.yaml").variants]  # a row per seed
DEMO = list(dict.fromkeys(name for name, _ in RUNS))


def snippet() -> str:
    """The one ```python block of docs/notebook.md: the code the page says a test runs as it stands."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "notebook.md").read_text(), re.S)
    assert len(blocks) == 1, "docs/notebook.md should hold exactly one ```python block (the tested one)"
    return blocks[0]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The snippet's variables after running it with RESULTS and REPORTS in a fresh folder."""
    folder = tmp_path_factory.mktemp("notebook")
    on_term = signal.getsignal(signal.SIGTERM)
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # the snippet names studies/demo.yaml, as from a clone's root
    try:
        scope = {"RESULTS": str(folder / "results"), "REPORTS": str(folder / "reports")}
        exec(compile(snippet(), "docs/notebook.md", "exec"), scope)
    finally:
        mp.undo()
    scope["sigterm_after"], scope["sigterm_before"] = signal.getsignal(signal.SIGTERM), on_term
    return scope


@pytest.mark.slow
def test_the_notebook_snippet_returns_the_runs_as_dataframes(notebook):
    runs, store = notebook["runs"], Store(notebook["RESULTS"])
    assert isinstance(runs, pd.DataFrame)
    assert list(zip(runs.variant, runs.seed)) == [(v + QUICK, seed) for v, seed in RUNS] and DEMO[0] == "baseline"
    assert set(runs.state) == {"done"} and set(runs["config.train.epochs"]) == {1} and set(runs.n_train) == {300}
    for row in runs.itertuples():
        assert row.test_accuracy == pytest.approx(store.read_metrics(row.run_id).test.accuracy)
    everything = notebook["everything"]
    assert sorted(everything.run_id) == sorted(runs.run_id)  # one study in this store
    assert notebook["sigterm_after"] is notebook["sigterm_before"]  # no handler left in the caller


@pytest.mark.slow
def test_the_effects_are_numbers_that_agree_with_the_runs(notebook):
    runs = notebook["runs"]
    effects, runs = notebook["effects"], runs[runs.seed == 0].set_index("variant")  # the seed the baseline has
    assert list(effects.variant) == [v + QUICK for v in DEMO[1:]]
    assert set(effects.baseline) == {"baseline" + QUICK}
    base = runs.loc["baseline" + QUICK, "test_accuracy"]
    for e in effects.itertuples():
        assert e.seeds == 1 and not e.seed_level and not e.significant  # the demo's baseline has one seed
        assert e.acc == pytest.approx(runs.loc[e.variant, "test_accuracy"]) and e.baseline_acc == pytest.approx(base)
        assert e.delta == pytest.approx(e.acc - e.baseline_acc)
        assert e.ci_low < e.delta < e.ci_high and math.isnan(e.p) and math.isnan(e.p_holm)
    assert effects[["delta", "ci_low", "ci_high", "acc"]].dtypes.map(pd.api.types.is_float_dtype).all()


@pytest.mark.slow
def test_the_report_files_exist_and_a_second_run_trains_nothing(notebook):
    files = notebook["files"]
    assert any(f.name == "report.md" for f in files) and all(f.is_file() for f in files)
    assert any(f.suffix == ".png" for f in files) and any(f.name == "effects.md" for f in files)
    quick = {"train.epochs": 1, "data.limit_train": 300}
    again = bench.run(ROOT / "studies/demo.yaml", set=quick, results=notebook["RESULTS"], progress=False)
    assert list(again.run_id) == list(notebook["runs"].run_id)  # resumed from the store: the same runs


def test_errors_are_exceptions_with_the_fix_in_them(tmp_path, write_study):
    with pytest.raises(ConfigError, match="train.epoch"):
        bench.run(ROOT / "studies/demo.yaml", set={"train.epoch": 1}, results=tmp_path / "r")
    with pytest.raises(ConfigError, match="matches no variant"):
        bench.run(ROOT / "studies/demo.yaml", only="no-such-variant*", results=tmp_path / "r")
    with pytest.raises(ReportError, match="no studies|0 studies"):
        bench.effects(tmp_path / "empty")
    with pytest.raises(ReportError, match="pdf"):
        bench.report(tmp_path / "r", formats=("md", "pdf"))


def test_bench_report_is_the_package_and_the_function():
    import bench.report.build

    assert callable(bench.report) and bench.report.build.report is not None
