"""What the terminal shows: progress bars for the grid, epochs and batches, and the tables
`bench run`, `bench list` and `bench compare` print. Presentation only."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

err = Console(stderr=True)  # progress, warnings and errors
phase = ("starting", "nothing was changed")  # what is being done, and what an interrupt leaves behind


def doing(what: str, then: str) -> None:
    """Say what the command is doing now, for the message an interrupt prints."""
    global phase
    phase = (what, then)


out = Console()  # results, so `bench ... > file` keeps them

PROGRESS_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
    TextColumn("eta"),
    TimeRemainingColumn(),
)


def progress(transient: bool = False) -> Progress:
    return Progress(*PROGRESS_COLUMNS, console=err, transient=transient)


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


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # '[ray]' is text


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def run_summary(results) -> None:
    table = Table(title="summary")
    for col in ("variant", "seed", "state", "test acc", "seconds", "run id"):
        table.add_column(col)
    style = {"done": "green", "skipped": "dim", "failed": "red", "busy": "yellow"}
    for r in results:
        table.add_row(
            escape(r.variant.name),
            str(r.variant.seed),
            f"[{style[r.state]}]{r.state}[/]",
            f"{r.accuracy:.4f}" if r.accuracy is not None else "",
            f"{r.seconds:.0f}" if r.seconds is not None else "",
            r.variant.run_id,
        )
    out.print(table)
    for r in results:
        if r.state in ("failed", "busy"):
            err.print(
                f"[red]{escape(r.variant.name)} (seed {r.variant.seed}):[/] {escape(r.error)}",
                highlight=False,
                soft_wrap=True,
            )


LISTING_FORMATS = ("table", "csv", "json", "names")


def study_listing(title: str, rows: list[dict], total_tflop: float, fmt: str = "table") -> None:
    """`bench list`: a table for people (wraps to the terminal), csv/json for programs, names for a Slurm array."""
    if fmt == "names":
        print("\n".join(dict.fromkeys(r["variant"] for r in rows)))
        return
    if fmt in ("csv", "json"):
        frame = pd.DataFrame(rows)
        print(frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=1), end="")
        return
    table = Table(title=escape(title))
    for col, key in (
        ("variant", "variant"),
        ("seed", "seed"),
        ("what differs", "differs"),
        ("~TFLOP", "tflop"),
        ("status", "status"),
        ("run id", "run_id"),
    ):
        table.add_column(
            col,
            justify="right" if key in ("seed", "tflop") else "left",
            overflow="fold",
            ratio=3 if key in ("variant", "differs", "status") else None,
        )
    for r in rows:
        table.add_row(
            escape(r["variant"]),
            str(r["seed"]),
            escape(r["differs"]),
            f"{r['tflop']:,.0f}",
            escape(r["status"]),
            r["run_id"],
        )
    out.print(table)
    out.print(
        f"total ~{total_tflop:,.0f} TFLOP (a frozen backbone with no augmentation runs once: its features are cached)"
    )


def comparison(title: str, a: str, b: str, c) -> None:
    table = Table(title=escape(title))
    for col in ("", a, b, "difference (A - B)"):
        table.add_column(escape(col), justify="left" if not col else "right")
    table.add_row(
        "test accuracy (%), mean over paired seeds",
        f"{100 * c.acc_a:.2f}",
        f"{100 * c.acc_b:.2f}",
        f"{100 * c.diff:+.2f}",
    )
    table.add_row(f"{100 * c.confidence:.0f}% CI (points)", "", "", f"{100 * c.ci_low:+.2f} to {100 * c.ci_high:+.2f}")
    table.add_row("seeds paired", "", "", str(c.n_seeds))
    table.add_row("p (paired t over seeds)", "", "", f"{c.p_value:.3g}" if c.p_value is not None else "— (one seed)")
    for i, (d, p, ao, bo) in enumerate(zip(c.per_seed_diff, c.mcnemar_p, c.a_only, c.b_only)):
        table.add_row(f"pair {i + 1}: only this one right / McNemar p", str(ao), str(bo), f"{100 * d:+.2f} (p={p:.3g})")
    out.print(table)
    out.print(escape(c.verdict(a, b)), highlight=False, soft_wrap=True)
