"""What the terminal shows: progress bars for the grid, epochs and batches, and the tables
`bench run`, `bench list` and `bench compare` print. Presentation only."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

err = Console(stderr=True)  # progress, warnings and errors
phase = ("starting", "nothing was changed")  # what is being done, and what an interrupt leaves behind


def doing(what: str, then: str) -> None:
    """Say what the command is doing now, for the message an interrupt prints."""
    global phase
    phase = (what, then)


out = Console()  # results, so `bench ... > file` keeps them


class CountColumn(ProgressColumn):
    """`3/105` of a task's `count` field where it has one (the grid: its bar moves by compute, so its
    completed/total are TFLOP, not runs), otherwise completed/total (batches, epochs)."""

    def render(self, task: Task) -> Text:
        if "count" in task.fields:
            return Text(task.fields["count"], style="progress.download")
        total = f"{task.total:,.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:,.0f}/{total}", style="progress.download")


PROGRESS_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    CountColumn(),
    TimeElapsedColumn(),
    TextColumn("eta"),
    TimeRemainingColumn(),
)


def progress(transient: bool = False, disable: bool = False) -> Progress:
    return Progress(*PROGRESS_COLUMNS, console=err, transient=transient, disable=disable)


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


class RunDisplay:
    """What `bench run` shows: a grid bar weighted by each run's expected compute (so cached runs do
    not skew the ETA) that counts `runs 3/105`, the bars of the run in progress, and a line per run and
    per epoch (the epoch lines only when the output is not a terminal, e.g. a Slurm log or a notebook)."""

    def __init__(self, progress: Progress, title: str, run_dir, cost):
        self.progress, self.run_dir, self.cost = progress, run_dir, cost
        self.bars = RunBars(progress)
        self.grid = progress.add_task(f"[bold]{escape(title)}[/]", total=None, count="runs 0/?")
        self.runs, self.finished = 0, 0

    def hooks(self):
        from bench.infra.runner import Hooks

        return Hooks(
            progress=self.bars,
            run_started=self.started,
            run_ended=self.ended,
            waiting=self.waiting,
            planned=self.planned,
            epoch_ended=self.epoch_ended,
        )

    def planned(self, todo) -> None:
        self.runs, self.finished = len(todo), 0
        total = max(1e-9, sum(self.cost(v.config) for v in todo))
        self.progress.update(self.grid, total=total, completed=0, count=f"runs 0/{self.runs}")

    def started(self, v) -> None:
        doing(
            f"training {v.name} (seed {v.seed})",
            "finished runs are kept; the cut-off run resumes from its last finished epoch on the next `bench run`",
        )
        self.bars.clear()
        err.print(f"[bold]>[/] {escape(v.name)} (seed {v.seed}) -> {self.run_dir(v.run_id)}", highlight=False)

    def epoch_ended(self, v, row: dict) -> None:
        if not err.is_terminal:
            err.print(
                f"  epoch {row['epoch']}/{v.config.train.epochs}: "
                f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}, "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}, {row['seconds']:.0f}s",
                highlight=False,
            )

    def ended(self, r) -> None:
        self.finished += 1
        self.progress.advance(self.grid, self.cost(r.variant.config))
        self.progress.update(self.grid, count=f"runs {self.finished}/{max(self.runs, self.finished)}")
        if r.state == "failed":
            err.print(f"[red]  failed:[/] {escape(r.error.splitlines()[0])}", highlight=False, soft_wrap=True)
        elif r.state == "done":
            err.print(f"  test accuracy {r.accuracy:.4f} in {r.seconds:.0f}s", highlight=False)

    def waiting(self, v) -> None:
        err.print(
            f"[yellow]  waiting:[/] another bench process is training {escape(v.name)} (seed {v.seed}); "
            "taking what it leaves when it lets go",
            highlight=False,
        )

    def close(self) -> None:
        task = self.progress.tasks[self.grid]
        self.progress.update(self.grid, completed=task.total or 0)
        self.bars.clear()


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


def study_listing(title: str, rows: list[dict], fmt: str = "table", rate: tuple[float, int] | None = None) -> None:
    """`bench list`: a table for people (at the terminal's width), one plain line per run when piped
    (grep-able), csv/json with every field for programs, names for a Slurm array. `rate`: the
    TFLOP/s of this store's finished runs and how many, to turn the pending compute into hours."""
    if fmt == "names":
        print("\n".join(dict.fromkeys(r["variant"] for r in rows)))
        return
    import pandas as pd  # here: `bench --help` and the other commands do without it

    if fmt in ("csv", "json"):
        frame = pd.DataFrame(rows)
        print(frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=1), end="")
        return
    columns = (
        ("variant", "variant"),
        ("seed", "seed"),
        ("what differs", "differs"),
        ("~TFLOP", "tflop"),
        ("status", "status"),
        ("run id", "run_id"),
    )
    if not out.is_terminal:
        frame = pd.DataFrame([{c: r[k] for c, k in columns} for r in rows]).round({"~TFLOP": 0})
        print(title + "\n" + frame.to_markdown(index=False, tablefmt="plain", floatfmt=",.0f"))
    else:
        table = Table(title=escape(title))
        for col, key in columns:
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
    total = sum(r["tflop"] for r in rows)
    pending = sum(r["tflop"] for r in rows if r["status"].startswith(("pending", "stale", "running", "trains")))
    line = f"total ~{total:,.0f} TFLOP, ~{pending:,.0f} still to run"
    if rate:
        hours = pending / rate[0] / 3600
        line += f": about {hours:,.1f} h at the pace of this store's {rate[1]} finished runs ({rate[0]:.2g} TFLOP/s)"
    note = " (a frozen backbone with no augmentation runs once: its features are cached)"
    out.print(line + note, highlight=False, soft_wrap=not out.is_terminal)  # piped: one line


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
    against_mean = c.n_seeds_b > c.n_seeds  # A's one seed against the mean of B's seeds (stats.compare)
    seeds = f"1 against the mean of {b}'s {c.n_seeds_b}" if against_mean else str(c.n_seeds)
    table.add_row("seeds paired", "", "", seeds)
    table.add_row("p (paired t over seeds)", "", "", f"{c.p_value:.3g}" if c.p_value is not None else "— (one seed)")
    for i, (d, p, ao, bo) in enumerate(zip(c.per_seed_diff, c.mcnemar_p, c.a_only, c.b_only)):
        what = f"against {b}'s seed {i + 1}" if against_mean else f"pair {i + 1}"
        table.add_row(f"{what}: only this one right / McNemar p", str(ao), str(bo), f"{100 * d:+.2f} (p={p:.3g})")
    out.print(table)
    out.print(escape(c.verdict(a, b)), highlight=False, soft_wrap=True)
