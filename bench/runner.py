"""Runs a study's variants: skip what is done, check weights and data up front, train the rest,
store every result, and record failures without stopping the grid."""
from __future__ import annotations

import platform
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench import data as data_mod
from bench.config import Study, Variant
from bench.metrics import classification_metrics
from bench.models import build_backbone, describe_weights
from bench.store import Store
from bench.train import Diverged, autocast_dtype, fit


@dataclass
class RunResult:
    variant: Variant
    state: str  # done | skipped (already done) | failed (now or before) | busy (another process has it)
    accuracy: float | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class Hooks:
    """What the CLI wants to hear about; every hook is optional."""
    progress: Callable | None = None  # progress(description, total) -> advance(n)
    run_started: Callable[[Variant], None] = lambda v: None
    run_ended: Callable[[RunResult], None] = lambda r: None
    data_cache: dict = field(default_factory=dict)  # loaded data sets and checked weights, by config


def pending(store: Store, variants: list[Variant], retry_failed: bool = False) -> list[Variant]:
    """Variants still to train, each run_id once (identical configs under two names train once)."""
    seen, todo = set(), []
    for v in variants:
        state = store.state(v)
        if v.run_id in seen or state == "done" or (state == "failed" and not retry_failed):
            continue
        seen.add(v.run_id)
        todo.append(v)
    return todo


def preflight(variants: list[Variant], hooks: Hooks) -> None:
    """Fail before any training if weights or data are missing (WeightsError / DataError)."""
    for weights in dict.fromkeys(v.config.model.weights for v in variants):
        if weights != "none" and ("weights", weights) not in hooks.data_cache:
            build_backbone(weights)
            hooks.data_cache["weights", weights] = True
    for cfg in dict.fromkeys(v.config.data for v in variants):
        load_data(cfg, hooks)


def load_data(cfg, hooks: Hooks) -> data_mod.Dataset:
    if cfg not in hooks.data_cache:
        hooks.data_cache[cfg] = data_mod.load(cfg)
    return hooks.data_cache[cfg]


def run_study(study: Study, variants: list[Variant], store: Store, device: torch.device, *,
              hooks: Hooks | None = None, retry_failed: bool = False, feature_cache: bool = True) -> list[RunResult]:
    hooks = hooks or Hooks()
    todo = pending(store, variants, retry_failed)
    preflight(todo, hooks)
    finished: dict[int, RunResult] = {}
    for v in todo:
        finished[id(v)] = run_one(study, v, store, device, hooks, feature_cache)
        hooks.run_ended(finished[id(v)])
    return collect(store, variants, finished)


def collect(store: Store, variants: list[Variant], finished: dict[int, RunResult]) -> list[RunResult]:
    """One result per variant, in study order; `finished` holds the runs trained in this call by
    id(variant), so a twin config under another name reads 'skipped'."""
    results = []
    for v in variants:
        if id(v) in finished:
            results.append(finished[id(v)])
        else:  # done already, a twin of a run trained here, or failed before (see --retry-failed)
            failed = store.state(v) == "failed"
            results.append(RunResult(v, "failed" if failed else "skipped", error="failed in an earlier bench run" if failed else None))
    return results


def run_one(study: Study, v: Variant, store: Store, device: torch.device, hooks: Hooks,
            feature_cache: bool = True) -> RunResult:
    with store.claim(v.run_id) as mine:
        if not mine:
            return RunResult(v, "busy", error="another bench process is training this run")
        if store.state(v) == "done":  # finished by another process while we waited our turn
            return RunResult(v, "skipped")
        store.start(v, study.name)  # an existing checkpoint.pt is kept: fit() resumes from it
        hooks.run_started(v)
        dataset = load_data(v.config.data, hooks)
        try:
            outcome = fit(v.config, dataset, device, checkpoint=store.checkpoint(v.run_id),
                          feature_cache=feature_cache, progress=hooks.progress)
        except Diverged as e:
            store.fail(v, "diverged", str(e), epoch=e.epoch, step=e.step)
            return RunResult(v, "failed", error=str(e))
        except (torch.OutOfMemoryError, MemoryError) as e:  # GPU or host
            msg = f"out of memory: {e}. Try a smaller train.batch_size or input.resolution"
            store.fail(v, "out of memory", msg)
            return RunResult(v, "failed", error=msg)
        except (KeyboardInterrupt, SystemExit):
            raise  # status stays 'running' and the checkpoint stays: the next `bench run` resumes
        except Exception as e:
            store.fail(v, type(e).__name__, f"{e}\n{traceback.format_exc()}")
            return RunResult(v, "failed", error=f"{type(e).__name__}: {e}")

        probs = torch.softmax(torch.from_numpy(outcome.test_logits), 1).numpy()
        preds = probs.argmax(1)
        y = dataset.test.y.numpy()
        predictions = pd.DataFrame({"index": np.arange(len(y)), "label": y, "pred": preds})
        for i, c in enumerate(dataset.classes):
            predictions[f"p_{c}"] = probs[:, i]
        last = outcome.history[-1]
        metrics = {
            "test": classification_metrics(y, preds, dataset.classes),
            "best_epoch": outcome.best_epoch,
            "best_val_acc": max(h["val_acc"] for h in outcome.history),
            "final_train_acc": last["train_acc"], "final_val_acc": last["val_acc"],
            "epochs": len(outcome.history),
            "train_seconds": outcome.seconds,
            "train_images_per_sec": float(np.mean([h["train_images_per_sec"] for h in outcome.history])),
            "feature_cache": outcome.feature_cache,
            "weights": describe_weights(v.config.model.weights),
            "pretrained": v.config.model.weights != "none",
            "dataset": dataset.description,
            "n_train": len(dataset.train), "n_val": len(dataset.val), "n_test": len(dataset.test),
            "device": device_name(device),
            "precision": str(autocast_dtype(v.config.train, device) or "fp32").replace("torch.", ""),
            "versions": versions(),
        }
        store.finish(v, outcome.history, metrics, predictions)
        return RunResult(v, "done", metrics["test"]["accuracy"], outcome.seconds)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    import sklearn
    import timm
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "scikit-learn": sklearn.__version__}
