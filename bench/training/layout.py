"""The network's memory format, chosen by timing both on this machine.

channels_last (NHWC) makes ResNet-50's forward pass 2x faster at 224 px on an AVX-512 CPU, slower at 64 px, and
He et al.'s ResNet-20 at 32 px trains faster in it on one CPU and slower on another: no fixed rule fits every
processor, network and resolution. So on the CPU bench times one pass of the run's own network on a synthetic
batch of the run's size in each layout, once per processor, thread count, torch version, network, resolution,
batch size and pass, and remembers the answer (`<cache>/layouts.json`; `bench cache clear layouts.json` forgets
it). channels_last is taken only when it is MARGIN faster: a near tie keeps torch's default, so noise never flips
a choice. The pass timed is the one the run spends its time in: a forward pass without gradients for a frozen
backbone (the feature pass and evaluation), forward and backward for a network that trains. The timing runs on a
copy of the network under a forked random state, so the run's weights, BatchNorm statistics and random numbers
are what they would be without it. On CUDA: channels_last (tensor-core convolutions in bf16 and fp16 want it).

A frozen backbone's pass also runs in another form of the same function: `folded`, its BatchNorms folded into the
convolutions before them (a frozen BatchNorm is a constant affine map); the forward pass is timed in that form.

`bench speed --kernels` times both layouts again beside the pick (docs/measured.md).
"""

from __future__ import annotations

import copy
import functools
import time

import torch

from bench.config import RunConfig
from bench.infra.files import cache_root, read_memo, try_lock, write_json
from bench.training.device import autocast, out_of_memory, release_memory

MARGIN = 1.03  # channels_last must be this much faster than the default to be taken
REPEATS = 2  # timed samples per layout, after one call that warms up and sizes them
MIN_SAMPLE_S = 0.1  # a sample runs the pass as often as it takes to last this long: shorter ones are noisy
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """The median of `repeats` timed calls after `warmup` untimed ones (the median: one slow call from another
    process does not move it)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def pass_timed(cfg: RunConfig) -> str:
    """'forward' for a frozen backbone (the run's time goes to the feature pass and evaluation), else 'train'."""
    return "forward" if cfg.model.freeze == "backbone" else "train"


def choose(net: torch.nn.Module, cfg: RunConfig, device: torch.device, dtype: torch.dtype | None, what=None):
    """The memory format for `net` (the run's classifier, in torch's default layout) on `device`: measured on the
    CPU (remembered), channels_last on CUDA, the default elsewhere. `what`: the pass to time (pass_timed's)."""
    if device.type == "cuda":
        return torch.channels_last
    if device.type != "cpu":
        return torch.contiguous_format
    what = what or pass_timed(cfg)
    key = layout_key(cfg, what, dtype)
    path = cache_root() / "layouts.json"
    times = read_memo(path).get(key)
    if not _valid(times):
        with try_lock(path.with_suffix(".lock"), wait=True):  # two processes starting at once time it once
            times = read_memo(path).get(key)
            if not _valid(times):
                try:
                    times = measure(net, cfg.train.batch_size, cfg.input.resolution, device, dtype, what)
                except Exception as e:  # two copies of the network did not fit: the run itself may still
                    if not out_of_memory(e):
                        raise
                    release_memory(device)
                    return torch.contiguous_format  # torch's default, not remembered: timed again next time
                write_json(path, {**read_memo(path), key: times})
    return pick(times)


def pick(times: dict[str, float]) -> torch.memory_format:
    """channels_last where it took at most 1/MARGIN of the default's time, else the default."""
    return torch.channels_last if times["contiguous"] >= MARGIN * times["channels_last"] else torch.contiguous_format


def layout_key(cfg: RunConfig, what: str, dtype: torch.dtype | None) -> str:
    """What a measured choice depends on: the processor, threads and torch, the network, resolution and pass."""
    from bench.infra.hashing import cpu_info

    m = cfg.model
    parts = [
        cpu_info()[0],
        f"{torch.get_num_threads()} threads",
        f"torch {torch.__version__}",
        m.arch + (f" freeze={m.freeze}" if what == "train" else ""),  # what trains; a head's cost is small
        f"{cfg.input.resolution}px batch {cfg.train.batch_size}",
        "forward, BatchNorm folded" if what == "forward" else what,  # unfolded timings (older memos) not reused
        str(dtype or "fp32").replace("torch.", ""),
    ]
    return " | ".join(parts)


def measure(net: torch.nn.Module, batch: int, resolution: int, device: torch.device, dtype, what: str) -> dict:
    """{layout: seconds per batch} for `what` ('forward' or 'train') on a copy of `net`, at the run's batch size
    (a small batch misleads: CIFAR ResNet-20 ties at 8 images and is 1.3x faster in channels_last at 128)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(batch, 3, resolution, resolution, device=device)  # as the run's input: NCHW
        calls = {}
        for name, fmt in FORMATS.items():
            net_copy = copy.deepcopy(net).to(memory_format=fmt)
            if what == "forward":  # a frozen pass runs with its BatchNorms folded (features.split_features)
                net_copy = folded(net_copy)
            calls[name] = one_pass(net_copy, x, device, dtype, what)
        return interleaved(calls, device)


def interleaved(calls: dict, device: torch.device, repeats: int = REPEATS) -> dict[str, float]:
    """{name: seconds per call} of each of `calls`: one call each warms up (memory, kernel selection) and sizes
    its samples (as many calls as last MIN_SAMPLE_S); then `repeats` rounds of one sample per call, interleaved so
    that a slower spell of the machine falls on all of them; the fastest sample of each (another process only
    ever slows a sample down)."""
    first = {name: seconds_per_call(call, device, 0, 1) for name, call in calls.items()}
    n = {name: max(1, round(MIN_SAMPLE_S / s)) for name, s in first.items()}
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            sample = seconds_per_call(functools.partial(repeat, call, n[name]), device, 0, 1) / n[name]
            best[name] = min(best[name], sample)
    return best


def repeat(call, n: int) -> None:
    for _ in range(n):
        call()


def one_pass(model: torch.nn.Module, x: torch.Tensor, device: torch.device, dtype, what: str):
    """A call that runs `what` once: a forward pass in eval mode without gradients, or forward and backward in
    train mode (as far back as parameters train)."""
    model.train(what == "train")

    def call():
        with torch.set_grad_enabled(what == "train"), autocast(device, dtype):
            loss = model(x).float().square().mean()
        if loss.requires_grad:
            loss.backward()

    return call


def folded(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of `net` (frozen: put in eval mode here) for passes without gradients, each BatchNorm folded into the
    convolution before it (torch.fx's fuse): the same function to float rounding, one pass less over every
    activation (3-8% faster forward passes for ResNet-50 and ResNet-20 on the 2-core EPYC here, docs/measured.md), in
    `net`'s memory format. `net` itself where there is nothing to fold or FX cannot trace it (some timm models)."""
    from torch.fx.experimental.optimization import fuse

    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    if not any(isinstance(m, norms) for m in net.modules()):
        return net.eval()  # nothing to fold (a ViT): no copy
    try:
        out = fuse(net.eval())
    except Exception:  # noqa: BLE001  symbolic tracing refuses data-dependent control flow and some timm models
        return net
    return out.to(memory_format=torch.channels_last) if format_of(net) == "channels_last" else out


def format_of(net: torch.nn.Module) -> str:
    """'channels_last' or 'contiguous': the layout of `net`'s first convolution weight wider than 1x1 (where
    the two differ); 'contiguous' for a network without one."""
    for p in net.parameters():
        if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1:
            return "contiguous" if p.is_contiguous() else "channels_last"
    return "contiguous"


def _valid(times) -> bool:
    return isinstance(times, dict) and all(isinstance(times.get(k), (int, float)) and times[k] > 0 for k in FORMATS)
