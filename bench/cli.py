"""The `bench` command: parses arguments, calls the pipeline, shows progress. Nothing else."""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from bench.config import ConfigError
    from bench.data import DataError
    from bench.models import WeightsError
    from bench.results import ReportError

    try:
        return args.func(args)
    except (ConfigError, DataError, WeightsError, ReportError) as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # '[ray]' is text
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] finished runs are kept; the cut-off run resumes from its "
                      "last epoch on the next `bench run`")
        return EXIT_INTERRUPTED


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="ResNet-50 -> CIFAR-10 transfer-learning ablations")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def study_args(sp):
        sp.add_argument("study", type=Path, help="study file, e.g. ablations.yaml")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a dotted key in every variant, e.g. --set train.epochs=1 (repeatable)")
        sp.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="only variants whose name matches, e.g. --only 'freeze=*' (repeatable)")
        sp.add_argument("--limit-train", type=int, metavar="N", help="same as --set data.limit_train=N")
        sp.add_argument("--data-dir", metavar="DIR", help="same as --set data.path=DIR")
        sp.add_argument("--results", type=Path, default=Path("results"), help="results store (default: ./results)")

    sp = sub.add_parser("list", help="show the expanded grid: what differs, rough cost, status")
    study_args(sp)
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("run", help="train and evaluate every variant not done yet")
    study_args(sp)
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--retry-failed", action="store_true", help="also re-run variants that failed before")
    sp.add_argument("--no-feature-cache", action="store_true",
                    help="run a frozen backbone every epoch instead of once (for timing comparisons)")
    sp.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="local launcher: train N variants at once in worker processes, worker i on GPU i (default: 1)")
    sp.add_argument("--launcher", default="local", choices=["local", "ray"],
                    help="ray: one Ray task per variant, anywhere on a cluster; --results must then be a path "
                    "every node sees (needs pip install -e '.[ray]')")
    sp.add_argument("--address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start one on "
                    "this machine)")
    sp.add_argument("--gpus-per-run", type=float, metavar="G", help="Ray: GPUs per variant (default: 1 if the "
                    "cluster has GPUs, else 0)")
    sp.add_argument("--cpus-per-run", type=int, default=1, metavar="C", help="Ray: CPU cores per variant (default: 1)")
    sp.add_argument("--max-retries", type=int, default=2, metavar="R", help="Ray: retries of a variant whose worker "
                    "died, each resuming from its last epoch, before it is recorded as failed (default: 2)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("speed", help="benchmark: images/s, s/epoch, cached vs uncached frozen backbone, "
                        "pipeline vs model-only throughput; writes a CSV and a markdown table")
    study_args(sp)
    sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sp.add_argument("--out", type=Path, default=Path("reports/speed"), help="folder for speed.csv and speed.md")
    sp.set_defaults(func=cmd_speed)

    sp = sub.add_parser("report", help="tables (markdown, LaTeX), figures and a report page per study")
    sp.add_argument("--results", type=Path, default=Path("results"), help="results store (default: ./results)")
    sp.add_argument("--out", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")
    sp.add_argument("--study", metavar="NAME", help="one study (default: every study in the store)")
    sp.add_argument("--format", default="md,tex", metavar="md,tex", help="md, tex or md,tex (default: both)")
    sp.add_argument("--baseline", metavar="NAME", help="variant the ablation effects are measured against "
                    "(default: the variant named 'baseline')")
    sp.add_argument("--variant", metavar="NAME", help="variant for the per-class table and confusion matrix "
                    "(default: best mean test accuracy)")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("verify", help="recompute every finished run's test metrics with scikit-learn from its "
                        "saved predictions and compare with metrics.json")
    sp.add_argument("--results", type=Path, default=Path("results"), help="results store (default: ./results)")
    sp.add_argument("--study", metavar="NAME", help="one study (default: every study in the store)")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("compare", help="is variant A really better than B on the test set? "
                        "(McNemar's exact test, paired bootstrap)")
    sp.add_argument("a", metavar="VARIANT_A")
    sp.add_argument("b", metavar="VARIANT_B")
    sp.add_argument("--study", metavar="NAME", help="study holding both (default: the one that does)")
    sp.add_argument("--results", type=Path, default=Path("results"), help="results store (default: ./results)")
    sp.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    sp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    sp.set_defaults(func=cmd_compare)
    return p


PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn())


def pick_device(name: str):
    import torch

    from bench.config import UsageError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device", ["--device cuda, but torch sees no CUDA device; use --device cpu"])
    return torch.device(name)


def load(args):
    from bench.config import ConfigError, load_study, parse_value, select

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
    study = load_study(args.study, overrides)
    return study, select(study, args.only)


def cmd_list(args) -> int:
    from bench.store import Store
    from bench.train import estimate_tflops

    study, variants = load(args)
    store = Store(args.results)
    table = Table(title=f"{study.name}: {len(variants)} runs ({args.study})")
    for col in ("#", "variant", "seed", "what differs", "~TFLOP", "status", "run id"):
        table.add_column(col, justify="right" if col in ("#", "seed", "~TFLOP") else "left",
                         no_wrap=col in ("variant", "run id"))
    total = 0.0
    for i, v in enumerate(variants, 1):
        cost = estimate_tflops(v.config)
        total += cost
        diff = ", ".join(f"{k}={val}" for k, val in v.overrides.items()) or "(defaults)"
        table.add_row(str(i), v.name, str(v.seed), diff, f"{cost:,.0f}", store.state(v) or "pending", v.run_id)
    Console().print(table)
    Console().print(f"total ~{total:,.0f} TFLOP (ResNet-50 multiply-adds; a frozen backbone with no "
                    "augmentation runs once, its features are cached)")
    return EXIT_OK


def cmd_run(args) -> int:
    from bench import launch
    from bench.runner import Hooks, pending, preflight, run_study
    from bench.store import Store

    study, variants = load(args)
    device = pick_device(args.device)
    store = Store(args.results)
    hooks = Hooks()
    if args.launcher == "ray":
        launch.require_ray()  # not installed: stop before anything is written
    preflight(pending(store, variants, args.retry_failed), hooks)  # missing data or weights: stop before any run
    store.record_study(study, "bench " + " ".join(map(shlex.quote, sys.argv[1:])) if sys.argv[1:] else "bench run")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops as cleanly as Ctrl-C

    with Progress(*PROGRESS_COLUMNS, console=console, transient=False) as progress:
        grid = progress.add_task(f"[bold]{study.name}[/]", total=len(variants))
        bars = RunBars(progress)

        def started(v):
            bars.clear()
            console.print(f"[bold]>[/] {v.name} (seed {v.seed}) -> {store.run_dir(v.run_id)}", highlight=False)

        def ended(r):
            progress.advance(grid)
            if r.state == "failed":
                console.print(f"[red]  failed:[/] {escape(r.error.splitlines()[0])}", highlight=False, soft_wrap=True)
            elif r.state == "done":
                console.print(f"  test accuracy {r.accuracy:.4f} in {r.seconds:.0f}s", highlight=False)

        hooks.progress, hooks.run_started, hooks.run_ended = bars, started, ended
        common = dict(retry_failed=args.retry_failed, feature_cache=not args.no_feature_cache, hooks=hooks)
        if args.launcher == "ray":
            results = launch.run_ray(study, variants, store, address=args.address, gpus_per_run=args.gpus_per_run,
                                     cpus_per_run=args.cpus_per_run, max_retries=args.max_retries, **common)
        elif args.parallel > 1:
            results = launch.run_parallel(study, variants, store, device, args.parallel, **common)
        else:
            results = run_study(study, variants, store, device, **common)
        progress.update(grid, completed=len(variants))
        bars.clear()
    summary(results)
    return EXIT_FAILED_RUNS if any(r.state in ("failed", "busy") for r in results) else EXIT_OK


def cmd_speed(args) -> int:
    from bench.runner import device_name
    from bench.speed import check_targets, run_speed

    _, variants = load(args)
    device = pick_device(args.device)
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        table = run_speed(variants, device, progress=RunBars(progress))
    table.insert(0, "device", device_name(device))
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "speed.csv", index=False, float_format="%.4g")
    targets = check_targets(table)
    md = table.drop(columns=["device"]).to_markdown(index=False, floatfmt=".3g")
    lines = [f"Device: {device_name(device)}. Command: `bench {' '.join(map(shlex.quote, sys.argv[1:]))}`", "", md, "",
             "| target | measured | met |", "| --- | --- | --- |"] + [f"| {w} | {v} | {'yes' if ok else 'NO'} |" for w, v, ok in targets]
    (args.out / "speed.md").write_text("\n".join(lines) + "\n")
    Console(width=200).print(md)
    for what, measured, ok in targets:
        Console().print(f"{'[green]met[/]' if ok else '[red]NOT met[/]'}  {what}: {measured}", highlight=False, soft_wrap=True)
    console.print(f"written: {args.out / 'speed.csv'}, {args.out / 'speed.md'}")
    return EXIT_OK


def cmd_report(args) -> int:
    from bench.report import report

    reports = report(args.results, args.out, args.study, set(filter(None, args.format.split(","))),
                     args.baseline, args.variant)
    for r in reports:
        for w in r.warnings:
            console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
        for page in (p for p in r.files if p.name.startswith("report.")):
            console.print(f"{r.study}: {page}", highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_verify(args) -> int:
    from bench.results import load_study, study_names, verify

    bad = 0
    for name in [args.study] if args.study else study_names(args.results):
        checked = verify(load_study(args.results, name))
        worst = max((d for _, d in checked), default=0.0)
        bad += sum(d > 1e-9 for _, d in checked)
        for run, d in checked:
            if d > 1e-9:
                console.print(f"[red]{name}: {run.variant} (seed {run.seed}, {run.run_id}) differs by {d:.3g}[/]")
        Console().print(f"{name}: {len(checked)} finished runs recomputed with scikit-learn from predictions.csv; "
                        f"largest difference from metrics.json {worst:.2g}", highlight=False, soft_wrap=True)
    return EXIT_FAILED_RUNS if bad else EXIT_OK


def cmd_compare(args) -> int:
    from bench.report import compare

    result = compare(args.results, args.a, args.b, args.study, resamples=args.resamples, seed=args.seed)
    c = result.comparison
    table = Table(title=f"{result.study.name}: {args.a} vs {args.b} on {c.n_images:,} test images")
    for col in ("", args.a, args.b, "difference (A - B)"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("test accuracy (%)", f"{100 * c.acc_a:.2f}", f"{100 * c.acc_b:.2f}", f"{100 * c.diff:+.2f}")
    table.add_row(f"{100 * c.confidence:.0f}% bootstrap CI (points)", "", "",
                  f"{100 * c.ci_low:+.2f} to {100 * c.ci_high:+.2f}")
    table.add_row("seeds averaged", str(c.seeds_a), str(c.seeds_b), "")
    table.add_row("only this one right (first seed)", str(c.a_only), str(c.b_only), "")
    table.add_row("McNemar exact p (two-sided)", "", "", f"{c.p_value:.3g}")
    Console().print(table)
    Console().print(c.verdict(args.a, args.b), highlight=False, soft_wrap=True)
    return EXIT_OK


class RunBars:
    """progress(description, total) -> advance(n), backed by rich tasks that go once finished."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, []

    def __call__(self, description: str, total: int):
        finished = {t.id for t in self.progress.tasks if t.finished}
        for t in [t for t in self.tasks if t in finished]:
            self.progress.remove_task(t)
            self.tasks.remove(t)
        task = self.progress.add_task(f"  {description}", total=total)
        self.tasks.append(task)
        return lambda n: self.progress.advance(task, n)

    def clear(self):
        for t in self.tasks:
            self.progress.remove_task(t)
        self.tasks = []


def summary(results) -> None:
    table = Table(title="summary")
    for col in ("variant", "seed", "state", "test acc", "seconds", "run id"):
        table.add_column(col)
    style = {"done": "green", "skipped": "dim", "failed": "red", "busy": "yellow"}
    for r in results:
        table.add_row(r.variant.name, str(r.variant.seed), f"[{style[r.state]}]{r.state}[/]",
                      f"{r.accuracy:.4f}" if r.accuracy is not None else "",
                      f"{r.seconds:.0f}" if r.seconds is not None else "", r.variant.run_id)
    Console().print(table)
    for r in results:
        if r.state in ("failed", "busy"):
            console.print(f"[red]{escape(r.variant.name)} (seed {r.variant.seed}):[/] {escape(r.error)}", highlight=False, soft_wrap=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
