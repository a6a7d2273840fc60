"""The `bench` command: parses arguments and maps errors to exit codes; `commands` calls the
pipeline, `console` shows it."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path

from bench import console
from bench.cli import commands, tools
from bench.cli.commands import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK

# What a command can raise about its input: the message says what to fix, so no traceback. Named by
# module, as importing them all (torch, the report's matplotlib) would slow every command by seconds;
# an error of a module that was never imported cannot have been raised.
BAD_INPUT = {
    "bench.config": "ConfigError",
    "bench.api": "UsageError",
    "bench.pretrained": "WeightsError",
    "bench.report.runs": "ReportError",
    "bench.infra.launch": "LaunchError",
    "bench.infra.files": "NotWritable",
    "bench.infra.trackers": "TrackerError",
}


def is_a(e: BaseException, module: str, name: str) -> bool:
    return module in sys.modules and isinstance(e, getattr(sys.modules[module], name))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM stops as cleanly as Ctrl-C; the caller's handler is put back (main() may run in a notebook)
    on_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    console.doing("starting", "nothing was changed")
    try:
        return args.func(args)
    except BrokenPipeError:  # `bench list ... | head`: the reader has gone; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        what, then = console.phase
        console.err.print(f"[yellow]interrupted[/] while {what}: {then}", highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except Exception as e:
        if is_a(e, "bench.data", "DataError"):
            console.error(f"{e}\n  on the command line: --data-dir DIR sets data.path for every variant")
            return EXIT_BAD_INPUT
        if any(is_a(e, module, name) for module, name in BAD_INPUT.items()):
            console.error(str(e))
            return EXIT_BAD_INPUT
        raise
    finally:
        signal.signal(signal.SIGTERM, on_term)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="ImageNet backbones -> CIFAR-10 transfer-learning ablations")
    p.add_argument("--version", action=VersionAction, nargs=0, help="bench's version and its libraries', then exit")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help: str, func, *groups) -> argparse.ArgumentParser:
        example = EXAMPLES.get(name, "")
        sp = sub.add_parser(name, help=help, description=help, epilog=f"example: {example}" if example else None)
        for add in groups:
            add(sp)
        sp.set_defaults(func=func)
        return sp

    def results_arg(sp):
        sp.add_argument("--results", type=Path, default=Path("results"), help="results store (default: ./results)")

    def study_arg(sp):
        sp.add_argument("--study", metavar="NAME", help="one study (default: every study in the store)")

    def out_arg(default: str, help: str):
        return lambda sp: sp.add_argument("--out", type=Path, default=Path(default), help=help)

    def device_arg(sp):
        sp.add_argument(
            "--device",
            default="auto",
            type=device_spec,
            metavar="DEVICE",
            help="auto (default: the GPU if torch sees one), cpu, cuda or cuda:N (GPU N)",
        )

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
            metavar="NAME",
            help="only this variant, or the variants a glob matches, e.g. --only 'freeze=*' (repeatable); "
            "a variant's exact name picks it alone, whatever [ ] * ? it holds",
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
    sp.add_argument("--dry-run", action="store_true", help="show what would train and what would not; train nothing")
    sp.add_argument(
        "--mlflow",
        metavar="URI",
        help="also log each finished run to MLflow, e.g. sqlite:///mlflow.db "
        "(pip install -e '.[trackers]'; default: the study file's trackers.mlflow)",
    )
    sp.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write TensorBoard event files per finished run (default: the study file's trackers.tensorboard)",
    )
    sp.add_argument(
        "--wandb",
        action="store_true",
        help="also log each finished run to Weights & Biases, project = the study, group = the variant "
        "(pip install -e '.[wandb]'; WANDB_MODE=offline without internet)",
    )
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
        out_arg("reports/speed", "folder for speed.csv and speed.md"),
    )
    sp.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="also run the variants as a study with 1 worker, then N worker processes (bench run --parallel N), "
        "each with its share of the cores; writes workers.csv",
    )
    sp.add_argument(
        "--kernels",
        action="store_true",
        help="instead of the runs: each variant's network in both memory formats and the optimizer step in each of "
        "torch's implementations, on synthetic tensors, against the matmul peak; writes kernels.csv and kernels.md",
    )

    sp = command(
        "report",
        "tables (markdown, LaTeX), figures and a report page per study",
        commands.cmd_report,
        results_arg,
        study_arg,
    )
    sp.add_argument("--out", type=Path, default=Path("reports"), help="where reports go (default: ./reports)")
    sp.add_argument("--mlflow", metavar="URI", help="also log the report files to MLflow as a run's artifacts")
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

    sp = command(
        "show",
        "a variant's resolved configuration, run id, fingerprints, state and files",
        tools.cmd_show,
        study_file_args,
    )
    sp.add_argument("variant", metavar="VARIANT", help="variant name, as `bench list` shows it")
    sp.add_argument("--seed", type=int, help="one seed (default: every seed of the variant)")

    sp = command(
        "export",
        "every run of every study as one tidy table (CSV, or Parquet with the export extra)",
        tools.cmd_export,
        results_arg,
        study_arg,
        out_arg("runs.csv", "runs.csv (default) or runs.parquet"),
    )

    sp = command(
        "cache", "what bench has cached (decoded images, features, fingerprints), with sizes; clear it", tools.cmd_cache
    )
    sp.add_argument("action", choices=["list", "clear"], nargs="?", default="list")
    sp.add_argument("parts", nargs="*", metavar="PART", help="clear: features, decoded, extracted, ... or all")
    return p


EXAMPLES = {
    "list": "bench list ablations.yaml --only 'freeze=*' --format names",
    "run": "bench run ablations.yaml --only 'schedule=*' --set train.epochs=1 --mlflow sqlite:///mlflow.db",
    "speed": "bench speed studies/speed-cpu.yaml --out reports/speed",
    "report": "bench report --study resnet50-cifar10 --format md,tex --baseline baseline",
    "verify": "bench verify --results results",
    "compare": "bench compare schedule=cosine baseline --study resnet50-cifar10",
    "show": "bench show ablations.yaml freeze=none --seed 0",
    "export": "bench export --out runs.csv  # then: pd.read_csv('runs.csv')",
    "cache": "bench cache clear features",
}


DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device_spec(value: str) -> str:
    """--device's value, checked by its spelling only (whether the GPU exists is checked when it is used)."""
    if not DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"invalid device {value!r}: use auto, cpu, cuda or cuda:N (e.g. cuda:1)")
    return value


class VersionAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(version())  # as is: argparse's own version action would re-wrap it
        parser.exit()


def version() -> str:
    """The installed versions, read from package metadata: importing torch to ask would take seconds."""
    from importlib import metadata

    from bench.infra.hashing import LIBRARIES, bench_version

    libraries = ", ".join(f"{name} {metadata.version(name)}" for name in LIBRARIES)
    return f"bench {bench_version()} ({libraries})"
