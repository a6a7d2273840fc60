"""Runs a study: skip what is done, check weights and data up front, train the rest through
an executor (in this process, a worker pool, Ray tasks), store every result, and record
failures without stopping the grid.

`drive` is the one skeleton every launcher shares; an executor (bench.infra.launch) decides only
where `execute` runs for each pending variant.
"""

from __future__ import annotations

import errno
import importlib
import platform
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from bench import data as data_mod
from bench.config import RunConfig
from bench.infra import identity, record
from bench.infra.files import atomic_save, sweep_cache
from bench.infra.hashing import cpu_info, library_versions
from bench.infra.record import RunMetrics
from bench.infra.store import NO_SPACE, Store
from bench.models import Prebuilt, describe_weights
from bench.study import Study, Variant
from bench.training.device import device_name, out_of_memory, release_memory
from bench.training.loop import Diverged, fit
from bench.training.metrics import classification_metrics


@dataclass
class RunResult:
    variant: Variant
    state: str  # done | skipped (already done) | failed (now or before) | busy (another process has it)
    accuracy: float | None = None
    seconds: float | None = None
    error: str | None = None


@dataclass
class Hooks:
    """What the caller wants to hear about; every hook is optional."""

    progress: Callable | None = None  # progress(description, total) -> advance(n)
    run_started: Callable[[Variant], None] = lambda v: None
    run_ended: Callable[[RunResult], None] = lambda r: None
    waiting: Callable[[Variant], None] = lambda v: None  # another process holds this run: waiting for it
    planned: Callable[[list[Variant]], None] = lambda todo: None  # the runs this call will train
    epoch_ended: Callable[[Variant, dict], None] = lambda v, row: None  # a run's history row, as it is written


class Inputs:
    """Data sets loaded and weights checked in this process, kept across its runs; the backbones built to check
    the weights, each kept for the first run that uses them (models.Prebuilt)."""

    def __init__(self):
        self.datasets: dict = {}
        self.weights_checked: set[tuple[str, str]] = set()
        self.backbones: dict[tuple[str, str, int], Prebuilt] = {}

    def dataset(self, cfg) -> data_mod.Dataset:
        if cfg not in self.datasets:
            self.datasets[cfg] = data_mod.load(cfg)
        return self.datasets[cfg]

    def prebuilt(self, cfg: RunConfig) -> Prebuilt | None:
        """The backbone built for this run's architecture, weights and seed, once; None when there is none."""
        return self.backbones.pop((cfg.model.arch, cfg.model.weights, cfg.seed), None)

    def preflight(self, variants: list[Variant]) -> None:
        """Fail before any training if weights or data are missing (WeightsError / DataError)."""
        for v in variants:
            m = v.config.model
            if m.weights != "none" and (m.arch, m.weights) not in self.weights_checked:
                # a missing, truncated or mismatched file fails here, not mid-grid; the first run of these weights
                # takes the backbone built to check them instead of building it again
                built = Prebuilt(m.arch, m.weights, v.config.seed)
                self.backbones[built.key] = built
                self.weights_checked.add((m.arch, m.weights))
        for cfg in dict.fromkeys(v.config.data for v in variants):
            self.dataset(cfg)


class Executor(Protocol):
    def check(self) -> None:
        """Raise before anything is written if this executor cannot run here."""

    def run(
        self,
        study: Study,
        todo: list[Variant],
        store: Store,
        inputs: Inputs,
        hooks: Hooks,
        done: Callable[[Variant, RunResult], None],
    ) -> None:
        """Execute every variant of `todo`, calling `done(variant, result)` as each ends."""


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


def drive(
    study: Study,
    variants: list[Variant],
    store: Store,
    executor: Executor,
    *,
    hooks: Hooks | None = None,
    retry_failed: bool = False,
    rerun_stale: bool = False,
    command: str | None = None,
) -> list[RunResult]:
    """Fingerprint -> pending -> pre-flight -> record the study -> execute -> one result per variant."""
    hooks = hooks or Hooks()
    executor.check()
    store.sweep()  # what killed processes left half-written
    sweep_cache()
    variants, _ = identity.resolve(variants)  # data or weights missing: stop before anything is written
    if rerun_stale:  # runs made by other code: keep them aside, make them anew
        for run_id in dict.fromkeys(v.run_id for v in variants if store.state(v) == "done" and store.other_code(v)):
            store.set_aside(run_id)
    todo = pending(store, variants, retry_failed)
    store.check_space(todo)  # a full disk refused now, not at the first checkpoint
    if todo:
        # what the first run's data split and metrics import, imported while its images are read and its features
        # computed (reading a .tar.gz, decoding and torch's kernels leave the interpreter free much of the time)
        modules = ("sklearn.model_selection", "sklearn.metrics")
        threading.Thread(target=lambda: [importlib.import_module(m) for m in modules], daemon=True).start()
    inputs = Inputs()
    inputs.preflight(todo)
    if command is not None:
        store.record_study(study, variants, command)
    hooks.planned(todo)
    finished: dict[int, RunResult] = {}

    def done(v: Variant, result: RunResult) -> None:
        if result.state != "busy":
            finished[id(v)] = result
            hooks.run_ended(result)

    if todo:
        executor.run(study, todo, store, inputs, hooks, done)
    inputs.backbones.clear()  # those no run here took (a Ray worker builds its own): not held any longer
    # Runs another bench process was training: wait for it to let go, then take what it left.
    busy = [v for v in todo if id(v) not in finished]
    for v in busy:
        hooks.waiting(v)
        with store.claim(v.run_id, wait=True):
            pass
    again = pending(store, busy, retry_failed)
    if again:
        executor.run(study, again, store, inputs, hooks, done)
    for v in again:  # taken again by yet another process meanwhile
        finished.setdefault(id(v), RunResult(v, "busy", error="another bench process is training this run"))
    return collect(store, variants, finished)


def collect(store: Store, variants: list[Variant], finished: dict[int, RunResult]) -> list[RunResult]:
    """One result per variant; `finished` holds the runs trained in this call by id(variant), so
    a twin config under another name reads 'skipped'."""
    results = []
    for v in variants:
        if id(v) in finished:
            results.append(finished[id(v)])
        else:  # done already, a twin of a run trained here, or failed before (see --retry-failed)
            failed = store.state(v) == "failed"
            results.append(
                RunResult(
                    v, "failed" if failed else "skipped", error="failed in an earlier bench run" if failed else None
                )
            )
    return results


def execute(
    study: str,
    v: Variant,
    store: Store,
    device: torch.device,
    inputs: Inputs,
    *,
    feature_cache: bool = True,
    progress=None,
    epoch_ended: Callable[[Variant, dict], None] | None = None,
) -> RunResult:
    """Train and record one run under its lock; failures are recorded, not raised (but Ctrl-C is)."""
    with store.claim(v.run_id) as mine:
        if not mine:
            return RunResult(v, "busy", error="another bench process is training this run")
        if store.state(v) == "done":  # finished by another process while we waited our turn
            return RunResult(v, "skipped")
        try:
            return _train_and_record(study, v, store, device, inputs, feature_cache, progress, epoch_ended)
        except Diverged as e:
            store.fail(v.run_id, "diverged", str(e), epoch=e.epoch, step=e.step)
            return RunResult(v, "failed", error=str(e))
        except (torch.OutOfMemoryError, MemoryError) as e:  # GPU or host
            return _out_of_memory(store, v, e, device)
        except (KeyboardInterrupt, SystemExit):
            raise  # status stays 'running' and the checkpoint stays: the next `bench run` resumes
        except OSError as e:
            if e.errno != errno.ENOSPC:
                return _failed(store, v, e)
            msg = (
                f"no space left at {e.filename or store.run_dir(v.run_id)}: free some space; the next bench run "
                "retries this run from its last finished epoch"
            )
            try:
                store.fail(v.run_id, NO_SPACE, msg, keep_checkpoint=True)
            except OSError:  # still full: a run without a status reads as never started, never as running
                (store.run_dir(v.run_id) / record.STATUS).unlink(missing_ok=True)
            return RunResult(v, "failed", error=msg)
        except Exception as e:
            if out_of_memory(e):  # a cuDNN or cuBLAS allocation failure, an OOM inside torch.compile
                return _out_of_memory(store, v, e, device)
            return _failed(store, v, e)


def _out_of_memory(store: Store, v: Variant, e: BaseException, device: torch.device) -> RunResult:
    """Record a run that ran out of memory; what it held is handed back, so the next variant starts clean."""
    msg = f"out of memory: {e}. Try a smaller train.batch_size or input.resolution"
    store.fail(v.run_id, "out of memory", msg)
    e.__traceback__ = None  # its frames hold the failed run's tensors: dropped, they can be handed back
    release_memory(device)
    return RunResult(v, "failed", error=msg)


def _failed(store: Store, v: Variant, e: Exception) -> RunResult:
    """Record an unexpected failure with its traceback; the grid goes on."""
    store.fail(v.run_id, type(e).__name__, f"{e}\n{traceback.format_exc()}")
    return RunResult(v, "failed", error=f"{type(e).__name__}: {e}")


def _train_and_record(
    study: str,
    v: Variant,
    store: Store,
    device: torch.device,
    inputs: Inputs,
    feature_cache: bool,
    progress,
    epoch_ended,
) -> RunResult:
    store.start(v, study)  # an existing checkpoint.pt is kept: fit() resumes from it
    dataset = inputs.dataset(v.config.data)

    def on_epoch(history: list[dict]) -> None:  # history.csv grows as the run trains: it can be followed
        store.write_history(v.run_id, history)
        if epoch_ended:
            epoch_ended(v, history[-1])

    outcome = fit(
        v.config,
        dataset,
        device,
        checkpoint=store.checkpoint(v.run_id),
        feature_cache=feature_cache,
        progress=progress,
        on_epoch=on_epoch,
        prebuilt=inputs.prebuilt(v.config),
    )
    probs = torch.softmax(torch.from_numpy(outcome.test_logits), 1).numpy()
    preds = probs.argmax(1)
    y = dataset.test.y.numpy()
    predictions = pd.DataFrame({"index": np.arange(len(y)), "label": y, "pred": preds})
    for i, c in enumerate(dataset.classes):
        predictions[f"p_{c}"] = probs[:, i]
    last = outcome.history[-1]
    metrics = RunMetrics(
        test=classification_metrics(y, preds, dataset.classes),
        best_epoch=outcome.best_epoch,
        best_val_acc=outcome.history[outcome.best_epoch - 1]["val_acc"],  # the tested epoch's, also for 'last'
        final_train_acc=last["train_acc"],
        final_val_acc=last["val_acc"],
        epochs=len(outcome.history),
        train_seconds=outcome.seconds,
        train_images_per_sec=float(np.mean([h["train_images_per_sec"] for h in outcome.history])),
        feature_cache=outcome.feature_cache,
        weights=describe_weights(v.config.model.weights),
        pretrained=v.config.model.weights != "none",
        dataset=dataset.description,
        n_train=len(dataset.train),
        n_val=len(dataset.val),
        n_test=len(dataset.test),
        device=device_name(device),
        precision=outcome.precision,
        memory_format=outcome.memory_format,
        optimizer_impl=outcome.optimizer_impl,
        versions=versions(),
        hardware=hardware(device),
    )
    if sum(p.numel() for p in outcome.model.parameters()) <= record.KEEP_WEIGHTS_MAX:
        _keep_weights(store.weights(v.run_id), outcome.model)
    store.finish(v.run_id, outcome.history, metrics, predictions)
    return RunResult(v, "done", metrics.test.accuracy, outcome.seconds)


def _keep_weights(path, model: torch.nn.Module) -> None:
    """The tested weights as safetensors (tensors only: reading them back runs no code)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_save(path, lambda f: f.write(save(state)))


def versions() -> dict:
    """The python and libraries a run's numbers came from (its metrics record them)."""
    import sklearn

    return {"python": platform.python_version(), **library_versions(), "scikit-learn": sklearn.__version__}


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")


def hardware(device: torch.device) -> dict[str, str]:
    """The processor a run's numbers came from: kernels (and so the last digits) differ between CPUs and GPUs."""
    cpu, words = cpu_info()
    flags = [f for f in VECTOR_FLAGS if f in words]
    isa = torch.backends.cpu.get_cpu_capability() + (f" ({' '.join(flags)})" if flags else "")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return {"cpu": cpu, "isa": isa, "gpu": gpu}
