"""The `bench` command: parses arguments and maps errors to exit codes; `commands` calls the
pipeline, `console` shows it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from bench.cli import commands, console
from bench.cli.commands import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, UsageError


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from bench.config import ConfigError
    from bench.data import DataError
    from bench.files import NotWritable
    from bench.launch import LaunchError
    from bench.models import WeightsError
    from bench.report import ReportError

    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops as cleanly as Ctrl-C
    console.doing("starting", "nothing was changed")
    try:
        return args.func(args)
    except DataError as e:
        console.error(f"{e}\n  on the command line: --data-dir DIR sets data.path for every variant")
        return EXIT_BAD_INPUT
    except (ConfigError, UsageError, WeightsError, ReportError, LaunchError, NotWritable) as e:
        console.error(str(e))
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `bench list ... | head`: the reader has gone; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        what, then = console.phase
        console.err.print(f"[yellow]interrupted[/] while {what}: {then}", highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="ResNet-50 -> CIFAR-10 transfer-learning ablations")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help: str, func, *groups) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        for add in groups:
            add(sp)
        sp.set_defaults(func=func)
        return sp

    def results_arg(sp):
        sp.add_argument("--results", type=Path, default=Path("results"), help="results store (default: ./results)")

    def study_arg(sp):
        sp.add_argument("--study", metavar="NAME", help="one study (default: every study in the store)")

    def device_arg(sp):
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    def study_file_args(sp):
        sp.add_argument("study", type=Path, help="study file, e.g. ablations.yaml")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a dotted key in every variant, e.g. --set train.epochs=1 (repeatable)",
        )
        sp.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="GLOB",
            help="only variants whose name matches, e.g. --only 'freeze=*' (repeatable)",
        )
        sp.add_argument("--limit-train", type=int, metavar="N", help="same as --set data.limit_train=N")
        sp.add_argument("--data-dir", metavar="DIR", help="same as --set data.path=DIR")
        results_arg(sp)

    sp = command("list", "show the expanded grid: what differs, rough cost, status", commands.cmd_list, study_file_args)
    sp.add_argument(
        "--format",
        default="table",
        choices=console.LISTING_FORMATS,
        help="table (default), csv or json (every field, for scripts), names (one variant per line)",
    )

    sp = command("run", "train and evaluate every variant not done yet", commands.cmd_run, study_file_args, device_arg)
    sp.add_argument("--retry-failed", action="store_true", help="also re-run variants that failed before")
    sp.add_argument(
        "--rerun-stale",
        action="store_true",
        help="re-run finished runs made by other code (another "
        "bench source or torch/torchvision/timm version); the old folders are kept aside",
    )
    sp.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="run a frozen backbone every epoch instead of once (for timing comparisons)",
    )
    sp.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="train N variants at once in worker processes, worker i on GPU i (default: 1)",
    )
    sp.add_argument(
        "--launcher",
        default="local",
        choices=["local", "ray"],
        help="ray: one Ray task per variant, "
        "anywhere on a cluster; --results must then be a path every node sees (pip install -e '.[ray]')",
    )
    sp.add_argument("--address", metavar="ADDR", help="Ray cluster to join, e.g. auto (default: start one here)")
    sp.add_argument(
        "--gpus-per-run",
        type=float,
        metavar="G",
        help="Ray: GPUs per variant (default: 1 if the cluster has GPUs, else 0)",
    )
    sp.add_argument("--cpus-per-run", type=int, default=1, metavar="C", help="Ray: CPU cores per variant (default: 1)")
    sp.add_argument(
        "--max-retries",
        type=int,
        default=2,
        metavar="R",
        help="Ray: retries of a variant whose worker "
        "died, each resuming from its last epoch, before it is recorded as failed (default: 2)",
    )

    sp = command(
        "speed",
        "benchmark: images/s, s/epoch, cached vs uncached frozen backbone, pipeline vs "
        "model-only throughput; writes a CSV and a markdown table",
        commands.cmd_speed,
        study_file_args,
        device_arg,
    )
    sp.add_argument("--out", type=Path, default=Path("reports/speed"), help="folder for speed.csv and speed.md")

    sp = command(
        "report",
        "tables (markdown, LaTeX), figures and a report page per study",
        commands.cmd_report,
        results_arg,
        study_arg,
    )
    sp.add_argument("--out", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")
    sp.add_argument("--format", default="md,tex", metavar="md,tex", help="md, tex or md,tex (default: both)")
    sp.add_argument(
        "--baseline",
        metavar="NAME",
        help="variant the ablation effects are measured against (default: the variant named 'baseline')",
    )
    sp.add_argument(
        "--variant",
        metavar="NAME",
        help="variant for the per-class table and confusion matrix (default: best mean validation accuracy)",
    )

    command(
        "verify",
        "recompute every finished run's test metrics with scikit-learn from its saved predictions "
        "and compare with metrics.json",
        commands.cmd_verify,
        results_arg,
        study_arg,
    )

    sp = command(
        "compare",
        "is variant A really better than B? (paired t-test over seeds, with the test-set noise the seeds share)",
        commands.cmd_compare,
        results_arg,
    )
    sp.add_argument("a", metavar="VARIANT_A")
    sp.add_argument("b", metavar="VARIANT_B")
    sp.add_argument("--study", metavar="NAME", help="study holding both (default: the one that does)")
    return p
