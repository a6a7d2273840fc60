"""The input pipeline, batched on the compute device: uint8 batch in, normalized float batch out.

Augmentation runs at the stored resolution (32 px for CIFAR) before the resize, where it is
cheapest; then the batch is scaled to [0,1], resized and normalized in a few tensor ops.
No per-image PIL work ever happens in the training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from bench.config import InputConfig, ModelConfig, RunConfig
from bench.models import input_stats


def flip_crop(x: torch.Tensor, pad: int = 4, mode: str = "reflect") -> torch.Tensor:
    """Random horizontal flip and random crop after padding by `pad` px (reflect, or zero: mode 'constant'),
    independently per image."""
    n, _, h, w = x.shape
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


class BatchTransform:
    """uint8 (N, 3, H, W) on the device -> float (N, 3, R, R), augmented when `train`.

    `model` (the run's ModelConfig) is needed for `input.normalize: model`: its weights' own mean/std;
    `pixel_mean` ((3, H, W) in [0,1], the training images' mean: Dataset.pixel_mean) for `pixel-mean`."""

    def __init__(
        self, cfg: InputConfig, train: bool, model: ModelConfig | None = None, pixel_mean: torch.Tensor | None = None
    ):
        self.resolution, self.augment = cfg.resolution, cfg.augment if train else "none"
        self.pixel_mean = None
        if cfg.normalize == "pixel-mean":  # He et al.: subtract the per-pixel mean, before any resize
            if pixel_mean is None:
                raise ValueError("input.normalize: pixel-mean needs the training images' mean (Dataset.pixel_mean)")
            self.pixel_mean = pixel_mean[None]
            self.mean, self.std = None, None
        elif cfg.normalize == "imagenet":
            # here, not at the top: importing timm takes seconds, and `bench list` imports this module
            from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

            self.mean, self.std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        elif cfg.normalize == "model":
            if model is None:
                raise ValueError("input.normalize: model needs the model: BatchTransform(cfg.input, train, cfg.model)")
            self.mean, self.std = input_stats(model.arch, model.weights)
        else:  # the lab report's plain [0, 1] scaling
            self.mean, self.std = None, None
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # mean/std, made once per device
        # The policies draw one op per call, so they are applied image by image to keep augmentations independent
        # across the batch. On a GPU that is thousands of tiny kernels and a sync per image: they run on the host
        # instead (`load`, at 32 px cheap), and the augmented batch goes to the GPU from pinned memory.
        self.policy = {"trivialaugment": v2.TrivialAugmentWide(), "randaugment": v2.RandAugment()}.get(self.augment)

    @property
    def on_host(self) -> bool:
        """Whether part of the pipeline runs on the host: the images are best kept there (bench.training.loop)."""
        return self.policy is not None

    def load(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A uint8 batch (on the host or `device`) moved to `device`, the per-image policy applied on the host."""
        if self.policy is not None:
            x = torch.stack([self.policy(img) for img in x.cpu()])
        if device.type == "cuda" and not x.is_cuda:  # pinned: the copy overlaps with the GPU's work
            return x.pin_memory().to(device, non_blocking=True)
        return x.to(device)

    def __call__(self, x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """The batch `x` through the pipeline, on `device` (default: where `x` is)."""
        x = self.load(x, device or x.device)
        if self.pixel_mean is not None:  # zero padding pads the mean-subtracted image with zeros, as the paper
            if self.pixel_mean.device != x.device:  # moved once, not on every batch
                self.pixel_mean = self.pixel_mean.to(x.device)
            x = x.float().div_(255).sub_(self.pixel_mean)
        if self.augment in ("flip-crop", "flip-crop-zero"):
            x = flip_crop(x, mode="reflect" if self.augment == "flip-crop" else "constant")
        if self.pixel_mean is None:
            x = x.float().div_(255)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(
                x,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=x.shape[-1] > self.resolution,
            )
        if self.mean is not None:
            mean, std = self.stats(x.device)
            x = (x - mean) / std
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as (1, 3, 1, 1) tensors on `device`, copied there once: a tensor built from a list on
        every batch is a blocking host-to-device copy on CUDA."""
        if device not in self._stats:
            self._stats[device] = tuple(torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (self.mean, self.std))
        return self._stats[device]


def for_run(cfg: RunConfig, data, train: bool) -> BatchTransform:
    """The run's input pipeline for `data` (a bench.data.Dataset), training (augmented) or evaluation."""
    mean = data.pixel_mean if cfg.input.normalize == "pixel-mean" else None
    return BatchTransform(cfg.input, train, cfg.model, mean)
