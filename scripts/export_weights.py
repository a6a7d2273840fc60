"""Export a finished run's trained backbone as a bench weights file, with its provenance beside it.

    python scripts/export_weights.py RESULTS RUN_ID OUT [--checkpoint PATH] [--data-dir DIR]

writes OUT.safetensors (the backbone's state dict: `model.weights: file:OUT.safetensors` loads it) and
OUT.json (study, run id, data and weights fingerprints, test accuracy, code, machine, the command that
re-makes it). The weights come from the run's weights.safetensors (kept for small networks), or from a copy
of its last checkpoint.pt for a run with train.select: last. Before anything is written, the network is
rebuilt from the run's own configuration, evaluated on the run's test images, and its predictions must
equal the run's predictions.csv: the file holds exactly the weights that made the recorded numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from bench import data as data_mod
from bench.config import RunConfig
from bench.infra.files import write_json
from bench.infra.hashing import cpu_info
from bench.infra.identity import code_versions
from bench.infra.record import METRICS, PREDICTIONS, RunHeader, RunMetrics
from bench.infra.store import Store
from bench.models import build_model
from bench.training import transforms
from bench.training.features import predict


def trained_state(store: Store, run_id: str, checkpoint: Path | None, cfg: RunConfig) -> dict:
    if checkpoint is None:
        path = store.weights(run_id)
        if not path.exists():
            sys.exit(f"{path} does not exist: pass --checkpoint with a copy of the run's last checkpoint.pt")
        return load_file(path)
    if cfg.train.select != "last":
        sys.exit("a checkpoint holds the last epoch's weights: only a run with train.select: last tested those")
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["net"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("run_id")
    ap.add_argument("out", type=Path, help="path without suffix, e.g. bench/weights/cifar_resnet20-cifar10-jpeg")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data-dir", help="where the run's images lie now (default: the path it recorded)")
    ap.add_argument(
        "--title", help="the data set in words, e.g. 'CIFAR-10 (JPEG copy)' (default: the run's description)"
    )
    args = ap.parse_args()

    store = Store(args.results)
    run_dir = store.run_dir(args.run_id)
    header = RunHeader.model_validate_json((run_dir / "config.json").read_text())
    metrics = RunMetrics.model_validate_json((run_dir / METRICS).read_text())
    cfg = RunConfig.model_validate(header.config)
    if args.data_dir:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": args.data_dir})})

    data = data_mod.load(cfg.data)
    model = build_model(cfg.model, len(data.classes))
    model.load_state_dict(trained_state(store, args.run_id, args.checkpoint, cfg))
    model.eval()
    device = torch.device("cpu")
    logits = predict(model, data.test.x, transforms.for_run(cfg, data, False), 256, device, None)
    preds = logits.argmax(1).numpy()
    recorded = pd.read_csv(run_dir / PREDICTIONS)["pred"].to_numpy()
    agree = float(np.mean(preds == recorded))
    accuracy = float(np.mean(preds == data.test.y.numpy()))
    print(f"re-evaluated: test accuracy {accuracy:.4f} (recorded {metrics.test.accuracy:.4f}), {agree:.2%} agree")
    if agree < 1.0:
        sys.exit("the weights do not reproduce the run's predictions: not exported")

    backbone = {
        k.removeprefix("backbone."): v.contiguous() for k, v in model.state_dict().items() if k.startswith("backbone.")
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    weights_path = args.out.with_suffix(".safetensors")
    save_file(backbone, weights_path, metadata={"arch": cfg.model.arch, "run_id": args.run_id})
    study = json.loads((store.study_file(header.study)).read_text()) if store.study_file(header.study).exists() else {}
    provenance = {
        "weights": weights_path.name,
        "sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "arch": cfg.model.arch,
        "what": f"the backbone (no head) of {cfg.model.arch} trained from scratch by bench on "
        + (args.title or metrics.dataset),
        "study": header.study,
        "study_file": study.get("file", ""),
        "variant": header.variant,
        "seed": header.seed,
        "run_id": args.run_id,
        "data_fingerprint": (header.identity or {}).get("fingerprints", {}).get("data"),
        "dataset": metrics.dataset,
        "n_train": metrics.n_train,
        "n_val": metrics.n_val,
        "n_test": metrics.n_test,
        "test_accuracy": metrics.test.accuracy,
        "input": cfg.input.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "made_by": header.code,
        "exported_with": code_versions(),
        "device": metrics.device,
        "exported_on": cpu_info()[0],
        "remake": (
            f"bench run {study.get('file') or 'STUDY.yaml'} --only {header.variant} && "
            f"python scripts/export_weights.py results {args.run_id} {args.out}"
            + (f" --title {shlex.quote(args.title)}" if args.title else "")
        ),
    }
    write_json(args.out.with_suffix(".json"), provenance)
    print(f"wrote {weights_path} ({weights_path.stat().st_size / 1e6:.1f} MB) and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
