"""Launchers that train a study's runs side by side: N local worker processes (one per GPU), or
Ray tasks spread over a cluster. Both reuse runner.pending/preflight/run_one and the results
store as they are, so skip, resume and the per-run locks work the same, and a study started by
one launcher can be continued by another.

Runs start out of sight, on the workers: `hooks.run_started` and `hooks.run_ended` are called
together as each run finishes, and the per-epoch bars (`hooks.progress`) stay unused.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from bench.config import Study, UsageError, Variant
from bench.runner import Hooks, RunResult, collect, pending, preflight, run_one
from bench.store import Store


class LaunchError(UsageError):
    """A launcher that cannot start (Ray missing, more GPUs asked than the cluster has): exit 2."""


# ---- local: one worker process per GPU -----------------------------------------------------

_worker: dict = {}  # this worker process's device and loaded data sets, kept across its runs


def _start_worker(slots, gpus: list[str], threads: int) -> None:
    slot = slots.get()  # this worker's index, 0..N-1, handed out once per process
    if gpus:  # set before this process first touches CUDA, which reads the variable once
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    torch.set_num_threads(threads)
    _worker.update(device=torch.device("cuda" if gpus else "cpu"), hooks=Hooks())


def _train_local(study: Study, v: Variant, root: Path, feature_cache: bool) -> RunResult:
    return run_one(study, v, Store(root), _worker["device"], _worker["hooks"], feature_cache)


def run_parallel(study: Study, variants: list[Variant], store: Store, device: torch.device, workers: int, *,
                 hooks: Hooks | None = None, retry_failed: bool = False, feature_cache: bool = True) -> list[RunResult]:
    """Train the pending runs in `workers` spawned processes, worker i on GPU i (or the CPU)."""
    hooks = hooks or Hooks()
    todo = pending(store, variants, retry_failed)
    preflight(todo, hooks)
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    slots = ctx.Queue()
    for i in range(workers):
        slots.put(i)
    gpus = []
    if device.type == "cuda":  # the GPUs this job was given (Slurm sets e.g. "2,3"); more workers than GPUs share them
        gpus = (os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(torch.cuda.device_count())))).split(",")
    threads = max(1, (os.cpu_count() or 1) // workers)  # cores shared out, not oversubscribed
    finished: dict[int, RunResult] = {}
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(slots, gpus, threads))
    try:
        futures = {pool.submit(_train_local, study, v, store.root, feature_cache): v for v in todo}
        for future in as_completed(futures):
            v = futures[future]
            try:
                finished[id(v)] = future.result()
            except Exception as e:  # a worker died (killed, out of host memory), which breaks the whole pool
                finished[id(v)] = RunResult(v, "failed", error=f"{type(e).__name__}: {e} The run is left as it "
                                            "was and resumes from its last epoch on the next `bench run`.")
            hooks.run_started(v)
            hooks.run_ended(finished[id(v)])
    except BaseException:  # Ctrl-C, SIGTERM: stop the workers now; their runs resume next time
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return collect(store, variants, finished)


# ---- Ray: one task per run, anywhere on the cluster ----------------------------------------

def _train_ray(study: Study, v: Variant, root: str, feature_cache: bool, threads: int) -> RunResult:
    import ray

    # Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs. Workers are reused between tasks, so the
    # data sets they loaded stay in _worker for the next run on the same worker.
    device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
    torch.set_num_threads(threads)
    hooks = _worker.setdefault("hooks", Hooks())
    return run_one(study, v, Store(root), device, hooks, feature_cache)


def require_ray():
    try:
        import ray
    except ImportError:
        raise LaunchError("--launcher", ["--launcher ray needs Ray, an optional extra: pip install -e '.[ray]'"]) from None
    return ray


def run_ray(study: Study, variants: list[Variant], store: Store, *, address: str | None = None,
            gpus_per_run: float | None = None, cpus_per_run: int = 1, max_retries: int = 2,
            hooks: Hooks | None = None, retry_failed: bool = False, feature_cache: bool = True) -> list[RunResult]:
    """Train the pending runs as Ray tasks. `store.root` must be a path every node sees.

    A task whose worker dies is retried up to `max_retries` times (resuming from the run's
    epoch checkpoint); after that the run is recorded as failed and the others go on.
    """
    ray = require_ray()
    hooks = hooks or Hooks()
    todo = pending(store, variants, retry_failed)
    preflight(todo, hooks)
    if not todo:  # nothing to train: no cluster to start or join
        return collect(store, variants, {})
    started_here = not ray.is_initialized()
    if started_here:  # address None starts a one-machine cluster; 'auto' joins the one `ray start` made
        on_term = signal.getsignal(signal.SIGTERM)
        ray.init(address=address, log_to_driver=False)  # workers' output stays in Ray's session logs
        signal.signal(signal.SIGTERM, on_term)  # Ray's own handler would abort the driver: keep ours (exit 130)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus_per_run is None:
            gpus_per_run = 1 if gpus else 0
        if gpus_per_run > gpus:
            raise LaunchError("--gpus-per-run", [f"--gpus-per-run {gpus_per_run:g}, but the Ray cluster has {gpus:g} GPUs"])
        task = ray.remote(_train_ray).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries)
        refs = {task.remote(study, v, str(store.root.resolve()), feature_cache, cpus_per_run): v for v in todo}
        finished: dict[int, RunResult] = {}
        waiting = list(refs)
        try:
            while waiting:
                (ref,), waiting = ray.wait(waiting, num_returns=1)
                v = refs[ref]
                try:
                    finished[id(v)] = ray.get(ref)
                except ray.exceptions.RayError as e:  # retries used up, or the task itself raised
                    finished[id(v)] = record_lost(store, v, e)
                hooks.run_started(v)
                hooks.run_ended(finished[id(v)])
        except BaseException:  # Ctrl-C, SIGTERM: kill the tasks; their runs resume next time
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()
    return collect(store, variants, finished)


def record_lost(store: Store, v: Variant, error: Exception) -> RunResult:
    """Record a run whose Ray task failed for good; under its lock, so a live attempt is never overwritten."""
    import ray

    cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
    kind = type(cause).__name__ if cause else "worker died"
    message = f"{kind}: {str(cause or error).strip().splitlines()[0]}"
    with store.claim(v.run_id) as mine:
        if mine and store.state(v) != "done":
            store.fail(v, kind, str(error))
    return RunResult(v, "failed", error=message)
