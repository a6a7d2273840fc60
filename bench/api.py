"""bench from Python (a notebook, a script): run a study, read its runs and effects back as pandas
DataFrames, write its report. Failures raise exceptions (ConfigError, DataError, WeightsError,
ReportError, ...), never exit codes, and no signal handler is installed. The `bench` command calls
the same functions. Heavy libraries are imported inside the functions, so `import bench` stays light.

    import bench
    runs = bench.run("studies/demo.yaml", set={"train.epochs": 1}, results="results")
    bench.effects("results", "demo")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EFFECT_COLUMNS = (
    "variant",
    "baseline",
    "seeds",  # seeds paired with the baseline's
    "acc",  # mean test accuracy over the paired seeds (a fraction, like test_accuracy in bench.runs)
    "baseline_acc",
    "delta",  # acc - baseline_acc
    "ci_low",  # the interval of delta at stats.CONFIDENCE
    "ci_high",
    "p",  # two-sided paired t over seeds; NaN with one seed
    "p_holm",  # Holm-adjusted over the table's seed-level comparisons
    "significant",  # Holm-adjusted p < 0.05 (never on one seed)
    "seed_level",  # False with one seed: the interval covers test-set noise only
    "note",  # why a variant has no numbers: not finished, no common seed, other test images
)


class UsageError(ValueError):
    """An argument that cannot work (the study file itself is fine)."""


def pick_device(name: str = "auto"):
    """torch.device for 'auto' (CUDA where torch sees it), 'cpu', 'cuda' or 'cuda:N'."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}, but torch sees no CUDA device; use --device cpu (in Python: device='cpu')")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise UsageError(f"--device {name}, but torch sees {n} GPU(s): cuda:0..cuda:{n - 1}")
    return device


def run(
    study: str | Path,
    *,
    only: str | list[str] | None = None,
    set: dict[str, Any] | None = None,
    results: str | Path = "results",
    device: str = "auto",
    retry_failed: bool = False,
    rerun_stale: bool = False,
    mlflow: str | None = None,
    tensorboard: str | Path | None = None,
    wandb: bool = False,
    progress: bool = True,
):
    """Train and evaluate every selected variant not done yet (as `bench run`); the runs as a DataFrame.

    only: glob(s) of variant names; set: {dotted key: value} for every variant, e.g. {"train.epochs": 1}.
    A run that fails is a row with state 'failed' and its error in 'detail'; the others still run.
    """
    from bench.infra.launch import InProcess
    from bench.study import load_study_file, select

    spec = load_study_file(study, dict(set or {}), given_by="set=")
    variants = select(spec, [only] if isinstance(only, str) else list(only or []))
    store = _writable_store(results, spec.name)
    how = InProcess(pick_device(device))
    logs = _trackers(spec, mlflow, tensorboard, wandb)
    command = f"bench.run({str(study)!r}" + "".join(
        f", {k}={v!r}" for k, v in (("only", only), ("set", set)) if v
    )  # recorded in the study's manifest, as `bench run` records its command line
    trained = train(spec, variants, store, how, logs, retry_failed, rerun_stale, command + ")", progress)
    return _rows(runs(results, spec.name), [(spec.label(r.variant), r.variant.seed) for r in trained])


def train(study, variants, store, how, logs, retry_failed: bool, rerun_stale: bool, command: str, progress=True):
    """Drive the runs with the progress display, copying each finished run to the trackers `logs`."""
    from bench import console
    from bench.cost import estimate_tflops
    from bench.infra.runner import Hooks, drive

    with console.progress(disable=not progress) as bars:
        display = console.RunDisplay(bars, study.name, store.run_dir, estimate_tflops)
        hooks = display.hooks() if progress else Hooks()
        shown = hooks.run_ended

        def ended(r):  # a finished run is copied to the trackers from its record, off the training path
            shown(r)
            if r.state == "done":
                for t in logs:
                    t.log_run(store, study.label(r.variant), r.variant.seed, r.variant.run_id)

        hooks.run_ended = ended
        results = drive(
            study,
            variants,
            store,
            how,
            hooks=hooks,
            retry_failed=retry_failed,
            rerun_stale=rerun_stale,
            command=command,
        )
        display.close()
    return results


def runs(results: str | Path = "results", study: str | None = None):
    """Every run of the store's studies (or of one) as a DataFrame: a row per (study, variant, seed) with
    its state, flattened config (`config.*`), test metrics, timing and provenance."""
    from bench.report.export import runs_table

    return runs_table(Path(results), study)


def effects(results: str | Path = "results", study: str | None = None, baseline: str | None = None):
    """The ablation effects against the baseline as numbers (the report's effects table): one row per
    other variant with delta, its interval, p and Holm-adjusted p over seed-paired runs (EFFECT_COLUMNS)."""
    import pandas as pd

    from bench.report import ReportError, load_runs
    from bench.report.describe import default_baseline
    from bench.report.tables import effects as compute

    root = Path(results)
    study = study or _only_study(root)
    runs_of = load_runs(root, study)
    baseline = baseline or default_baseline(runs_of)
    if baseline not in runs_of.variants:
        raise ReportError(
            f"no variant '{baseline}' in study '{study}' to measure effects against; its variants are: "
            f"{', '.join(runs_of.variants)} (pass baseline=NAME)"
        )
    if not runs_of.done(baseline):
        raise ReportError(f"baseline '{baseline}' of study '{study}' has no finished run; run it first")
    rows = []
    for e in compute(runs_of, baseline):
        c = e.comparison
        numbers = {"seeds": 0, "significant": False}
        if c:
            numbers = {"seeds": c.n_seeds, "acc": c.acc_a, "baseline_acc": c.acc_b, "delta": c.diff}
            numbers |= {"ci_low": c.ci_low, "ci_high": c.ci_high, "p": c.p_value, "p_holm": e.p_holm}
            numbers |= {"significant": c.significant(p_adjusted=e.p_holm), "seed_level": c.seed_level}
        rows.append({"variant": e.variant, "baseline": baseline, **numbers, "note": e.note})
    return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS)).astype({"p": float, "p_holm": float})


def report(*args, **kwargs) -> list[Path]:
    """Write the report of one study or every study (bench.report.build.write_reports): the files written."""
    from bench.report.build import write_reports

    return write_reports(*args, **kwargs)


def _writable_store(results, study_name: str):
    from bench.infra.files import cache_root, check_writable
    from bench.infra.store import Store

    store = Store(Path(results))
    check_writable(store.root / "studies", f"{study_name}.json", "the results store (results=)")
    check_writable(cache_root(), "fingerprints.json", "the cache ($BENCH_CACHE)")
    return store


def _trackers(spec, mlflow, tensorboard, wandb: bool) -> list:
    from bench.infra.trackers import trackers

    return trackers(spec.name, mlflow or spec.trackers.mlflow, tensorboard or spec.trackers.tensorboard, wandb)


def _only_study(root: Path) -> str:
    from bench.infra.store import Store
    from bench.report import ReportError

    names = Store(root).study_names()
    if not names:
        raise ReportError(f"no studies in {root / 'studies'}: run bench.run(STUDY.yaml, results=...) there first")
    if len(names) > 1:
        raise ReportError(f"{len(names)} studies in {root / 'studies'} ({', '.join(names)}); name one")
    return names[0]


def _rows(table, keys: list[tuple[str, int]]):
    """The store's rows of these (variant label, seed), in their order."""
    if table.empty:
        return table
    table = table.set_index(["variant", "seed"], drop=False)
    return table.loc[[k for k in keys if k in table.index]].reset_index(drop=True)
