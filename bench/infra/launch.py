"""Executors: where `runner.execute` runs for each pending variant. `runner.drive` is the same
for all of them, so skip, resume and the per-run locks work alike, and a study started by one
executor can be continued by another.

  InProcess    one run after another in this process (per-epoch progress bars)
  WorkerPool   N spawned worker processes, worker i on GPU i, or the CPU cores shared out
  RayTasks     one Ray task per run, anywhere on a cluster (the optional `ray` extra)

Runs in workers start out of sight: `hooks.run_started` is called as each one ends, and the
per-epoch bars stay unused.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.infra.runner import Hooks, Inputs, RunResult, execute
from bench.infra.store import Store
from bench.study import Study, Variant


class LaunchError(Exception):
    """An executor that cannot start here (Ray missing, more GPUs asked than the cluster has)."""


@dataclass
class InProcess:
    device: torch.device
    feature_cache: bool = True

    def check(self) -> None:
        pass

    def run(self, study: Study, todo: list[Variant], store: Store, inputs: Inputs, hooks: Hooks, done) -> None:
        for v in todo:
            hooks.run_started(v)
            done(
                v,
                execute(
                    study.name,
                    v,
                    store,
                    self.device,
                    inputs,
                    feature_cache=self.feature_cache,
                    progress=hooks.progress,
                    epoch_ended=hooks.epoch_ended,
                ),
            )


# ---- local worker processes ------------------------------------------------------------------

_worker: dict = {}  # this worker process's device and loaded inputs, kept across its runs


def cores() -> int:
    """The CPU cores this process may run on (a container's or taskset's share, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Each of `workers` processes gets its share of the cores: torch's threads collapse when oversubscribed
    (a small run took 213 s beside another torch process using every core, 15 s alone)."""
    return max(1, cores() // workers)


def _start_worker(slots, gpus: list[str], threads: int) -> None:
    slot = slots.get()  # this worker's index, 0..N-1, handed out once per process
    if gpus:  # set before this process first touches CUDA, which reads the variable once
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    torch.set_num_threads(threads)
    try:  # a new process has not started its inter-op pool yet; one thread there keeps to the share
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    _worker.update(device=torch.device("cuda" if gpus else "cpu"), inputs=Inputs())


def _execute_in_worker(study: str, v: Variant, root: Path, feature_cache: bool) -> RunResult:
    return execute(study, v, Store(root), _worker["device"], _worker["inputs"], feature_cache=feature_cache)


@dataclass
class WorkerPool:
    device: torch.device
    workers: int
    feature_cache: bool = True

    def check(self) -> None:
        pass

    def run(self, study: Study, todo: list[Variant], store: Store, inputs: Inputs, hooks: Hooks, done) -> None:
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
        slots = ctx.Queue()
        for i in range(self.workers):
            slots.put(i)
        gpus = []
        if self.device.type == "cuda":  # the GPUs this job was given (Slurm sets e.g. "2,3"); extra workers share
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            gpus = (visible or ",".join(map(str, range(torch.cuda.device_count())))).split(",")
        threads = threads_per_worker(self.workers)  # cores shared out, not oversubscribed
        pool = ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_start_worker, initargs=(slots, gpus, threads)
        )
        try:
            futures = {pool.submit(_execute_in_worker, study.name, v, store.root, self.feature_cache): v for v in todo}
            for future in as_completed(futures):
                v = futures[future]
                try:
                    result = future.result()
                except Exception as e:  # a worker died (killed, out of host memory), which breaks the whole pool
                    result = RunResult(
                        v,
                        "failed",
                        error=f"{type(e).__name__}: {e} The run is left as it was and "
                        "resumes from its last epoch on the next `bench run`.",
                    )
                hooks.run_started(v)
                done(v, result)
        except BaseException:  # Ctrl-C, SIGTERM: stop the workers now; their runs resume next time
            for child in multiprocessing.active_children():
                child.terminate()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ---- Ray: one task per run, anywhere on the cluster ------------------------------------------


def _execute_on_ray(study: str, v: Variant, root: str, feature_cache: bool, threads: int) -> RunResult:
    import ray

    # Ray sets CUDA_VISIBLE_DEVICES to the task's GPUs. Workers are reused between tasks, so the
    # data sets they loaded stay in _worker for the next run on the same worker.
    device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
    torch.set_num_threads(threads)
    inputs = _worker.setdefault("inputs", Inputs())
    return execute(study, v, Store(root), device, inputs, feature_cache=feature_cache)


def require_ray():
    try:
        import ray
    except ImportError:
        raise LaunchError("the Ray launcher needs Ray, an optional extra: pip install -e '.[ray]'") from None
    return ray


@dataclass
class RayTasks:
    """Pending runs as Ray tasks; the store's root must be a path every node sees.

    A task whose worker dies is retried up to `max_retries` times (resuming from the run's
    epoch checkpoint); after that the run is recorded as failed and the others go on.
    """

    address: str | None = None  # None starts a one-machine cluster; 'auto' joins the one `ray start` made
    gpus_per_run: float | None = None  # default: 1 if the cluster has GPUs, else 0
    cpus_per_run: int = 1
    max_retries: int = 2
    feature_cache: bool = True

    def check(self) -> None:
        require_ray()

    def run(self, study: Study, todo: list[Variant], store: Store, inputs: Inputs, hooks: Hooks, done) -> None:
        ray = require_ray()
        started_here = not ray.is_initialized()
        if started_here:
            on_term = signal.getsignal(signal.SIGTERM)
            ray.init(address=self.address, log_to_driver=False)  # workers' output stays in Ray's session logs
            signal.signal(signal.SIGTERM, on_term)  # Ray's own handler would abort the driver: keep ours
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            per_run = (1 if gpus else 0) if self.gpus_per_run is None else self.gpus_per_run
            if per_run > gpus:
                raise LaunchError(f"{per_run:g} GPUs per run asked, but the Ray cluster has {gpus:g} GPUs")
            task = ray.remote(_execute_on_ray).options(
                num_cpus=self.cpus_per_run, num_gpus=per_run, max_retries=self.max_retries
            )
            root = str(store.root.resolve())
            refs = {task.remote(study.name, v, root, self.feature_cache, self.cpus_per_run): v for v in todo}
            waiting = list(refs)
            try:
                while waiting:
                    (ref,), waiting = ray.wait(waiting, num_returns=1)
                    v = refs[ref]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:  # retries used up, or the task itself raised
                        result = record_lost(store, v, e)
                    hooks.run_started(v)
                    done(v, result)
            except BaseException:  # Ctrl-C, SIGTERM: kill the tasks; their runs resume next time
                for ref in waiting:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started_here:
                ray.shutdown()


def record_lost(store: Store, v: Variant, error: Exception) -> RunResult:
    """Record a run whose Ray task failed for good; under its lock, so a live attempt is never overwritten."""
    import ray

    cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
    kind = type(cause).__name__ if cause else "worker died"
    message = f"{kind}: {str(cause or error).strip().splitlines()[0]}"
    with store.claim(v.run_id) as mine:
        if mine and store.state(v) != "done":
            store.fail(v.run_id, kind, str(error))
    return RunResult(v, "failed", error=message)
