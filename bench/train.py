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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import features, prefix, probes, recipes, transforms
from bench.config import RunConfig, TrainConfig
from bench.data import Dataset, cache_root
from bench.device import (
    EvalBatch,
    autocast,
    autocast_dtype,
    channels_last,
    eval_batch_size,
    grad_scaler,
    memory_available,
    precision_name,
    setup,
)
from bench.features import predict
from bench.files import atomic_save
from bench.models import build_model
from bench.outcome import FeatureCache, Outcome
from bench.record import HistoryRow


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


def make_optimizer(cfg: TrainConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer over `net`'s parameter groups (bench.recipes: one group unless a recipe splits them)."""
    groups = recipes.param_groups(net, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.nesterov and cfg.momentum > 0,
        )
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


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
) -> Outcome:
    """Train one run and evaluate the test set once, with the weights chosen on validation.

    `cache_dir` holds the frozen-backbone features (default: bench's cache folder); `on_epoch`
    hears the history after every epoch (the store writes it, the CLI logs it)."""
    seed_everything(cfg.seed)
    tc = cfg.train
    setup(device)
    dtype = autocast_dtype(tc, device)
    model = channels_last(build_model(cfg.model, len(data.classes)).to(device), device)
    eval_bs = EvalBatch(eval_batch_size(tc, device))
    started = time.perf_counter()

    if cfg.model.head.kind != "mlp":  # a logreg / k-NN probe on the frozen features: no epochs
        return probes.fit_probe(cfg, model, data, device, dtype, eval_bs, cache_dir, feature_cache, progress, started)
    net, inputs, train_tf, eval_tf, cache_state = _what_trains(
        cfg, model, data, device, dtype, eval_bs, feature_cache, cache_dir or cache_root() / "features", progress
    )
    labels = {s: getattr(data, s).y.to(device) for s in ("train", "val", "test")}
    # torch.compile (train.compile): training steps go through a compiled forward over the same parameters;
    # evaluation stays eager (eval mode and the last partial batch would each compile another graph)
    fwd = torch.compile(net) if tc.compile else net

    optimizer = make_optimizer(tc, net)  # every parameter that will ever train, gradual unfreezing included
    n_train = len(labels["train"])
    # A last batch of one image is dropped each epoch: BatchNorm cannot normalise a single sample.
    # The order is reshuffled every epoch, so no image is left out for good.
    n_used = n_train - 1 if n_train % tc.batch_size == 1 and n_train > 1 else n_train
    steps_per_epoch = math.ceil(n_used / tc.batch_size)
    too_high = exploded_loss(len(data.classes))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(tc, s, steps_per_epoch))
    scaler = grad_scaler(device, dtype)  # fp16 only; a pass-through otherwise

    history: list[dict] = []
    best = {"acc": -1.0, "epoch": 0, "state": None}
    start_epoch = 1
    if checkpoint and checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        # a checkpoint of another network (saved on the full path, resumed where the prefix cache applies, or
        # the other way round) is not resumed: the run starts over
        if state is not None and set(state["net"]) == set(net.state_dict()):
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            history, best = state["history"], state["best"]
            torch.set_rng_state(state["rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            start_epoch = len(history) + 1

    epoch_bar = progress("epochs", tc.epochs) if progress else None
    if epoch_bar and start_epoch > 1:
        epoch_bar(start_epoch - 1)
    for epoch in range(start_epoch, tc.epochs + 1):
        t0 = time.perf_counter()
        trains = recipes.unfreeze(model, cfg, epoch) if tc.unfreeze_after is not None else None
        net.train()
        order = torch.randperm(n_train)
        # the order where the images are and where the labels are: no per-step copy (and sync) between the two
        order_x, order = order.to(inputs["train"].device), order.to(device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        bad_step, bad_loss = torch.full((), -1, device=device), torch.zeros((), device=device)  # the first bad step
        lr_sum = 0.0  # the learning rate each step of this epoch used (history's lr is their mean)
        advance = progress(f"epoch {epoch}/{tc.epochs} train", n_used) if progress else None
        for step, i in enumerate(range(0, n_used, tc.batch_size)):
            idx = order[i : i + tc.batch_size]
            x = inputs["train"][order_x[i : i + tc.batch_size]]
            x = train_tf(x, device) if train_tf else x.to(device, non_blocking=True)
            y = labels["train"][idx]
            with autocast(device, dtype):
                logits = fwd(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=tc.label_smoothing)
            first = (bad_step < 0) & ~(loss.isfinite() & (loss <= too_high))  # device tensors: no sync
            bad_step, bad_loss = torch.where(first, step, bad_step), torch.where(first, loss.detach(), bad_loss)
            if (step + 1) % DIVERGENCE_CHECK_STEPS == 0:
                _check_divergence(epoch, bad_step, bad_loss)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            lr_sum += optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            if advance:
                advance(len(y))
        _check_divergence(epoch, bad_step, bad_loss)
        if device.type == "cuda":  # the timer stops when the GPU has done the epoch's work, not when it was queued
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - t0
        advance = progress(f"epoch {epoch}/{tc.epochs} validation", len(labels["val"])) if progress else None
        val_logits = predict(net, inputs["val"], eval_tf, eval_bs, device, dtype, advance)
        # the same loss as in training (label smoothing included), so the two curves are comparable
        val_loss = F.cross_entropy(val_logits, labels["val"], label_smoothing=tc.label_smoothing).item()
        val_acc = (val_logits.argmax(1) == labels["val"]).float().mean().item()
        row = HistoryRow(
            epoch=epoch,
            steps=epoch * steps_per_epoch,
            lr=lr_sum / steps_per_epoch,
            train_loss=loss_sum.item() / n_used,
            train_acc=correct.item() / n_used,
            val_loss=val_loss,
            val_acc=val_acc,
            seconds=time.perf_counter() - t0,
            train_images_per_sec=n_used / train_seconds,
        )
        if trains is not None:
            row["trains"] = "+".join(["head", *trains[::-1]])
        history.append(row)
        if tc.select == "last" or val_acc > best["acc"]:
            best = {"acc": val_acc, "epoch": epoch, "state": copy.deepcopy(net.state_dict())}
        if checkpoint:
            _save_checkpoint(
                checkpoint,
                {
                    "net": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "best": best,
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                },
            )
        if on_epoch:
            on_epoch(history)
        if epoch_bar:
            epoch_bar(1)

    net.load_state_dict(best["state"])
    advance = progress(f"test (epoch {best['epoch']}'s weights)", len(labels["test"])) if progress else None
    test_logits = predict(net, inputs["test"], eval_tf, eval_bs, device, dtype, advance)
    return Outcome(
        history,
        test_logits.cpu().numpy(),
        best["epoch"],
        time.perf_counter() - started,
        cache_state,
        precision_name(dtype),
        model,
    )


def _what_trains(cfg: RunConfig, model, data: Dataset, device, dtype, eval_bs, feature_cache, cache_dir, progress):
    """(the network that trains, its inputs per split, train and eval transforms, the feature_cache state):
    the head on backbone features computed once (frozen backbone, deterministic inputs), the trainable
    stages on frozen-prefix outputs computed once (bench.prefix), or the whole network on the images."""
    if feature_cache and features.cacheable(cfg):
        feats, hit = features.split_features(model.backbone, data, cfg, device, dtype, eval_bs, cache_dir, progress)
        return model.head, feats, None, None, FeatureCache.HIT if hit else FeatureCache.COMPUTED
    parts = prefix.split(model, cfg) if feature_cache and prefix.cacheable(cfg) else None
    refused = None
    if parts:
        per_image, value_bytes, peak = prefix.probe(parts[0], cfg.input.resolution, device, dtype)
        images = len(data.train) + len(data.val) + len(data.test)
        refused = prefix.fits(per_image * value_bytes * images, peak * int(eval_bs), device)
        if refused is None:
            outputs, hit = features.split_features(
                parts[0], data, cfg, device, dtype, eval_bs, cache_dir, progress, prefix=True
            )
            return parts[1], outputs, None, None, FeatureCache.PREFIX_HIT if hit else FeatureCache.PREFIX_COMPUTED
    inputs = {s: getattr(data, s).x for s in ("train", "val", "test")}
    train_tf, eval_tf = (transforms.for_run(cfg, data, t) for t in (True, False))
    if data_on_gpu(inputs, device, train_tf.on_host):  # no host transfers
        inputs = {s: x.to(device) for s, x in inputs.items()}
    return model, inputs, train_tf, eval_tf, refused or FeatureCache.OFF


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
