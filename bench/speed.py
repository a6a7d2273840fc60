"""`bench speed`: where the time goes, measured side by side in one process on one machine.

For every variant: wall time, seconds per epoch, train and eval images per second, peak memory (the
process's, and the GPU's on CUDA). A compiled variant trains at least two epochs, so its rate is a warm
epoch's and the compile time is its own column.
For frozen variants also: the full path (backbone every epoch) vs the feature cache (backbone
once), a second variant reusing the cached features, and one bare forward pass of the backbone
over the same images. For trainable variants: the model-only throughput of the same network
on synthetic tensors, timed as timm's `benchmark.py --bench train` does (warm-up, then
forward + backward + optimizer step), so the data pipeline's cost shows as the gap.
"""

from __future__ import annotations

import operator
import shlex
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench import data as data_mod
from bench.config import features_cacheable
from bench.kernels import BACKWARD_COST, REPEATS, matmul_gflops, speedups, step_call
from bench.models import build_model
from bench.report.canvas import save
from bench.report.format import cell
from bench.report.speed_plots import cache_figure, kernels_figure
from bench.study import Target, Variant
from bench.training import features, layout, transforms
from bench.training import loop as train
from bench.training.device import (
    autocast_dtype,
    device_name,
    eval_batch_size,
    to_format,
)
from bench.training.layout import MIN_SAMPLE_S, sync
from bench.training.outcome import FeatureCache


def rss_mb(field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory, from Linux's /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_growth(v: Variant, ds, device: torch.device, cache_dir: Path, twins: int = 6) -> list[float]:
    """Resident memory after each of `twins` more runs of a variant (another lr each time): a study
    with more variants must not hold more memory."""
    out = []
    for i in range(twins):
        cfg = v.config.model_copy(
            update={"train": v.config.train.model_copy(update={"lr": v.config.train.lr * (i + 2)})}
        )
        train.fit(cfg, ds, device, cache_dir=cache_dir)
        out.append(rss_mb("VmRSS"))
    return out


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def model_only_train_rate(v: Variant, device: torch.device, steps: int = 20, warmup: int = 3) -> float:
    """Images/s of forward + backward + step on random tensors already on the device: `steps` steps after `warmup`,
    their images over their total time, as timm's benchmark.py counts and as the run's own train_img_s is counted
    (a mean: a median step would leave out the slow steps the pipeline's rate pays for)."""
    cfg = v.config
    model = build_model(cfg.model, 10).to(device)
    dtype = autocast_dtype(cfg.train, device)
    fmt = layout.choose(model, cfg, device, dtype)  # as a run chooses it
    model = to_format(model, fmt)
    opt = train.make_optimizer(cfg.train, model, device)
    fwd = torch.compile(model) if cfg.train.compile else model  # compiled as the run compiles it
    bs, r = cfg.train.batch_size, cfg.input.resolution
    step = step_call(model, to_format(torch.randn(bs, 3, r, r, device=device), fmt), opt, device, dtype, fwd)
    for _ in range(warmup):
        step()
    _, seconds = timed(lambda: [step() for _ in range(steps)], device)
    return bs * steps / seconds


def backbone_forward_seconds(v: Variant, ds, device: torch.device) -> float:
    """One forward pass of the backbone over every image of the three splits."""
    cfg = v.config
    dtype, batch = autocast_dtype(cfg.train, device), eval_batch_size(cfg.train, device)
    model = build_model(cfg.model, len(ds.classes)).to(device)
    model = to_format(model, layout.choose(model, cfg, device, dtype, "forward"))  # as a run's feature pass
    transform = transforms.for_run(cfg, ds, False)
    _, seconds = timed(
        lambda: [
            features.predict(model.backbone, getattr(ds, s).x, transform, batch, device, dtype)
            for s in ("train", "val", "test")
        ],
        device,
    )
    return seconds


def run_speed(variants: list[Variant], device: torch.device, progress=None, on_row=None) -> pd.DataFrame:
    """The speed table, one row per variant; caches go to a temporary folder and are discarded. `on_row`
    hears the table so far after each variant (`bench speed` writes it, so a run cut short keeps its rows)."""
    datasets: dict = {}
    rows = []
    peak = matmul_gflops(device)
    with tempfile.TemporaryDirectory() as tmp:
        for i, v in enumerate(variants):
            rows.append(speed_of(v, datasets, Path(tmp) / str(i), device, progress, peak))
            if on_row:
                on_row(_table(rows, device, peak))
    return _table(rows, device, peak)


def _table(rows: list[dict], device: torch.device, peak: float) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table.insert(0, "device", device_name(device))
    table.insert(1, "matmul_gflop_s", peak)
    return table


def speed_of(v: Variant, datasets: dict, cache: Path, device: torch.device, progress=None, peak=float("nan")) -> dict:
    """One row of the speed table; `cache` is an empty folder (a cold feature cache for the first timing). The
    backbone's forward pass and the model-only step are also in GFLOP/s and percent of `peak` (matmul's)."""
    cfg = v.config
    if cfg.train.compile and cfg.train.epochs < 2:  # a warm epoch after the one that compiles
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    if cfg.data not in datasets:
        datasets[cfg.data] = data_mod.load(cfg.data)  # decoded once, outside the timings
    ds = datasets[cfg.data]
    # the memory format is chosen before the clocks start: timed once per machine and shape, then remembered
    layout.choose(build_model(cfg.model, len(ds.classes)).to(device), cfg, device, autocast_dtype(cfg.train, device))
    if device.type == "cuda":  # this variant's peak, not an earlier one's (bench.training.prefix's probe resets it too)
        torch.cuda.reset_peak_memory_stats(device)
    out, seconds = timed(lambda: train.fit(cfg, ds, device, cache_dir=cache, progress=progress), device)
    h = pd.DataFrame(out.history)
    train_s = len(ds.train) / h.train_images_per_sec
    row = {
        "variant": v.name,
        "seed": v.seed,
        "freeze": cfg.model.freeze,
        "augment": cfg.input.augment,
        "precision": cfg.train.precision,
        "resolution": cfg.input.resolution,
        "batch": cfg.train.batch_size,
        "epochs": cfg.train.epochs,
        "n_train": len(ds.train),
        "n_val": len(ds.val),
        "n_test": len(ds.test),
        "feature_cache": out.feature_cache,
        "wall_s": seconds,
        # the last epoch's rate: warm, like the model-only timing after its warm-up steps (a compiled
        # variant has two epochs or more: the first compiles, and recompiles for the last partial batch)
        "s_per_epoch": h.seconds.mean(),
        "train_img_s": h.train_images_per_sec.iloc[-1],
        "eval_img_s": len(ds.val) / max(1e-9, (h.seconds - train_s).mean()),
    }
    if device.type == "cuda":  # the run's own peak, before the comparisons below
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["gpu_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    if cfg.train.compile:  # what the first epoch took beyond a warm one: compiling
        row["compile_s"] = h.seconds.iloc[0] - h.seconds.iloc[1:].mean()
    if features_cacheable(cfg):
        # a twin on the same features, then the backbone every epoch
        _, row["cached_again_s"] = timed(lambda: train.fit(cfg, ds, device, cache_dir=cache), device)
        _, row["uncached_s"] = timed(lambda: train.fit(cfg, ds, device, feature_cache=False, progress=progress), device)
        row["forward_pass_s"] = backbone_forward_seconds(v, ds, device)
        images = len(ds.train) + len(ds.val) + len(ds.test)
        row["forward_gflop_s"] = 2 * macs(cfg) * images / row["forward_pass_s"] / 1e9
        row["forward_pct_of_matmul"] = 100 * row["forward_gflop_s"] / peak
        row["uncached_over_cached"] = row["uncached_s"] / seconds
        row["cached_over_forward"] = seconds / row["forward_pass_s"]
        row["second_over_first"] = row["cached_again_s"] / seconds
        rss = memory_growth(v, ds, device, cache)
        row["rss_growth_pct"] = 100 * (max(rss) - rss[0]) / rss[0]
    elif out.feature_cache in (FeatureCache.PREFIX_COMPUTED, FeatureCache.PREFIX_HIT):
        # the same run on the full path: the frozen prefix runs again in every epoch
        full, row["full_path_s"] = timed(
            lambda: train.fit(cfg, ds, device, feature_cache=False, progress=progress), device
        )
        row["full_s_per_epoch"] = pd.DataFrame(full.history).seconds.mean()
        speedup = row["full_s_per_epoch"] / row["s_per_epoch"]
        row["prefix_speedup_per_epoch"] = speedup
        row["prefix_speedup_wall"] = row["full_path_s"] / seconds
    else:
        steps = max(3, min(20, len(ds.train) // cfg.train.batch_size))  # as many images as the pipeline saw
        row["model_only_train_img_s"] = model_only_train_rate(v, device, steps)
        row["pipeline_over_model_only"] = row["train_img_s"] / row["model_only_train_img_s"]
        row["model_only_gflop_s"] = 2 * macs(cfg) * (1 + BACKWARD_COST) * row["model_only_train_img_s"] / 1e9
        row["model_only_pct_of_matmul"] = 100 * row["model_only_gflop_s"] / peak
    row["peak_rss_mb"] = rss_mb()
    return row


def macs(cfg) -> float:
    """The backbone's forward multiply-adds per image (cost.forward_macs)."""
    from bench.cost import forward_macs

    return forward_macs(cfg.model.arch, cfg.input.resolution)


COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}  # a study file's target.op


def check_targets(table: pd.DataFrame, targets: list[Target]) -> list[tuple[str, str, bool]]:
    """(what, measured values, met?) for every target of the study file that the measured variants cover."""
    out = []
    for t in targets:
        rows = table
        for col, value in t.where.items():
            rows = rows[rows[col] == value] if col in rows else rows.iloc[:0]
        if t.column not in rows or rows[t.column].isna().all():
            continue
        vals = rows[t.column].dropna()
        ok = bool(COMPARISONS[t.op](vals, t.bound).all())
        out.append((t.what, ", ".join(against(x, t.bound) for x in vals), ok))
    return out


def bound_of(row: dict, column: str, targets: list[Target]) -> float | None:
    """The bound of the target (the first, as a study file lists them) that judges `row`'s `column`, if any."""
    for t in targets:
        if t.column == column and all(row.get(col) == value for col, value in t.where.items()):
            return t.bound
    return None


def gain_words(ups: pd.DataFrame, targets: list[Target]) -> dict[tuple[str, str], str]:
    """Per (variant, pass) of the speed-ups table, the pick's speed over torch's default as the kernels figure's
    heading says it; where a target bounds that number, printed as the target's row prints it, with its verdict
    (a 1.147x that missed >= 1.15x must not read '1.15x' under the figure's title)."""
    words = {}
    for u in ups.to_dict("records"):
        gain = u["picked_over_default"]
        t = next((t for t in targets if bound_of(u, "picked_over_default", [t]) is not None), None)
        said = f"the pick {cell(gain) if t is None else against(gain, t.bound)}x torch's default"
        if t is not None:
            said += (
                f" (target {SYMBOLS[t.op]} {cell(t.bound)}x: {'met' if COMPARISONS[t.op](gain, t.bound) else 'missed'})"
            )
        words[(u["variant"], u["pass"])] = said
    return words


SYMBOLS = {">=": "≥", "<=": "≤", "<": "<"}  # a target's op as a figure prints it


def against(x: float, bound: float) -> str:
    """`x` to three significant digits, or as many more as it takes not to print the bound it missed or met by
    less than the rounding (1.2985 against a bound of 1.3 reads 1.299, not 1.3)."""
    digits = 3
    while digits < 8 and x != bound and float(f"{x:.{digits}g}") == bound:
        digits += 1
    return cell(x) if digits == 3 else f"{x:.{digits}g}"


def workers_speed(study, variants: list[Variant], workers: int, device: torch.device) -> pd.DataFrame:
    """The variants run as a study twice, each time in a fresh store with cold feature caches: one worker
    (this process, every core), then `workers` worker processes with their share of the cores each."""
    import os

    from bench.infra import launch, runner
    from bench.infra.files import cache_root
    from bench.infra.store import Store

    rows, real = [], cache_root()
    for n in (1, workers):
        with tempfile.TemporaryDirectory() as tmp:
            for part in ("decoded", "extracted", "fingerprints.json"):  # decoded images stay; features are cold
                if (real / part).exists():
                    os.symlink(real / part, Path(tmp) / part)
            old, os.environ["BENCH_CACHE"] = os.environ.get("BENCH_CACHE"), tmp
            try:
                executor = launch.InProcess(device) if n == 1 else launch.WorkerPool(device, n)
                store = Store(Path(tmp) / "results")
                results, seconds = timed(lambda ex=executor, st=store: runner.drive(study, variants, st, ex), device)
            finally:
                os.environ.pop("BENCH_CACHE") if old is None else os.environ.update(BENCH_CACHE=old)
        threads = torch.get_num_threads() if n == 1 else launch.threads_per_worker(n)
        failed = sum(r.state != "done" for r in results)
        rows.append({"workers": n, "threads_each": threads, "runs": len(results), "failed": failed, "wall_s": seconds})
    table = pd.DataFrame(rows)
    table["runs_per_hour"] = 3600 * table.runs / table.wall_s
    table["speedup"] = table.wall_s.iloc[0] / table.wall_s
    return table


def markdown(table: pd.DataFrame, turned_by: str | None = None, targets: list[Target] = ()) -> str:
    """`table` as a markdown table of `cell`s, numbers right-aligned; a cell one of `targets` bounds is printed as
    the target's row prints it (`against`: 1.147 under a missed >= 1.15, not 1.15). `turned_by`: one column per
    value of that column and one row per measure (a few runs of thirty measures read down, not across)."""
    from tabulate import tabulate

    texts = pd.DataFrame(
        [[text(x, bound_of(r, column, targets)) for column, x in r.items()] for r in table.to_dict("records")],
        columns=table.columns,
        index=table.index,
        dtype=object,
    )
    if turned_by:
        labels = table[turned_by].astype(str)
        if labels.duplicated().any() and "seed" in table:
            labels = labels + " (seed " + table["seed"].astype(str) + ")"
        turned = texts.drop(columns=[turned_by]).set_axis(list(labels), axis=0).T
        headers = ["", *turned.columns]
        rows = [[name, *values] for name, values in turned.iterrows()]
        align = ["left", *["right"] * len(turned.columns)]
    else:
        headers = list(table.columns)
        rows = texts.values.tolist()
        numeric = [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in table.dtypes]
        align = ["right" if n else "left" for n in numeric]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def text(x, bound: float | None) -> str:
    """A table cell: `cell(x)`, or against its target's bound where one bounds it."""
    return against(x, bound) if bound is not None and isinstance(x, float) and pd.notna(x) else cell(x)


def write_speed_report(
    table: pd.DataFrame,
    out: Path,
    command: list[str],
    targets: list[Target],
    workers: pd.DataFrame | None = None,
    made_of: str = "",
) -> tuple[str, list[tuple[str, str, bool]]]:
    """speed.csv, speed.md (the table and the study's targets, met or not) and workers.csv in `out`; returns the
    markdown table(s) and the targets judged."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "speed.csv", index=False, float_format="%.4g")
    targets = check_targets(table, targets)
    md = markdown(table.drop(columns=["device", "matmul_gflop_s"]), turned_by="variant", targets=targets)
    figure = []
    if (fig := cache_figure(table, table["device"].iloc[0], made_of)) is not None:
        save(fig, out / "speed", {"md"})
        figure = ["![feature cache against the backbone every epoch](speed.png)", "", CACHE_CAPTION, ""]
    if workers is not None:
        workers.to_csv(out / "workers.csv", index=False, float_format="%.4g")
        md += "\n\nThe same runs as a study, one worker against several (cold feature caches each time):\n\n"
        md += markdown(workers)
    lines = [
        f"Device: {table['device'].iloc[0]}; float32 matmul {table['matmul_gflop_s'].iloc[0]:.0f} GFLOP/s. "
        f"Command: `bench {' '.join(map(shlex.quote, command))}`",
        "",
        made_of,
        "",
        *figure,
        md,
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {w} | {v} | {'yes' if ok else 'NO'} |" for w, v, ok in targets]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    return md, targets


SYNTHETIC = "Synthetic tensors (no data read)."
KERNELS_CAPTION = (
    "Each pass's choices as a share of this machine's float32 matmul throughput (the dashed line), the optimizer "
    "steps in milliseconds; in colour what a run picks, and in each heading how much faster it is than torch's "
    "default (with the study's target, where it sets one). The numbers of the tables below."
)
CACHE_CAPTION = (
    "Each frozen variant's wall time with the backbone run every epoch, with the feature cache (the whole run: the "
    "one feature pass, every head epoch, evaluation; in colour, what bench does) and for one bare forward pass of "
    "the backbone over the same images. The run's feature pass has the backbone's BatchNorms folded into its "
    "convolutions and the bare pass does not, so the whole run can take less than the bare pass. The numbers of the "
    "table below."
)


def write_kernels_report(
    table: pd.DataFrame,
    out: Path,
    command: list[str],
    device: str,
    peak: float,
    targets: list[Target],
    weights: str = "",
) -> tuple[str, list[tuple[str, str, bool]]]:
    """kernels.csv and kernels.md (the timings, the picked choice's speed-ups, the study's targets judged on
    them) in `out`; returns the markdown and the targets judged."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "kernels.csv", index=False, float_format="%.4g")
    ups = speedups(table)
    judged = check_targets(ups, targets)
    md = markdown(table) + "\n\n" + markdown(ups, targets=targets)
    gains = gain_words(ups, targets)
    save(kernels_figure(table, device, peak, f"{weights} {SYNTHETIC}".strip(), gains), out / "kernels", {"md"})
    lines = [
        f"Device: {device}; float32 matmul {peak:.0f} GFLOP/s (2048 x 2048). "
        f"Command: `bench {' '.join(map(shlex.quote, command))}`",
        "",
        "![each choice's throughput](kernels.png)",
        "",
        KERNELS_CAPTION,
        "",
        f"{weights} {SYNTHETIC[:-1]}; each choice warmed up by one call, then the fastest of "
        f"{REPEATS} samples of at least {MIN_SAMPLE_S} s, the choices interleaved; a training step is counted as 3x "
        "the forward pass's FLOPs; `picked` is what a run takes: the memory format training.layout timed (or "
        "remembered), a frozen forward pass with its BatchNorms folded, the optimizer implementation training.device's "
        "rule.",
        "",
        md,
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        *(f"| {w} | {v} | {'yes' if ok else 'NO'} |" for w, v, ok in judged),
    ]
    (out / "kernels.md").write_text("\n".join(lines) + "\n")
    return md, judged
