"""Project studies' compute time in GPU-hours from rates measured on the same machine.

Each run's work is counted as `bench list` counts it (bench.cost: multiply-adds of the forward pass per
stage, backward twice the forward of the trainable stages, a cacheable frozen backbone or a probe once over
every image). Rates turn work into time:
  - ImageNet-size networks: the forward rate of a frozen variant's one pass over the images (forward_pass_s)
    and the training rate of a fine-tuning variant through the pipeline (train_img_s), both from speed.csv
    (ResNet-50 at the speed study's resolution; other depths and resolutions are assumed to run at the same
    multiply-adds per second);
  - He et al.'s CIFAR networks (cifar_*, small and bound by kernel launches, far below ResNet-50's rate):
    the seconds per multiply-add of a timed run of the paper's recipe (--timed: its results store; a warm
    epoch, validation included), for every depth. Without --timed they get ResNet-50's rate, which
    underestimates their time.
It is a projection, not a timing.

    python scripts/project_hours.py ablations.yaml studies/paper-cifar10.yaml \\
        --speed reports/speed-gpu/speed.csv --timed reports/speed-gpu/paper-timing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from bench import cost
from bench.config import CIFAR_ARCHS, RunConfig, features_cacheable
from bench.study import load_study_file


def rates(speed: pd.DataFrame) -> tuple[float, float]:
    """(forward, training) multiply-adds per second from the measured rows (ResNet-50)."""
    frozen = speed.dropna(subset=["forward_pass_s"]).iloc[0]
    images = frozen.n_train + frozen.n_val + frozen.n_test
    forward = images * cost.forward_macs("resnet50", int(frozen.resolution)) / frozen.forward_pass_s
    tuned = speed[speed.freeze == "none"].iloc[0]
    training = tuned.train_img_s * 3 * cost.forward_macs("resnet50", int(tuned.resolution))
    return forward, training


def cifar_rate(store: Path) -> tuple[float, str]:
    """Multiply-adds per second of the timed CIFAR-network run(s) under `store`: the work of one epoch (bench.cost,
    training and validation) over the median seconds of its epochs after the first (which warms up)."""
    out = []
    for config in sorted(store.glob("**/runs/*/config.json")):
        history = pd.read_csv(config.parent / "history.csv") if (config.parent / "history.csv").exists() else None
        if history is None or history.empty:
            continue
        cfg = RunConfig.model_validate(json.loads(config.read_text())["config"])
        if cfg.model.arch not in CIFAR_ARCHS or cfg.model.freeze != "none":  # a run that trains the whole network
            continue
        # one epoch's work: two epochs' less one's (what runs once, the test pass, cancels out)
        work = (cost.estimate_tflops(epochs(cfg, 2)) - cost.estimate_tflops(epochs(cfg, 1))) * 1e12
        seconds = history.seconds.iloc[1:].median() if len(history) > 1 else history.seconds.iloc[0]
        out.append((work / seconds, f"{cfg.model.arch}, {int(history.steps.iloc[-1])} steps, {seconds:.1f} s/epoch"))
    if not out:
        raise SystemExit(f"--timed {store}: no run of a cifar_* network with freeze none and a history.csv under it")
    return out[0]


def epochs(cfg: RunConfig, n: int) -> RunConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": n})})  # for counting only


def project(study: str, forward: float, training: float, cifar: float | None) -> pd.DataFrame:
    rows = []
    for v in load_study_file(study).variants:
        work = cost.estimate_tflops(v.config) * 1e12
        once = features_cacheable(v.config) or v.config.model.head.kind != "mlp"
        rate = cifar if v.config.model.arch in CIFAR_ARCHS and cifar else forward if once else training
        rows.append({"variant": v.name, "seed": v.seed, "hours": work / rate / 3600})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="study files to project, e.g. ablations.yaml studies/paper-cifar10.yaml")
    ap.add_argument("--speed", required=True, help="speed.csv written by bench speed on the machine to project for")
    ap.add_argument("--timed", type=Path, help="results store of a timed run of He et al.'s recipe on that machine")
    args = ap.parse_args()
    speed = pd.read_csv(args.speed)
    forward, training = rates(speed)
    print(f"device: {speed.device.iloc[0]}")
    print(f"measured: forward {forward / 1e12:.2f} TMAC/s, training {training / 1e12:.2f} TMAC/s (ResNet-50)")
    cifar = None
    if args.timed:
        cifar, what = cifar_rate(args.timed)
        print(f"measured: {cifar / 1e9:.1f} GMAC/s training He et al.'s CIFAR networks ({what})")
    total = 0.0
    for study in args.studies:
        if not Path(study).exists():
            print(f"{study}: not found, left out")
            continue
        table = project(study, forward, training, cifar)
        per_variant = table.groupby("variant", sort=False).hours.sum().sort_values(ascending=False)
        print(per_variant.head(10).to_string(float_format=lambda h: f"{h:.3f} h"))
        print(f"{study}: {len(table)} runs, projected {table.hours.sum():.2f} GPU-hours on this device")
        total += table.hours.sum()
    print(f"all: projected {total:.2f} GPU-hours")


if __name__ == "__main__":
    main()
