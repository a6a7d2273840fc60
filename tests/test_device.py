"""The CUDA path's decisions, tested on the CPU with the GPU's figures mocked: the precision `auto` picks, fp16
with its gradient scaler, the memory rules, out-of-memory handling, the deferred divergence check, --device."""

import types

import numpy as np
import pytest
import torch
from torch import nn

from bench import data
from bench.cli import commands, parser
from bench.config import RunConfig, TrainConfig
from bench.training import device, features, prefix
from bench.training import loop as train
from bench.training.device import (
    EvalBatch,
    autocast_dtype,
    gpu_memory_available,
    out_of_memory,
    precision_name,
)
from bench.training.transforms import BatchTransform
from tests.helpers import TINY

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
GiB = 2**30


def tiny(**sections) -> RunConfig:
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values}
    return RunConfig.model_validate(tree)


def mock_gpu(monkeypatch, free: int, reserved: int = 0, allocated: int = 0, capability=(8, 0)) -> None:
    """The figures torch.cuda would report for one GPU."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: allocated)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)


# ---- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capability, expected",
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_auto_precision_is_bf16_only_on_gpus_with_bf16_tensor_cores(monkeypatch, capability, expected):
    mock_gpu(monkeypatch, GiB, capability=capability)  # T4 7.5, V100 7.0, A100 8.0, H100 9.0
    assert autocast_dtype(TrainConfig(precision="auto"), CUDA) == expected
    assert autocast_dtype(TrainConfig(precision="auto"), CPU) is None
    assert autocast_dtype(TrainConfig(precision="fp16"), CPU) == torch.float16
    assert autocast_dtype(TrainConfig(precision="bf16"), CUDA) == torch.bfloat16  # asked for: as asked
    assert autocast_dtype(TrainConfig(precision="fp32"), CUDA) is None
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bfloat16", "float16"]


def test_the_gradient_scaler_runs_under_fp16_only():
    assert device.grad_scaler(CPU, torch.float16).is_enabled()
    assert not device.grad_scaler(CPU, torch.bfloat16).is_enabled() and not device.grad_scaler(CPU, None).is_enabled()


def test_fp16_trains_with_a_scaler_is_recorded_and_resumes_like_an_uninterrupted_run(tmp_path):
    cfg = tiny(model={"arch": "cifar_resnet20", "freeze": "none"}, train={"precision": "fp16", "epochs": 2})
    ds = data.load(cfg.data)
    whole = train.fit(cfg, ds, CPU)
    assert whole.precision == "float16" and np.isfinite(whole.test_logits).all()
    assert whole.history[-1]["train_loss"] < whole.history[0]["train_loss"] * 1.5  # it trains, nothing blew up

    ckpt = tmp_path / "checkpoint.pt"

    def stop(history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(cfg, ds, CPU, checkpoint=ckpt, on_epoch=stop)
    saved = torch.load(ckpt, weights_only=True)
    scaler = saved["scaler"]  # the scaler's state travels, moved from its start (a lower scale, or clean steps)
    assert (scaler["scale"], scaler["_growth_tracker"]) != (65536.0, 0)
    resumed = train.fit(cfg, ds, CPU, checkpoint=ckpt)
    np.testing.assert_array_equal(resumed.test_logits, whole.test_logits)


# ---- memory rules ----------------------------------------------------------------------------


def test_gpu_memory_counts_what_the_allocator_holds_free(monkeypatch):
    # after an earlier run freed 30 GiB, the driver sees 1 GiB free, but torch's allocator can hand out 28 more
    mock_gpu(monkeypatch, free=1 * GiB, reserved=30 * GiB, allocated=2 * GiB)
    assert gpu_memory_available(CUDA) == 29 * GiB
    assert prefix.fits(10 * GiB, 1 * GiB, CUDA) is None
    mock_gpu(monkeypatch, free=1 * GiB, reserved=30 * GiB, allocated=30 * GiB)  # all of it in use
    assert "more than half the 1.0 GiB of GPU memory available" in prefix.fits(10 * GiB, 1 * GiB, CUDA)


def test_the_prefix_rule_counts_the_computing_peak_beside_the_outputs(monkeypatch):
    mock_gpu(monkeypatch, free=20 * GiB)
    assert prefix.fits(9 * GiB, 0, CUDA) is None
    assert prefix.fits(9 * GiB, 2 * GiB, CUDA).startswith("off: the frozen prefix's outputs need 11.0 GiB")


def test_the_prefix_probe_gives_the_output_size_in_its_autocast_dtype():
    cfg = tiny(model={"freeze": "stem-layer3"})
    model = train.build_model(cfg.model, 10)
    stem, _ = prefix.split(model, cfg)
    assert prefix.probe(stem, 32, CPU, None) == (1024 * 2 * 2, 4, 0)  # layer3 of ResNet-50: 1024 x (32/16)^2
    assert prefix.probe(stem, 32, CPU, torch.bfloat16)[1] == 2


def test_bf16_prefix_outputs_are_stored_as_bf16_with_the_values_of_fp32_storage(tmp_path):
    cfg = tiny(model={"freeze": "stem-layer3"}, train={"precision": "bf16"})
    ds = data.load(cfg.data)
    model = train.build_model(cfg.model, len(ds.classes))
    stem, rest = prefix.split(model, cfg)
    feats, _ = features.split_features(stem, ds, cfg, CPU, torch.bfloat16, 32, tmp_path, prefix=True)
    assert feats["train"].dtype == torch.bfloat16
    as_fp32 = features.predict(stem, ds.train.x, BatchTransform(cfg.input, False, cfg.model), 32, CPU, torch.bfloat16)
    assert as_fp32.dtype == torch.float32
    torch.testing.assert_close(feats["train"].float(), as_fp32, rtol=0, atol=0)
    with torch.no_grad():  # the rest upcasts a bf16 batch: the same logits as from fp32 storage
        rest.eval()
        torch.testing.assert_close(rest(feats["train"][:8]), rest(as_fp32[:8]), rtol=0, atol=0)


def test_the_data_set_goes_to_the_gpu_only_when_it_is_small_and_augmented_there(monkeypatch):
    images = {"train": torch.zeros(1000, 3, 32, 32, dtype=torch.uint8)}  # 3 MB
    monkeypatch.setattr(train, "memory_available", lambda d: 100 * 2**20)
    assert train.data_on_gpu(images, CUDA, augmented_on_host=False)
    assert not train.data_on_gpu(images, CUDA, augmented_on_host=True)  # TrivialAugment: the images stay on host
    assert not train.data_on_gpu(images, CPU, augmented_on_host=False)
    monkeypatch.setattr(train, "memory_available", lambda d: 10 * 2**20)  # 3 MB is more than a quarter of 10
    assert not train.data_on_gpu(images, CUDA, augmented_on_host=False)


# ---- out of memory ---------------------------------------------------------------------------


class FitsUpTo(nn.Module):
    """A linear layer that, in eval mode, runs out of memory on batches larger than `most`."""

    def __init__(self, most: int, linear: nn.Module):
        super().__init__()
        self.most, self.linear, self.sizes = most, linear, []

    def forward(self, x):
        self.sizes.append(len(x))
        if not self.training and len(x) > self.most:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated, batch {len(x)})")
        return self.linear(x)


def test_an_eval_batch_that_runs_out_of_memory_is_halved_for_the_rest_of_the_run():
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    net = FitsUpTo(20, nn.Linear(6, 3))
    batch = EvalBatch(64)
    out = features.predict(net, x, None, batch, CPU, None)
    assert batch.size == 16 and len(out) == 100
    torch.testing.assert_close(out, net.linear(x).detach())
    net.sizes.clear()
    features.predict(net, x, None, batch, CPU, None)  # the next evaluation starts at the size that fitted
    assert max(net.sizes) == 16
    with pytest.raises(torch.OutOfMemoryError):  # even one image does not fit: the run fails as out of memory
        features.predict(FitsUpTo(0, net.linear), x, None, EvalBatch(4), CPU, None)


def test_a_run_whose_evaluation_runs_out_of_memory_finishes_with_the_same_result(monkeypatch):
    cfg = tiny()
    ds = data.load(cfg.data)
    plain = train.fit(cfg, ds, CPU, feature_cache=False)
    real = train.build_model

    def build(model_cfg, classes, prebuilt=None):
        m = real(model_cfg, classes, prebuilt)
        m.head = FitsUpTo(10, m.head)  # the real head, failing on eval batches of more than 10
        return m

    monkeypatch.setattr(train, "build_model", build)
    out = train.fit(cfg, ds, CPU, feature_cache=False)
    np.testing.assert_allclose(out.test_logits, plain.test_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried to"),
        MemoryError(),
    ],
)
def test_allocation_failures_of_cuda_libraries_and_inside_compile_are_out_of_memory(error):
    assert out_of_memory(error)
    try:  # torch.compile's backend wraps what went wrong in its own exception
        try:
            raise error
        except BaseException as inner:
            raise RuntimeError("backend='inductor' raised an exception") from inner
    except RuntimeError as wrapped:
        assert out_of_memory(wrapped)


def test_other_errors_are_not_out_of_memory():
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of range"))


def test_a_cudnn_allocation_failure_is_recorded_as_out_of_memory_and_memory_is_released(
    write_study, tmp_path, monkeypatch
):
    import json

    from bench.cli import main
    from bench.infra import runner

    released = []

    def fail(*a, **k):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")

    monkeypatch.setattr(runner, "fit", fail)
    monkeypatch.setattr(runner, "release_memory", lambda d: released.append(d))
    path = write_study({"study": "oom", "defaults": TINY})
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--device", "cpu"]) == 1
    (status,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*/status.json")]
    assert status["error"] == "out of memory" and "smaller train.batch_size" in status["detail"]
    assert released == [CPU]


# ---- the training loop's syncs ---------------------------------------------------------------


def test_divergence_is_read_back_every_n_steps_and_reports_the_first_bad_step(monkeypatch):
    cfg = tiny(model={"freeze": "none"}, train={"epochs": 1})  # 120 images, batch 32: 4 steps
    checks = []
    real_check, real_ce = train._check_divergence, torch.nn.functional.cross_entropy
    monkeypatch.setattr(train, "_check_divergence", lambda *a: (checks.append(1), real_check(*a)))
    monkeypatch.setattr(train, "DIVERGENCE_CHECK_STEPS", 3)
    train.fit(cfg, data.load(cfg.data), CPU, feature_cache=False)
    assert len(checks) == 2  # after step 3 and at the epoch's end, not after each of the 4 steps

    calls = []

    def nan_from_the_second_step(*a, **k):
        calls.append(1)
        loss = real_ce(*a, **k)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(train, "F", types.SimpleNamespace(cross_entropy=nan_from_the_second_step))
    monkeypatch.setattr(train, "DIVERGENCE_CHECK_STEPS", 50)  # found at the epoch's end, two steps later
    with pytest.raises(train.Diverged) as e:
        train.fit(cfg, data.load(cfg.data), CPU, feature_cache=False, on_epoch=lambda h: pytest.fail("validated"))
    assert (e.value.epoch, e.value.step) == (1, 1) and np.isnan(e.value.loss)


def test_mean_and_std_are_made_once_per_device(monkeypatch):
    cfg = tiny(input={"normalize": "imagenet"})
    tf = BatchTransform(cfg.input, False, cfg.model)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    first = tf(x)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: (made.append(1), real(*a, **k))[1])
    torch.testing.assert_close(tf(x), first)
    assert made == []  # no tensor built from the lists on the second batch
    mean = real([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = real([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    up = torch.nn.functional.interpolate(x.float() / 255, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(first, (up - mean) / std)


@pytest.mark.parametrize("augment", ["trivialaugment", "randaugment"])
def test_the_per_image_policies_run_on_the_host(augment):
    cfg = tiny(input={"augment": augment})
    tf = BatchTransform(cfg.input, True, cfg.model)
    assert tf.on_host and not BatchTransform(tiny(input={"augment": "flip-crop"}).input, True).on_host
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    out = tf(x)
    torch.manual_seed(0)  # the policy once per image, on uint8, then the scaling and the resize
    by_hand = torch.stack([tf.policy(img) for img in x]).float() / 255
    by_hand = torch.nn.functional.interpolate(by_hand, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, by_hand)
    assert tf.load(x, CPU).dtype == torch.uint8


# ---- --device --------------------------------------------------------------------------------


def test_the_cli_takes_indexed_gpus_and_refuses_other_names(capsys):
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:1"):
        assert parser().parse_args(["run", "s.yaml", "--device", name]).device == name
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "s.yaml", "--device", "gpu"])
    assert "use auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_an_indexed_gpu_that_torch_does_not_see_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(commands.UsageError, match="sees no CUDA device"):
        commands.pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert commands.pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(commands.UsageError, match=r"torch sees 1 GPU\(s\): cuda:0..cuda:0"):
        commands.pick_device("cuda:1")


def test_torch_fused_optimizers_are_used_where_torch_has_them():
    for name in ("sgd", "adam", "adamw"):
        assert train.make_optimizer(TrainConfig(optimizer=name), nn.Linear(2, 2), CPU).defaults["fused"] is True
