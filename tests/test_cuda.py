"""The CUDA path: bf16 autocast, channels_last, the uint8 data set on the GPU, the feature and prefix caches
under bf16, out-of-memory handling, torch.compile and --parallel over GPUs. They need a GPU and skip without
one; scripts/gpu_study.sh runs them on the GPU machine."""

import json

import numpy as np
import pytest
import torch

from bench import data, train
from bench.cli import main
from bench.config import RunConfig
from bench.device import channels_last
from bench.models import build_model
from bench.transforms import BatchTransform
from tests.helpers import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_study.sh)")
GPU = torch.device("cuda")


def config(**sections) -> RunConfig:
    tree = {**TINY, "input": {"resolution": 32}}
    for key, values in sections.items():
        tree[key] = {**tree.get(key, {}), **values}
    return RunConfig.model_validate(tree)


def test_bf16_autocast_is_the_default_on_cuda_and_trains_like_fp32():
    cfg = config(model={**TINY["model"], "arch": "resnet18", "freeze": "none"}, train={"epochs": 3})
    ds = data.load(cfg.data)
    bf16 = train.fit(cfg, ds, GPU, feature_cache=False)
    fp32 = train.fit(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "fp32"})}),
        ds,
        GPU,
        feature_cache=False,
    )
    assert (bf16.precision, fp32.precision) == ("bfloat16", "fp32")
    assert np.isfinite(bf16.test_logits).all()
    assert bf16.history[-1]["train_loss"] == pytest.approx(fp32.history[-1]["train_loss"], rel=0.1)


def test_channels_last_model_and_batches():
    cfg = config()
    model = channels_last(build_model(cfg.model, 10).to(GPU), GPU)
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = BatchTransform(cfg.input, False, cfg.model)(
        torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, device=GPU)
    )
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.shape == (4, 3, 32, 32)


def test_the_uint8_data_set_is_moved_to_the_gpu_once():
    cfg = config(model={**TINY["model"], "freeze": "none"})
    model = build_model(cfg.model, 10).to(GPU)
    net, inputs, *_ = train._what_trains(cfg, model, data.load(cfg.data), GPU, torch.bfloat16, 256, False, None, None)
    assert all(x.device.type == "cuda" and x.dtype == torch.uint8 for x in inputs.values())


@pytest.mark.parametrize("freeze", ["backbone", "stem-layer3"])
def test_feature_and_prefix_caches_under_bf16_match_the_full_path(tmp_path, freeze):
    cfg = config(model={**TINY["model"], "arch": "resnet18", "freeze": freeze})
    ds = data.load(cfg.data)
    full = train.fit(cfg, ds, GPU, feature_cache=False)
    cached = train.fit(cfg, ds, GPU, cache_dir=tmp_path)
    again = train.fit(cfg, ds, GPU, cache_dir=tmp_path)
    assert cached.feature_cache.endswith("computed") and again.feature_cache.endswith("hit")
    np.testing.assert_allclose(cached.test_logits, full.test_logits, rtol=0.05, atol=0.05)  # bf16 rounding
    np.testing.assert_array_equal(cached.test_logits, again.test_logits)


def test_compiled_fine_tuning_matches_eager_on_the_gpu():
    cfg = config(model={**TINY["model"], "arch": "resnet18", "freeze": "none"}, train={"epochs": 2})
    ds = data.load(cfg.data)
    eager = train.fit(cfg, ds, GPU, feature_cache=False)
    compiled = train.fit(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"compile": True})}), ds, GPU, feature_cache=False
    )
    np.testing.assert_allclose(compiled.test_logits, eager.test_logits, rtol=0.05, atol=0.05)


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


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_parallel_runs_one_variant_per_gpu(write_study, tmp_path):
    path = write_study({"study": "gpus", "defaults": TINY, "ablate": {"train.lr": [0.01, 0.03, 0.1]}})
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--device", "cuda", "--parallel", "2"]) == 0
    assert len(list((results / "runs").iterdir())) == 4
