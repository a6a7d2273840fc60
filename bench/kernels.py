"""`bench speed --kernels`: the choices a run makes, measured side by side on this machine at the run's batch.

For each variant's network, on synthetic tensors (the data pipeline left out): one forward pass (eval mode, no
gradients: the frozen-feature pass and evaluation) and one training step (forward, backward, optimizer step),
each in torch's default layout and in channels_last (the forward pass also with its BatchNorms folded into the
convolutions, as a frozen backbone's feature pass runs); then the optimizer step alone in torch's three
implementations (for-loop, foreach, fused). Every pass is also given in GFLOP/s and as a share of the machine's
own float32 matmul throughput, the nearest thing to its peak that torch reaches, so a table says how close to
the hardware each path runs. `picked` marks what a run chooses: the memory format training.layout timed (or
remembers), the optimizer implementation training.device's rule; a pick that is slower here is visible.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from bench.cost import forward_macs
from bench.models import build_model
from bench.study import Variant
from bench.training import layout
from bench.training.device import autocast, autocast_dtype, format_name, optimizer_impl, to_format
from bench.training.layout import interleaved, seconds_per_call

FORMATS = (torch.contiguous_format, torch.channels_last)
BACKWARD_COST = 2  # a backward pass costs about twice the forward's multiply-adds (gradients of inputs and weights)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of an n x n float32 matmul (2 n^3 FLOPs) on `device`: what the machine's BLAS reaches."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    return 2 * n**3 / seconds_per_call(lambda: a @ b, device, 1, repeats) / 1e9


# Each choice: one call that warms up and sizes its samples, then the fastest of REPEATS samples, interleaved
REPEATS = 5


def kernel_rows(v: Variant, device: torch.device, peak: float, repeats: int = REPEATS) -> list[dict]:
    """The rows of one variant: forward and training step per memory format, the optimizer step per
    implementation; images/s, GFLOP/s and percent of `peak` (matmul GFLOP/s)."""
    cfg = v.config
    tc, r, bs = cfg.train, cfg.input.resolution, cfg.train.batch_size
    macs = forward_macs(cfg.model.arch, r)  # the backbone's forward multiply-adds per image
    dtype = autocast_dtype(tc, device)
    whole = cfg.model_copy(update={"model": cfg.model.model_copy(update={"freeze": "none"})})
    default_net = network(v, torch.contiguous_format, device)
    picked_fmt = {  # what a run picks: layout.choose, timed at its small batch (or remembered)
        what: layout.choose(default_net, whole, device, dtype, what) for what in ("forward", "train")
    }
    base = {"variant": v.name, "arch": cfg.model.arch, "resolution": r, "batch": bs, "precision": str(dtype or "fp32")}
    rows = []

    def row(what: str, choice: str, seconds: float, flops: float, picked: bool) -> dict:
        gflops = flops / seconds / 1e9
        return {
            **base,
            "pass": what,
            "choice": choice,
            "ms": 1000 * seconds,
            "img_s": bs / seconds,
            "gflop_s": gflops,
            "pct_of_matmul": 100 * gflops / peak,
            "picked": picked,
        }

    default_impl = "foreach" if device.type == "cuda" else "for-loop"  # what torch picks when not told
    picked_impl = "fused" if optimizer_impl(tc.optimizer, device) == "fused" else default_impl
    models = {format_name(fmt): network(v, fmt, device) for fmt in FORMATS}
    x = torch.randn(bs, 3, r, r, device=device)
    inputs = {name: to_format(x, fmt) if device.type == "cuda" else x for name, fmt in zip(models, FORMATS)}  # as fed
    forward = {name: forward_call(m, inputs[name], device, dtype) for name, m in models.items()}
    # a frozen backbone's pass runs with its BatchNorms folded into the convolutions (layout.folded)
    for name, m in models.items():
        forward[f"{name}, {FOLDED}"] = forward_call(layout.folded(m), inputs[name], device, dtype)
    for name, s in interleaved(forward, device, repeats).items():
        rows.append(row("forward", name, s, 2 * macs * bs, name == f"{format_name(picked_fmt['forward'])}, {FOLDED}"))
    steps = {
        (name, impl): step_call(m, inputs[name], optimizer(v, m, IMPLS[impl]), device, dtype)
        for name, m in models.items()
        for impl in (default_impl, "fused")
    }
    for (name, impl), s in interleaved(steps, device, repeats).items():
        picked = name == format_name(picked_fmt["train"]) and impl == picked_impl
        rows.append(row("train step", f"{name}, {impl}", s, 2 * macs * bs * (1 + BACKWARD_COST), picked))
    model = models["contiguous"]
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opts = {impl: optimizer(v, model, kw) for impl, kw in IMPLS.items()}
    for opt in opts.values():
        opt.step()  # the state's first step (allocations) is not timed
    for impl, s in interleaved({impl: opt.step for impl, opt in opts.items()}, device, repeats).items():
        rows.append(
            {**base, "pass": f"{tc.optimizer} step", "choice": impl, "ms": 1000 * s, "picked": impl == picked_impl}
        )
    return rows


FOLDED = "BatchNorm folded"
# torch's optimizer implementations, as its constructors are told them
IMPLS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
# per pass, what torch does when told nothing: the reference the picked choice is measured against
TORCH_DEFAULT = {"forward": "contiguous", "train step": "contiguous, for-loop", "step": "for-loop"}


def network(v: Variant, fmt: torch.memory_format, device: torch.device) -> torch.nn.Module:
    """`v`'s whole network, every stage trainable, in `fmt`, the same weights each time."""
    torch.manual_seed(0)
    return to_format(build_model(v.config.model.model_copy(update={"freeze": "none"}), 10).to(device), fmt)


def optimizer(v: Variant, model: torch.nn.Module, impl: dict) -> torch.optim.Optimizer:
    """`v`'s optimizer over all of `model`'s parameters, in the implementation `impl` names."""
    tc = v.config.train
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[tc.optimizer]
    extra = {"momentum": tc.momentum} if tc.optimizer == "sgd" else {}
    return cls(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, **extra, **impl)


def forward_call(model, x, device, dtype):
    """One forward pass in eval mode without gradients: the frozen-feature pass and evaluation."""

    def forward():
        model.eval()
        with torch.no_grad(), autocast(device, dtype):
            model(x)

    return forward


def step_call(model, x, opt, device, dtype, fwd=None):
    """One training step: forward (through `fwd`, a compiled `model`, where given), backward, `opt`'s step."""
    fwd = fwd or model
    y = torch.randint(0, 10, (len(x),), device=device)

    def step():
        model.train()
        with autocast(device, dtype):
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def kernels_table(variants: list[Variant], device: torch.device, peak: float) -> pd.DataFrame:
    """kernel_rows for one seed of each variant."""
    seen, rows = set(), []
    for v in variants:
        if v.name not in seen:
            seen.add(v.name)
            rows += kernel_rows(v, device, peak)
    return pd.DataFrame(rows)


def speedups(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant and pass: the picked choice's speed over torch's default, over the slowest choice and over the
    fastest (1.0 when the rule picks the fastest)."""
    out = []
    for (variant, what), g in table.groupby(["variant", "pass"], sort=False):
        picked = g[g.picked].ms.iloc[0]
        default = g[g.choice == TORCH_DEFAULT.get(what, TORCH_DEFAULT["step"])].ms.iloc[0]
        out.append(
            {
                "variant": variant,
                "pass": what,
                "picked": g[g.picked].choice.iloc[0],
                "picked_over_default": default / picked,
                "picked_over_slowest": g.ms.max() / picked,
                "picked_over_fastest": g.ms.min() / picked,
            }
        )
    return pd.DataFrame(out)
