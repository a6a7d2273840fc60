"""One function per `bench` subcommand: load what it needs, call the pipeline, show the result."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bench import console
from bench.api import UsageError, pick_device  # noqa: F401  (UsageError: re-exported for the other commands)

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def load(args):
    from bench.config import ConfigError
    from bench.study import load_study_file, parse_value, select

    overrides = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(args.study, [f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=1"])
        overrides[key.strip()] = parse_value(value)
    if args.limit_train is not None:
        overrides["data.limit_train"] = args.limit_train
    if args.data_dir:
        overrides["data.path"] = str(Path(args.data_dir).expanduser().resolve())
    study = load_study_file(args.study, overrides, given_by="--set")
    try:
        return study, select(study, args.only)
    except ConfigError as e:
        raise ConfigError(e.path, [f"--only {p}" for p in e.problems]) from None


def command_line() -> str:
    return "bench " + " ".join(map(shlex.quote, sys.argv[1:])) if sys.argv[1:] else "bench run"


def list_status(store, study, v, missing: dict[str, str]) -> str:
    """What `bench list` says of a run: done, failed, running, pending, stale (and why), other code."""
    if v.name in missing:  # the reason is printed once below the table
        return "pending (weights not here)" if missing[v.name].startswith("weights") else "pending (data not found)"
    state = store.state(v)
    if state == "done" and unreadable(store, v):  # the reason is printed below the table
        return "damaged (metrics.json)"
    if state == "running" and (gone := store.interrupted(v.run_id)):
        return f"interrupted ({gone}; `bench run` resumes it)"
    if state == "done" and (other := store.other_code(v)):
        return "done, other code (" + ", ".join(f"{k} {a}->{b}" for k, (a, b) in other.items()) + ")"
    if state is None and (why := store.replaced(study, v)):
        return f"stale: {why} (trains anew)"
    return state or "pending"


def differs(v) -> str:
    from bench.util import fmt_value

    return ", ".join(f"{k}={fmt_value(val)}" for k, val in v.overrides.items()) or "(defaults)"


def unreadable(store, v) -> str | None:
    """Why a finished run's metrics.json cannot be read (not JSON, a key missing), or None."""
    from bench.infra.record import RecordError

    try:
        store.read_metrics(v.run_id)
    except (OSError, RecordError) as e:
        return str(e)
    return None


def pace(store, variants) -> tuple[float, int] | None:
    """TFLOP per second of wall time over the variants' finished runs, and how many there are."""
    from bench.cost import estimate_tflops

    done = [v for v in variants if store.state(v) == "done" and not unreadable(store, v)]
    seconds = sum(store.read_metrics(v.run_id).train_seconds for v in done)
    return (sum(estimate_tflops(v.config) for v in done) / seconds, len(done)) if done and seconds > 0 else None


def cmd_list(args) -> int:
    from bench.cost import estimate_tflops
    from bench.infra.identity import resolve
    from bench.infra.store import Store

    study, variants = load(args)
    variants, missing = resolve(variants, strict=False)
    store = Store(args.results)
    rows = [
        {
            "variant": v.name,
            "seed": v.seed,
            "tflop": estimate_tflops(v.config),
            "run_id": "—" if v.fingerprints is None else v.run_id,
            "differs": differs(v),
            "status": list_status(store, study, v, missing),
        }
        for v in variants
    ]
    title = f"{study.name}: {len(variants)} runs ({args.study})"
    console.study_listing(title, rows, args.format, pace(store, [v for v in variants if v.fingerprints]))
    for why in dict.fromkeys(missing.values()):
        console.warning(f"{why}; until then run ids and states cannot be checked (`bench run` says how to get it)")
    for v in variants:
        if v.fingerprints and store.state(v) == "done" and (why := unreadable(store, v)):
            console.warning(f"{v.name} (seed {v.seed}): {why}; `bench report` leaves the run out")
    return EXIT_OK


def executor(args, device):
    from bench.infra import launch

    if args.launcher == "ray":
        return launch.RayTasks(
            args.address, args.gpus_per_run, args.cpus_per_run, args.max_retries, not args.no_feature_cache
        )
    if args.parallel > 1:
        return launch.WorkerPool(device, args.parallel, not args.no_feature_cache)
    return launch.InProcess(device, not args.no_feature_cache)


def cmd_run(args) -> int:
    from bench.data import background

    study, variants = load(args)
    if not args.dry_run:  # the image folders are read in another process while this one imports torch
        background.start([v.config.data for v in variants])
    from bench.api import train
    from bench.infra.files import cache_root, check_writable
    from bench.infra.store import Store
    from bench.infra.trackers import trackers

    device = pick_device(args.device)
    store = Store(args.results)
    check_writable(store.root / "studies", f"{study.name}.json", "the results store (--results)")
    check_writable(cache_root(), "fingerprints.json", "the cache ($BENCH_CACHE)")
    how = executor(args, device)
    console.doing("checking the data and weights", "nothing was trained; run the same command again")

    if args.dry_run:
        return dry_run(study, variants, store, args.retry_failed)
    tracked = (args.mlflow or study.trackers.mlflow, args.tensorboard or study.trackers.tensorboard, args.wandb)
    logs = trackers(study.name, *tracked)
    results = train(study, variants, store, how, logs, args.retry_failed, args.rerun_stale, command_line())
    console.run_summary(results)
    return EXIT_FAILED_RUNS if any(r.state in ("failed", "busy") for r in results) else EXIT_OK


def dry_run(study, variants, store, retry_failed: bool) -> int:
    """`bench run --dry-run`: what would train and what would not, without decoding or training anything."""
    from bench.cost import estimate_tflops
    from bench.infra.identity import resolve
    from bench.infra.runner import pending

    variants, missing = resolve(variants, strict=False)
    todo = {id(v) for v in pending(store, [v for v in variants if v.fingerprints], retry_failed)}
    rows = [
        {
            "variant": v.name,
            "seed": v.seed,
            "tflop": estimate_tflops(v.config),
            "run_id": v.run_id if v.fingerprints else "—",
            "differs": differs(v),
            "status": ("trains: " if id(v) in todo else "skips: ") + list_status(store, study, v, missing),
        }
        for v in variants
    ]
    title = f"{study.name}: {len(todo)} of {len(variants)} runs would train (dry run)"
    console.study_listing(title, rows, "table", pace(store, [v for v in variants if v.fingerprints]))
    for why in dict.fromkeys(missing.values()):
        console.warning(f"{why}: `bench run` stops on it before training anything")
    return EXIT_OK


def cmd_speed(args) -> int:
    from bench.report.describe import made_of
    from bench.speed import run_speed, write_speed_report

    study, variants = load(args)
    made = made_of([v.config for v in variants], data=not args.kernels)
    device = pick_device(args.device)
    console.doing("benchmarking", "nothing was written")
    if args.kernels:
        return speed_kernels(args, study, variants, device, made)
    with console.progress(transient=True) as progress:
        # written after each variant: a run cut short (a time limit, an out-of-memory) keeps the rows it has
        on_row = lambda t: write_speed_report(t, args.out, sys.argv[1:], study.targets, made_of=made)  # noqa: E731
        table = run_speed(variants, device, progress=console.RunBars(progress), on_row=on_row)
    workers = None
    if args.workers > 1:
        from bench.speed import workers_speed

        console.err.print(f"the same {len(variants)} runs with 1 worker, then {args.workers} workers ...")
        workers = workers_speed(study, variants, args.workers, device)
    md, targets = write_speed_report(table, args.out, sys.argv[1:], study.targets, workers, made)
    return print_speed(md, targets, [args.out / "speed.csv", args.out / "speed.md"])


def print_speed(md: str, targets: list[tuple[str, str, bool]], written: list[Path]) -> int:
    """The measured table, each target met or not, and the files written."""
    console.out.width = max(console.out.width, 200)
    console.out.print(md)
    for what, measured, ok in targets:
        console.out.print(
            f"{'[green]met[/]' if ok else '[red]NOT met[/]'}  {what}: {measured}", highlight=False, soft_wrap=True
        )
    console.err.print(f"written: {', '.join(map(str, written))}")
    return EXIT_OK


def speed_kernels(args, study, variants, device, weights: str) -> int:
    """bench speed --kernels: memory formats and optimizer implementations, timed on synthetic tensors."""
    from bench.kernels import kernels_table, matmul_gflops
    from bench.speed import write_kernels_report
    from bench.training.device import device_name

    console.err.print("timing float32 matmul, then each variant's network in both memory formats ...")
    peak = matmul_gflops(device)
    table = kernels_table(variants, device, peak)
    md, targets = write_kernels_report(table, args.out, sys.argv[1:], device_name(device), peak, study.targets, weights)
    return print_speed(md, targets, [args.out / "kernels.csv", args.out / "kernels.md"])


def cmd_report(args) -> int:
    from bench.infra.files import check_writable
    from bench.report import FORMATS, report

    formats = set(filter(None, args.format.split(",")))
    if not formats or formats - set(FORMATS):
        raise UsageError(
            f"unknown --format {','.join(sorted(formats - set(FORMATS))) or '(empty)'}; use md, tex or md,tex"
        )
    check_writable(args.out, "report.md", "the report folder (--out)")
    console.doing(
        "writing the report",
        "each file written so far is complete (files are written whole); run `bench report` again for the rest",
    )
    for r in report(args.results, args.out, args.study, formats, args.baseline, args.variant):
        for w in r.warnings:
            console.warning(w)
        for page in (p for p in r.files if p.name.startswith("report.")):
            console.err.print(f"{r.study}: {page}", highlight=False, soft_wrap=True)
        if args.mlflow and r.files:
            from bench.infra.trackers import MLflow

            MLflow(args.mlflow, r.study).log_report(r.files, r.study)
            console.err.print(
                f"{r.study}: {len(r.files)} report files logged to MLflow ({args.mlflow})", highlight=False
            )
    return EXIT_OK


def cmd_verify(args) -> int:
    from rich.markup import escape

    from bench.infra.store import Store
    from bench.report import ReportError, load_runs, verify

    names = [args.study] if args.study else Store(args.results).study_names()
    if not names:
        raise UsageError(f"no studies in {args.results / 'studies'}; point --results at the store that holds them")
    bad = 0
    for name in names:
        try:
            checked, unverifiable = verify(load_runs(args.results, name))
        except ReportError as e:
            console.error(f"study {name} could not be verified: {e}")
            bad += 1
            continue
        worst = max((d for _, d in checked), default=0.0)
        for run, d in checked:
            if d > 1e-9:
                bad += 1
                console.err.print(
                    f"[red]{escape(name)}: {escape(run.variant)} (seed {run.seed}, {run.run_id}) differs by {d:.3g}[/]",
                    highlight=False,
                )
        for run, why in unverifiable:
            bad += 1
            console.err.print(
                f"[red]{escape(name)}: {escape(run.variant)} (seed {run.seed}, {run.run_id}) could not "
                f"be verified: {escape(why)}[/]",
                highlight=False,
                soft_wrap=True,
            )
        console.out.print(
            f"{escape(name)}: {len(checked)} finished runs recomputed with scikit-learn from predictions.csv; "
            f"largest difference from metrics.json {worst:.2g}; {len(unverifiable)} could not be verified",
            highlight=False,
            soft_wrap=True,
        )
    return EXIT_FAILED_RUNS if bad else EXIT_OK


def cmd_compare(args) -> int:
    from bench.report import compare

    result = compare(args.results, args.a, args.b, args.study)
    for w in result.study.warnings:  # damaged runs are left out of the comparison: say which
        console.warning(w)
    c = result.comparison
    console.comparison(f"{result.study.name}: {args.a} vs {args.b} on {c.n_images:,} test images", args.a, args.b, c)
    return EXIT_OK
