"""Where the work runs: precision, autocast, batch sizes and memory per device, and how a device is named."""

from __future__ import annotations

import contextlib
import gc
import os

import torch

from bench.config import TrainConfig

# GPUs of compute capability 8.0 (A100) and later have bf16 tensor cores; older ones (T4 7.5, V100 7.0)
# emulate bf16 slowly, and train in fp16 with a gradient scaler instead.
NATIVE_BF16 = (8, 0)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of train.precision on `device`; None is fp32. `auto`: bf16 on GPUs with bf16 tensor
    cores, fp16 on older GPUs, fp32 on the CPU (autocast is slower there on many CPUs)."""
    if cfg.precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= NATIVE_BF16 else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, active under fp16 only (its small range underflows small gradients); a pass-through
    otherwise, so fp32 and bf16 steps are exactly the plain optimizer's."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def precision_name(dtype: torch.dtype | None) -> str:
    """'bfloat16', 'float16' or 'fp32', as the run record states it."""
    return str(dtype or "fp32").replace("torch.", "")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast to `dtype` on `device`, or a no-op when `dtype` is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def eval_batch_size(cfg: TrainConfig, device: torch.device) -> int:
    """Big batches keep a GPU busy (EvalBatch halves one that does not fit); on the CPU they are slower per
    image (measured: ResNet-50 at 224 px, 11.3 img/s at batch 32 vs 9.2 at 256): the training batch size there."""
    return max(256, cfg.batch_size) if device.type == "cuda" else cfg.batch_size


class EvalBatch:
    """A run's evaluation batch size, shared by its evaluations: halved for the rest of the run when a batch
    runs out of memory (bench.training.features.predict), so a big batch cannot fail a run after a whole epoch."""

    def __init__(self, size: int):
        self.size = size

    def __int__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"EvalBatch({self.size})"


# What CUDA libraries and torch.compile say when an allocation fails: not always torch.OutOfMemoryError
# (the host's allocator: "DefaultCPUAllocator: not enough memory")
OOM_MESSAGES = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED", "not enough memory")


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` (or an exception it wraps, as torch.compile wraps errors in its backend) is a failed
    allocation on the GPU or the host."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(e, RuntimeError) and any(m in str(e) for m in OOM_MESSAGES):
            return True
        e = e.__cause__ or e.__context__
    return False


def release_memory(device: torch.device) -> None:
    """Hand what the caching allocator holds free back to the GPU (after an out-of-memory error, so the next
    run or a smaller batch starts from a clean slate)."""
    gc.collect()  # tensors still referenced from a dropped traceback
    if device.type == "cuda":
        torch.cuda.empty_cache()


def setup(device: torch.device) -> None:
    """cuDNN's autotuner on CUDA (fastest convolutions for fixed shapes), unless deterministic algorithms were
    asked for: the autotuner may pick other kernels in another process, so bitwise equality across runs
    (tests/test_cuda.py's resume and cache tests) needs cudnn.deterministic, which such a caller sets."""
    if device.type == "cuda" and not (
        torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled()
    ):
        torch.backends.cudnn.benchmark = True


def gpu_memory_available(device: torch.device) -> int:
    """Bytes this process can still allocate on a GPU: the driver's free memory plus what torch's caching
    allocator holds reserved but unused (mem_get_info alone counts that as taken, so after an earlier run in the
    same process freed its tensors, later runs would be refused memory they can have)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def memory_available(device: torch.device) -> int | None:
    """Bytes available to this process on `device` (a GPU's, or the host's), None where it cannot be told."""
    return gpu_memory_available(device) if device.type == "cuda" else available_memory()


def format_name(fmt: torch.memory_format) -> str:
    """'channels_last' or 'contiguous', as the run record states it."""
    return "channels_last" if fmt == torch.channels_last else "contiguous"


def to_format(module_or_tensor, fmt: torch.memory_format):
    """A module's 4-d parameters (or a 4-d tensor) in `fmt`."""
    return module_or_tensor.to(memory_format=fmt) if fmt == torch.channels_last else module_or_tensor


# torch's fused optimizer kernels (one kernel over every parameter; on the CPU since torch 2.4) against its
# default (a loop over parameters on the CPU, foreach on CUDA): the fused Adam step measured 3x faster on a 2-core
# CPU for ResNet-50 (25.6 against 7.7 ms), and fused SGD likewise. Their results differ in the last bits.
FUSED = ("sgd", "adam", "adamw")


def optimizer_impl(optimizer: str, device: torch.device) -> str:
    """'fused' where torch has a fused kernel for `optimizer` on `device`, else 'default'."""
    return "fused" if optimizer in FUSED and device.type in ("cpu", "cuda") else "default"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (lscpu's) and the threads torch uses: records and benchmarks
    name the processor, whose speed and last digits differ from another's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from bench.infra.hashing import cpu_info

    return f"CPU ({cpu_info()[0]}, {torch.get_num_threads()} threads)"


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
