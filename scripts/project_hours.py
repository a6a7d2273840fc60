"""Project a study's compute time from rates `bench speed` measured on the same machine.

Each run's work is counted as `bench list` counts it (bench.cost: multiply-adds of the forward pass per
stage, backward twice the forward of the trainable stages, a cacheable frozen backbone or a probe once over
every image). Two rates turn work into time, both from speed.csv: the forward rate of a frozen variant's
one pass over the images (forward_pass_s), and the training rate of a fine-tuning variant through the
pipeline (train_img_s). They were measured on ResNet-50 at the speed study's resolution; other depths and
resolutions are assumed to run at the same multiply-adds per second, which is a projection, not a timing.

    python scripts/project_hours.py ablations.yaml --speed reports/speed-gpu/speed.csv
"""

from __future__ import annotations

import argparse

import pandas as pd

from bench import cost, features
from bench.study import load_study_file


def rates(speed: pd.DataFrame) -> tuple[float, float]:
    """(forward, training) multiply-adds per second from the measured rows (ResNet-50)."""
    frozen = speed.dropna(subset=["forward_pass_s"]).iloc[0]
    images = frozen.n_train + frozen.n_val + frozen.n_test
    forward = images * cost.stage_macs("resnet50", int(frozen.resolution))["total"] / frozen.forward_pass_s
    tuned = speed[speed.freeze == "none"].iloc[0]
    training = tuned.train_img_s * 3 * cost.stage_macs("resnet50", int(tuned.resolution))["total"]
    return forward, training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="the study file to project, e.g. ablations.yaml")
    ap.add_argument("--speed", required=True, help="speed.csv written by bench speed on the machine to project for")
    args = ap.parse_args()
    speed = pd.read_csv(args.speed)
    forward, training = rates(speed)
    print(f"device: {speed.device.iloc[0]}")
    print(f"measured: forward {forward / 1e12:.2f} TMAC/s, training {training / 1e12:.2f} TMAC/s (ResNet-50)")
    rows = []
    for v in load_study_file(args.study).variants:
        work = cost.estimate_tflops(v.config) * 1e12
        once = features.cacheable(v.config) or v.config.model.head.kind != "mlp"
        rows.append({"variant": v.name, "seed": v.seed, "hours": work / (forward if once else training) / 3600})
    table = pd.DataFrame(rows)
    per_variant = table.groupby("variant", sort=False).hours.sum().sort_values(ascending=False)
    print(per_variant.head(10).to_string(float_format=lambda h: f"{h:.3f} h"))
    print(f"{args.study}: {len(table)} runs, projected {table.hours.sum():.2f} hours on this device")


if __name__ == "__main__":
    main()
