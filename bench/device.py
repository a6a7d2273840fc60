"""Where the work runs: precision, autocast and batch sizes per device, and how a device is named."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

from bench.config import TrainConfig


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; on the CPU only when asked (it is slower on many CPUs)."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """'bfloat16' or 'fp32', as the run record states it."""
    return str(dtype or "fp32").replace("torch.", "")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast to `dtype` on `device`, or a no-op when `dtype` is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def eval_batch_size(cfg: TrainConfig, device: torch.device) -> int:
    """Big batches keep a GPU busy; on the CPU they are slower per image (measured: ResNet-50 at
    224 px, 11.3 img/s at batch 32 vs 9.2 at 256), so evaluate at the training batch size there."""
    return max(256, cfg.batch_size) if device.type == "cuda" else cfg.batch_size


def channels_last(module_or_tensor, device: torch.device):
    """channels_last memory format on CUDA (faster convolutions with bf16), unchanged elsewhere."""
    return module_or_tensor.to(memory_format=torch.channels_last) if device.type == "cuda" else module_or_tensor


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux's MemAvailable), None where it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
