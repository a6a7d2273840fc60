"""The CUDA path: precision (bf16 where the GPU has it, fp16 with a scaler), channels_last, the uint8 data set on
the GPU, no per-step syncs, every input mode, probes and caches against the CPU and the full path, resume, memory
rules, out-of-memory handling, torch.compile, --device cuda:N and --parallel. They need a GPU and skip without
one; scripts/gpu_study.sh runs them on the GPU machine (tests/test_device.py tests the same decisions on the CPU)."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from bench import data
from bench.cli import main
from bench.config import RunConfig
from bench.models import build_model
from bench.training import layout, prefix
from bench.training import loop as train
from bench.training.device import NATIVE_BF16, EvalBatch, gpu_memory_available, to_format
from bench.training.features import predict
from bench.training.outcome import FitContext
from bench.training.transforms import BatchTransform
from tests.helpers import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_study.sh)")
GPU, CPU = torch.device("cuda"), torch.device("cpu")
FINETUNE = {**TINY["model"], "arch": "resnet18", "freeze": "none"}


def config(**sections) -> RunConfig:
    tree = {**TINY, "input": {"resolution": 32}}
    for key, values in sections.items():
        tree[key] = {**tree.get(key, {}), **values} if isinstance(values, dict) else values
    return RunConfig.model_validate(tree)


def with_train(cfg: RunConfig, **values) -> RunConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=values)})


@pytest.fixture
def deterministic():
    """cuDNN's deterministic kernels and no autotuner, for the tests that compare runs bit for bit."""
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def test_auto_precision_fits_this_gpu_and_trains_like_fp32():
    cfg = config(model=FINETUNE, train={"epochs": 3})
    ds = data.load(cfg.data)
    auto = train.fit(cfg, ds, GPU, feature_cache=False)
    fp32 = train.fit(with_train(cfg, precision="fp32"), ds, GPU, feature_cache=False)
    native = torch.cuda.get_device_capability() >= NATIVE_BF16
    assert (auto.precision, fp32.precision) == ("bfloat16" if native else "float16", "fp32")
    assert np.isfinite(auto.test_logits).all()
    assert auto.history[-1]["train_loss"] == pytest.approx(fp32.history[-1]["train_loss"], rel=0.1)


def test_fp16_trains_with_its_gradient_scaler(tmp_path):
    cfg = with_train(config(model=FINETUNE, train={"epochs": 2}), precision="fp16")
    out = train.fit(cfg, data.load(cfg.data), GPU, feature_cache=False, checkpoint=tmp_path / "c.pt")
    assert out.precision == "float16" and np.isfinite(out.test_logits).all()
    assert torch.load(tmp_path / "c.pt", weights_only=True)["scaler"]["scale"] > 0


def test_channels_last_model_and_batches():
    cfg = config()
    model = build_model(cfg.model, 10).to(GPU)
    assert layout.choose(model, cfg, GPU, None) == torch.channels_last  # on CUDA at every resolution
    model = to_format(model, torch.channels_last)
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = BatchTransform(cfg.input, False, cfg.model)(
        torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, device=GPU)
    )
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("augment, on_gpu", [("flip-crop", True), ("trivialaugment", False)])
def test_the_uint8_data_set_is_moved_to_the_gpu_once_unless_augmented_on_the_host(augment, on_gpu):
    cfg = config(model={**TINY["model"], "freeze": "none"}, input={"resolution": 32, "augment": augment})
    model = build_model(cfg.model, 10).to(GPU)
    run = FitContext(cfg, model, data.load(cfg.data), GPU, torch.bfloat16, 256)
    inputs = train._what_trains(run, False, None).inputs
    assert all(x.device.type == ("cuda" if on_gpu else "cpu") and x.dtype == torch.uint8 for x in inputs.values())


def sync_warnings(fn) -> int:
    """How many synchronizing CUDA operations `fn()` makes (torch's sync debug mode, as warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_training_steps_do_not_wait_for_the_gpu():
    assert sync_warnings(lambda: torch.ones(1, device=GPU).item()) >= 1  # the mode reports what it should
    base = config(
        model=FINETUNE,
        data={**TINY["data"], "limit_train": 1000},
        input={"resolution": 32, "normalize": "imagenet", "augment": "flip-crop"},
        train={"batch_size": 8, "epochs": 1},
    )
    ds = data.load(base.data)
    train.fit(base, ds, GPU, feature_cache=False)  # warm: cuDNN's autotuner, lazy CUDA initialisation
    one = sync_warnings(lambda: train.fit(base, ds, GPU, feature_cache=False))
    two = sync_warnings(lambda: train.fit(with_train(base, epochs=2), ds, GPU, feature_cache=False))
    steps = -(-1000 // 8)
    # an epoch's syncs (the divergence check every DIVERGENCE_CHECK_STEPS, the epoch timer, validation), not one a step
    assert two - one < steps // 4, (one, two, steps)


@pytest.mark.parametrize("normalize", ["unit", "imagenet", "model", "pixel-mean"])
def test_every_normalisation_computes_on_the_gpu_what_it_does_on_the_cpu(normalize):
    cfg = config(input={"resolution": 32, "normalize": normalize})
    mean = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tf = BatchTransform(cfg.input, False, cfg.model, mean)
    torch.testing.assert_close(tf(x.to(GPU)).cpu(), tf(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("augment", ["none", "flip-crop", "flip-crop-zero", "trivialaugment", "randaugment"])
def test_every_augmentation_trains_on_the_gpu(augment):
    normalize = "pixel-mean" if augment == "flip-crop-zero" else "imagenet"
    cfg = config(model=FINETUNE, input={"resolution": 32, "augment": augment, "normalize": normalize})
    out = train.fit(with_train(cfg, epochs=1), data.load(cfg.data), GPU, feature_cache=False)
    assert np.isfinite(out.test_logits).all() and out.history[0]["train_images_per_sec"] > 0


@pytest.mark.parametrize("kind", ["logreg", "knn"])
def test_probes_on_the_gpu_predict_as_on_the_cpu(tmp_path, kind):
    cfg = with_train(config(model={**TINY["model"], "head": {"kind": kind}}), precision="fp32")
    ds = data.load(cfg.data)
    gpu = train.fit(cfg, ds, GPU, cache_dir=tmp_path / "gpu")
    cpu = train.fit(cfg, ds, CPU, cache_dir=tmp_path / "cpu")
    agree = (gpu.test_logits.argmax(1) == cpu.test_logits.argmax(1)).mean()
    assert agree >= 0.95, agree


@pytest.mark.parametrize("freeze", ["backbone", "stem-layer3"])
def test_feature_and_prefix_caches_under_autocast_match_the_full_path(tmp_path, freeze, deterministic):
    cfg = config(model={**TINY["model"], "arch": "resnet18", "freeze": freeze})
    ds = data.load(cfg.data)
    full = train.fit(cfg, ds, GPU, feature_cache=False)
    cached = train.fit(cfg, ds, GPU, cache_dir=tmp_path)
    again = train.fit(cfg, ds, GPU, cache_dir=tmp_path)
    assert cached.feature_cache.endswith("computed") and again.feature_cache.endswith("hit")
    np.testing.assert_allclose(cached.test_logits, full.test_logits, rtol=0.05, atol=0.05)  # bf16 rounding
    np.testing.assert_array_equal(cached.test_logits, again.test_logits)


def test_a_resumed_run_equals_an_uninterrupted_one_on_the_gpu(tmp_path, deterministic):
    cfg = config(model=FINETUNE, input={"resolution": 32, "augment": "flip-crop"}, train={"epochs": 2})
    ds = data.load(cfg.data)
    whole = train.fit(cfg, ds, GPU, feature_cache=False)

    def stop(history):
        raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        train.fit(cfg, ds, GPU, feature_cache=False, checkpoint=ckpt, on_epoch=stop)
    resumed = train.fit(cfg, ds, GPU, feature_cache=False, checkpoint=ckpt)
    np.testing.assert_array_equal(resumed.test_logits, whole.test_logits)


def test_memory_freed_by_an_earlier_run_counts_as_available():
    before = gpu_memory_available(GPU)
    big = torch.empty(int(0.6 * before), dtype=torch.uint8, device=GPU)
    del big  # torch's allocator keeps it reserved: the driver no longer counts it free
    assert torch.cuda.mem_get_info(GPU)[0] < 0.5 * before  # what the rule read before: 40% of the memory
    assert gpu_memory_available(GPU) >= 0.95 * before
    assert prefix.fits(int(0.45 * before), 0, GPU) is None


class Hungry(nn.Module):
    """Takes `per_image` bytes of GPU memory per image of a batch, as a big model at a high resolution would."""

    def __init__(self, per_image: int):
        super().__init__()
        self.per_image = per_image

    def forward(self, x):
        work = torch.zeros(len(x) * self.per_image, dtype=torch.uint8, device=x.device)
        return x.flatten(1)[:, :3] + work[0]


def test_an_evaluation_that_runs_out_of_gpu_memory_goes_on_at_a_smaller_batch():
    per_image = torch.cuda.get_device_properties(GPU).total_memory // 16  # 16 images: all of the GPU
    x = torch.randn(40, 3, 4, 4, device=GPU)
    batch = EvalBatch(256)
    out = predict(Hungry(per_image), x, None, batch, GPU, None)
    assert batch.size <= 8
    torch.testing.assert_close(out, x.flatten(1)[:, :3])
    assert torch.cuda.memory_allocated(GPU) < per_image  # nothing of the failed batches is left


def test_a_real_out_of_memory_is_recorded_with_a_hint_and_the_grid_goes_on(write_study, tmp_path):
    huge = {
        "input": {"resolution": 1024},
        "model": {**TINY["model"], "arch": "resnet152", "freeze": "none"},
        "train": {**TINY["train"], "batch_size": 120},
    }
    path = write_study(
        {
            "study": "oom",
            "defaults": {**TINY, "input": {"resolution": 32}},
            "variants": [
                {
                    "name": "huge",
                    "set": {f"{k}.{kk}": vv for k, v in huge.items() for kk, vv in v.items() if kk != "head"},
                }
            ],
        }
    )
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--device", "cuda"]) == 1
    states = {
        json.loads((d / "config.json").read_text())["config"]["input"]["resolution"]: json.loads(
            (d / "status.json").read_text()
        )
        for d in (results / "runs").iterdir()
    }
    assert states[32]["state"] == "done"
    assert states[1024]["state"] == "failed" and states[1024]["error"] == "out of memory"
    assert "smaller train.batch_size" in states[1024]["detail"]
    assert torch.cuda.memory_reserved(GPU) < 2 * 2**30  # the failed run's memory went back to the GPU


def run_states(results) -> list[str]:
    return sorted(json.loads(p.read_text())["state"] for p in (results / "runs").glob("*/status.json"))


def test_an_indexed_gpu_on_the_command_line(write_study, tmp_path):
    path = write_study({"study": "gpu0", "defaults": TINY})
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--device", "cuda:0"]) == 0
    assert run_states(tmp_path / "r") == ["done"]


def test_two_workers_share_one_gpu(write_study, tmp_path):
    path = write_study({"study": "share", "defaults": TINY, "ablate": {"train.lr": [0.01, 0.03, 0.1]}})
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--device", "cuda", "--parallel", "2"]) == 0
    assert run_states(tmp_path / "r") == ["done"] * 4


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_parallel_runs_one_variant_per_gpu(write_study, tmp_path):
    path = write_study({"study": "gpus", "defaults": TINY, "ablate": {"train.lr": [0.01, 0.03, 0.1]}})
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--device", "cuda", "--parallel", "2"]) == 0
    assert len(list((results / "runs").iterdir())) == 4


def test_bench_speed_reports_the_gpu_peak_memory(write_study):
    from bench.speed import run_speed
    from bench.study import load_study_file

    path = write_study({"study": "speed", "defaults": {**TINY, "model": FINETUNE}})
    row = run_speed(load_study_file(path).variants, GPU).iloc[0]
    assert 0 < row.gpu_peak_mb <= row.gpu_reserved_mb


# last: compiling takes the longest, and a time limit then cuts only this test
def test_compiled_fine_tuning_matches_eager_on_the_gpu():
    cfg = config(model=FINETUNE, train={"epochs": 2})
    ds = data.load(cfg.data)
    eager = train.fit(cfg, ds, GPU, feature_cache=False)
    compiled = train.fit(with_train(cfg, compile=True), ds, GPU, feature_cache=False)
    np.testing.assert_allclose(compiled.test_logits, eager.test_logits, rtol=0.05, atol=0.05)
