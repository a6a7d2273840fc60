"""Training and evaluation of one run: optimizer, schedule, epochs, validation, one test pass.

`progress(description, total)` (optional) returns an `advance(n)` callable; the CLI backs it
with rich progress bars, tests leave it out.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import RunConfig, TrainConfig, features_cacheable, prefix_cacheable
from bench.data import Dataset, cache_root
from bench.infra.files import atomic_save
from bench.infra.record import HistoryRow
from bench.models import Prebuilt, build_model
from bench.training import features, layout, prefix, probes, recipes, transforms
from bench.training.device import (
    EvalBatch,
    autocast,
    autocast_dtype,
    eval_batch_size,
    format_name,
    grad_scaler,
    memory_available,
    optimizer_impl,
    precision_name,
    setup,
    to_format,
)
from bench.training.features import predict
from bench.training.outcome import FeatureCache, FitContext, Outcome


class Diverged(Exception):
    """The loss became NaN or inf, or exploded past `exploded_loss`: the run stops at once
    instead of burning hours on garbage."""

    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(
            f"loss became {loss} at epoch {epoch}, step {step}; try a lower train.lr or a warm-up (train.warmup_epochs)"
        )


# The divergence check reads the loss back from the device: every this many steps and at the epoch's end,
# not every step (a sync per step stalls a GPU's queue); the step reported is still the first bad one.
DIVERGENCE_CHECK_STEPS = 50
# The whole uint8 data set goes to the GPU when it takes at most this share of the memory there
DATA_ON_GPU_SHARE = 0.25


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_optimizer(cfg: TrainConfig, net: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over `net`'s parameter groups (training.recipes: one group unless a recipe splits them), in
    torch's fused implementation where the device has one (device.optimizer_impl)."""
    groups = recipes.param_groups(net, cfg)
    impl = {"fused": True} if optimizer_impl(cfg.optimizer, device) == "fused" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            **impl,
        )
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **impl)


def exploded_loss(classes: int) -> float:
    """A cross-entropy a hundred times that of guessing uniformly (ln C): no training run that is
    learning gets there, and one that diverges with finite numbers (lr 10) passes it within steps."""
    return 100 * math.log(max(classes, 2))


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier on train.lr at optimizer step `step`: the warm-up (linear from 1/100, or a constant 1/10),
    then the schedule."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return 0.1 if cfg.warmup_shape == "constant" else 0.01 + 0.99 * step / warmup
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    if cfg.schedule == "multistep":
        return cfg.step_gamma ** sum(step >= round(m * steps_per_epoch) for m in cfg.milestones)
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, cfg.epochs * steps_per_epoch - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


@dataclass
class Loop:
    """The optimisation of one fit: what a checkpoint saves and resumes, and the shape of its epochs."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # fp16 only; a pass-through otherwise
    n_used: int  # training images per epoch
    steps_per_epoch: int
    history: list[HistoryRow] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"acc": -1.0, "epoch": 0, "state": None})  # the selected epoch


def fit(
    cfg: RunConfig,
    data: Dataset,
    device: torch.device,
    *,
    checkpoint: Path | None = None,
    feature_cache: bool = True,
    cache_dir: Path | None = None,
    progress=None,
    on_epoch: Callable[[list[dict]], None] | None = None,
    prebuilt: Prebuilt | None = None,
) -> Outcome:
    """Train one run and evaluate the test set once, with the weights chosen on validation.

    `cache_dir` holds the frozen-backbone features (default: bench's cache folder); `on_epoch`
    hears the history after every epoch (the store writes it, the CLI logs it); `prebuilt`: this run's backbone,
    built already under its seed (models.Prebuilt)."""
    seed_everything(cfg.seed)
    tc = cfg.train
    setup(device)
    dtype = autocast_dtype(tc, device)
    if prebuilt is not None and prebuilt.key != (cfg.model.arch, cfg.model.weights, cfg.seed):
        raise ValueError(f"a backbone prebuilt for {prebuilt.key} handed to a run of {cfg.model.arch}, seed {cfg.seed}")
    model = build_model(cfg.model, len(data.classes), prebuilt).to(device)
    fmt = layout.choose(model, cfg, device, dtype)  # timed on this machine once, then remembered
    model = to_format(model, fmt)
    run = FitContext(
        cfg, model, data, device, dtype, EvalBatch(eval_batch_size(tc, device)), progress, format_name(fmt)
    )

    if cfg.model.head.kind != "mlp":  # a logreg / k-NN probe on the frozen features: no epochs
        return probes.fit_probe(run, cache_dir, feature_cache)
    trainee = _what_trains(run, feature_cache, cache_dir or cache_root() / "features")
    labels = {s: getattr(data, s).y.to(device) for s in ("train", "val", "test")}
    # torch.compile (train.compile): training steps go through a compiled forward over the same parameters;
    # evaluation stays eager (eval mode and the last partial batch would each compile another graph)
    fwd = torch.compile(trainee.net) if tc.compile else trainee.net
    loop = _loop(tc, trainee.net, len(labels["train"]), device, dtype)
    if checkpoint and checkpoint.exists():
        resume(checkpoint, trainee.net, loop, device)

    start_epoch = len(loop.history) + 1
    epoch_bar = run.bar("epochs", tc.epochs)
    if epoch_bar and start_epoch > 1:
        epoch_bar(start_epoch - 1)
    for epoch in range(start_epoch, tc.epochs + 1):
        t0 = time.perf_counter()
        trains = recipes.unfreeze(model, cfg, epoch) if tc.unfreeze_after is not None else None
        loss_sum, correct, lr_sum = train_one_epoch(run, trainee, fwd, loop, labels["train"], epoch)
        train_seconds = time.perf_counter() - t0
        val_loss, val_acc = evaluate(run, trainee, labels["val"], f"epoch {epoch}/{tc.epochs} validation")
        row = HistoryRow(
            epoch=epoch,
            steps=epoch * loop.steps_per_epoch,
            lr=lr_sum / loop.steps_per_epoch,
            train_loss=loss_sum.item() / loop.n_used,
            train_acc=correct.item() / loop.n_used,
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - t0,
            train_images_per_sec=loop.n_used / train_seconds,
        )
        if trains is not None:
            row["trains"] = "+".join(["head", *trains[::-1]])
        loop.history.append(row)
        select(loop, tc, epoch, val_acc, trainee.net)
        if checkpoint:
            _save_checkpoint(checkpoint, _checkpoint_state(loop, trainee.net, device))
        if on_epoch:
            on_epoch(loop.history)
        if epoch_bar:
            epoch_bar(1)

    trainee.net.load_state_dict(loop.best["state"])
    advance = run.bar(f"test (epoch {loop.best['epoch']}'s weights)", len(labels["test"]))
    test_logits = predict(trainee.net, trainee.inputs["test"], trainee.eval_tf, run.eval_bs, device, dtype, advance)
    return Outcome(
        loop.history,
        test_logits.cpu().numpy(),
        loop.best["epoch"],
        time.perf_counter() - run.started,
        trainee.feature_cache,
        precision_name(dtype),
        model,
        format_name(fmt),
        optimizer_impl(tc.optimizer, device),
    )


def _loop(tc: TrainConfig, net: torch.nn.Module, n_train: int, device: torch.device, dtype) -> Loop:
    optimizer = make_optimizer(tc, net, device)  # every parameter that will ever train, gradual unfreezing included
    # A last batch of one image is dropped each epoch: BatchNorm cannot normalise a single sample.
    # The order is reshuffled every epoch, so no image is left out for good.
    n_used = n_train - 1 if n_train % tc.batch_size == 1 and n_train > 1 else n_train
    steps_per_epoch = math.ceil(n_used / tc.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(tc, s, steps_per_epoch))
    return Loop(optimizer, scheduler, grad_scaler(device, dtype), n_used, steps_per_epoch)


def resume(path: Path, net: torch.nn.Module, loop: Loop, device: torch.device) -> None:
    """Continue from the checkpoint at `path`: weights, optimizer, schedule, history and random state."""
    state = _load_checkpoint(path)
    # a checkpoint of another network (saved on the full path, resumed where the prefix cache applies, or
    # the other way round) is not resumed: the run starts over
    if state is None or set(state["net"]) != set(net.state_dict()):
        return
    net.load_state_dict(state["net"])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        loop.scaler.load_state_dict(state["scaler"])
    loop.history, loop.best = state["history"], state["best"]
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _checkpoint_state(loop: Loop, net: torch.nn.Module, device: torch.device) -> dict:
    """Everything `resume` reads back, so that a resumed run equals an uninterrupted one."""
    return {
        "net": net.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "history": loop.history,
        "best": loop.best,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "scaler": loop.scaler.state_dict() if loop.scaler.is_enabled() else None,
    }


def train_one_epoch(run: FitContext, trainee: Trainee, fwd, loop: Loop, labels: torch.Tensor, epoch: int):
    """One pass over the training split in a new random order; (loss sum, correct count) as device tensors and
    the sum of the learning rates its steps used. Raises Diverged at the first bad loss."""
    tc, device, inputs = run.cfg.train, run.device, trainee.inputs["train"]
    too_high = exploded_loss(len(run.data.classes))
    trainee.net.train()
    order = torch.randperm(len(labels))
    # the order where the images are and where the labels are: no per-step copy (and sync) between the two
    order_x, order = order.to(inputs.device), order.to(device)
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    bad_step, bad_loss = torch.full((), -1, device=device), torch.zeros((), device=device)  # the first bad step
    lr_sum = 0.0  # the learning rate each step of this epoch used (history's lr is their mean)
    advance = run.bar(f"epoch {epoch}/{tc.epochs} train", loop.n_used)
    for step, i in enumerate(range(0, loop.n_used, tc.batch_size)):
        idx = order[i : i + tc.batch_size]
        x = inputs[order_x[i : i + tc.batch_size]]
        x = trainee.train_tf(x, device) if trainee.train_tf else x.to(device, non_blocking=True)
        y = labels[idx]
        with autocast(device, run.dtype):
            logits = fwd(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
        first = (bad_step < 0) & ~(loss.isfinite() & (loss <= too_high))  # device tensors: no sync
        bad_step, bad_loss = torch.where(first, step, bad_step), torch.where(first, loss.detach(), bad_loss)
        if (step + 1) % DIVERGENCE_CHECK_STEPS == 0:
            _check_divergence(epoch, bad_step, bad_loss)
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        lr_sum += loop.optimizer.param_groups[0]["lr"]
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loop.scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if advance:
            advance(len(y))
    _check_divergence(epoch, bad_step, bad_loss)
    if device.type == "cuda":  # the timer stops when the GPU has done the epoch's work, not when it was queued
        torch.cuda.synchronize(device)
    return loss_sum, correct, lr_sum


def evaluate(run: FitContext, trainee: Trainee, labels: torch.Tensor, what: str) -> tuple[float, float]:
    """(loss, accuracy) on the validation split; the same loss as in training (label smoothing included), so
    the two curves are comparable."""
    advance = run.bar(what, len(labels))
    logits = predict(trainee.net, trainee.inputs["val"], trainee.eval_tf, run.eval_bs, run.device, run.dtype, advance)
    loss = F.cross_entropy(logits, labels, label_smoothing=run.cfg.train.label_smoothing).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


def select(loop: Loop, tc: TrainConfig, epoch: int, val_acc: float, net: torch.nn.Module) -> None:
    """Keep this epoch's weights when they are the best on validation so far (train.select: best) or always
    (train.select: last)."""
    if tc.select == "last" or val_acc > loop.best["acc"]:
        loop.best = {"acc": val_acc, "epoch": epoch, "state": copy.deepcopy(net.state_dict())}


@dataclass
class Trainee:
    """What trains, and on what (_what_trains)."""

    net: torch.nn.Module  # the classifier, or its part after the cached features or prefix outputs
    inputs: dict[str, torch.Tensor]  # per split: uint8 images, or the cached features / prefix outputs
    train_tf: Callable | None  # the batch transforms; None on cached inputs
    eval_tf: Callable | None
    feature_cache: FeatureCache | str


def _what_trains(run: FitContext, feature_cache: bool, cache_dir: Path) -> Trainee:
    """The head on backbone features computed once (frozen backbone, deterministic inputs), the trainable
    stages on frozen-prefix outputs computed once (bench.training.prefix), or the whole network on the images."""
    cfg, model, data, device, dtype, eval_bs = run.cfg, run.model, run.data, run.device, run.dtype, run.eval_bs
    if feature_cache and features_cacheable(cfg):
        feats, hit = features.split_features(model.backbone, data, cfg, device, dtype, eval_bs, cache_dir, run.progress)
        return Trainee(model.head, feats, None, None, FeatureCache.HIT if hit else FeatureCache.COMPUTED)
    parts = prefix.split(model, cfg) if feature_cache and prefix_cacheable(cfg) else None
    refused = None
    if parts:
        per_image, value_bytes, peak = prefix.probe(parts[0], cfg.input.resolution, device, dtype)
        images = len(data.train) + len(data.val) + len(data.test)
        refused = prefix.fits(per_image * value_bytes * images, peak * int(eval_bs), device)
        if refused is None:
            outputs, hit = features.split_features(
                parts[0], data, cfg, device, dtype, eval_bs, cache_dir, run.progress, prefix=True
            )
            return Trainee(
                parts[1], outputs, None, None, FeatureCache.PREFIX_HIT if hit else FeatureCache.PREFIX_COMPUTED
            )
    inputs = {s: getattr(data, s).x for s in ("train", "val", "test")}
    train_tf, eval_tf = (transforms.for_run(cfg, data, t) for t in (True, False))
    if data_on_gpu(inputs, device, train_tf.on_host):  # no host transfers
        inputs = {s: x.to(device) for s, x in inputs.items()}
    return Trainee(model, inputs, train_tf, eval_tf, refused or FeatureCache.OFF)


def data_on_gpu(inputs: dict[str, torch.Tensor], device: torch.device, augmented_on_host: bool) -> bool:
    """Whether the uint8 images go to the GPU whole: on CUDA, when they take at most DATA_ON_GPU_SHARE of the
    memory there (CIFAR at 32 px: 0.18 GB; a set stored at 224 px can be 15 GB or more) and no augmentation
    runs on the host. Otherwise each batch is copied from pinned host memory."""
    if device.type != "cuda" or augmented_on_host:
        return False
    nbytes = sum(x.numel() * x.element_size() for x in inputs.values())
    return nbytes <= DATA_ON_GPU_SHARE * memory_available(device)


def _check_divergence(epoch: int, bad_step: torch.Tensor, bad_loss: torch.Tensor) -> None:
    """Raise Diverged for the first step whose loss was not finite or exploded (one device sync)."""
    if (step := int(bad_step)) >= 0:
        raise Diverged(epoch, step, float(bad_loss))


def _save_checkpoint(path: Path, state: dict) -> None:
    atomic_save(path, lambda f: torch.save(state, f))  # a kill mid-save leaves the previous checkpoint intact


def _load_checkpoint(path: Path) -> dict | None:
    try:
        # weights_only: tensors, numbers, strings and containers only; a crafted file cannot run code
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: start the run over rather than resume from garbage
        return None
