"""The prefix cache (bench.training.prefix): a partially frozen ResNet trains on its frozen stages' outputs computed
once, with the same results as the full path."""

import numpy as np
import pytest
import torch

from bench import data
from bench.config import RunConfig, prefix_cacheable
from bench.training import loop as train
from bench.training import prefix
from tests.helpers import TINY

CPU = torch.device("cpu")


def config(arch="resnet18", freeze="stem-layer3", **train_settings) -> RunConfig:
    return RunConfig.model_validate(
        {
            **TINY,
            "input": {"resolution": 32},
            "model": {**TINY["model"], "arch": arch, "freeze": freeze},
            "train": {**TINY["train"], **train_settings},
        }
    )


def same_run(a: train.Outcome, b: train.Outcome) -> None:
    np.testing.assert_allclose(a.test_logits, b.test_logits, rtol=1e-4, atol=1e-4)
    for x, y in zip(a.history, b.history, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_acc"] == pytest.approx(y["val_acc"])
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize(
    "arch, freeze", [("resnet18", "stem-layer3"), ("resnet18", "stem-layer1"), ("timm:test_resnet", "stem-stage2")]
)
def test_the_prefix_path_trains_the_same_network_as_the_full_path(tmp_path, arch, freeze):
    cfg = config(arch, freeze, epochs=3, optimizer="sgd", lr=0.05, weight_decay=1e-4)
    ds = data.load(cfg.data)
    full = train.fit(cfg, ds, CPU, feature_cache=False)
    cached = train.fit(cfg, ds, CPU, cache_dir=tmp_path)
    again = train.fit(cfg, ds, CPU, cache_dir=tmp_path)
    assert (full.feature_cache, cached.feature_cache, again.feature_cache) == ("off", "prefix computed", "prefix hit")
    same_run(full, cached)
    np.testing.assert_array_equal(cached.test_logits, again.test_logits)
    # frozen means frozen on this path too: the prefix's weights and BatchNorm statistics never moved
    train.seed_everything(cfg.seed)
    initial = train.build_model(cfg.model, 10).backbone.state_dict()
    moved = {n.split(".")[0] for n, v in cached.model.backbone.state_dict().items() if not torch.equal(v, initial[n])}
    frozen_layers = {"resnet18:stem-layer3": 3, "resnet18:stem-layer1": 1, "timm:test_resnet:stem-stage2": 2}
    assert moved == {f"layer{i}" for i in range(frozen_layers[f"{arch}:{freeze}"] + 1, 5)}


def test_networks_it_cannot_split_and_settings_it_cannot_use_train_the_full_path(tmp_path):
    convnext = config("timm:test_convnext", "stem-stage2", epochs=1)
    assert train.fit(convnext, data.load(convnext.data), CPU, cache_dir=tmp_path).feature_cache == "off"
    assert not prefix_cacheable(
        config(epochs=1).model_copy(update={"input": config().input.model_copy(update={"augment": "flip-crop"})})
    )
    assert not prefix_cacheable(config(freeze="none", epochs=2, unfreeze_after=1))
    assert not prefix_cacheable(config(freeze="stem-layer3", epochs=2, unfreeze_after=1))


def test_a_prefix_too_large_for_memory_is_not_cached_and_the_run_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(prefix, "memory_available", lambda device: 1_000_000)  # 1 MB available
    cfg = config(epochs=1)
    out = train.fit(cfg, data.load(cfg.data), CPU, cache_dir=tmp_path)
    assert out.feature_cache.startswith("off: the frozen prefix's outputs need")
    assert "more than half the 0.0 GiB of memory available" in out.feature_cache
    assert not list(tmp_path.glob("*.pt"))


def test_a_checkpoint_of_the_full_path_is_not_resumed_on_the_prefix_path(tmp_path):
    cfg = config(epochs=2)
    ds = data.load(cfg.data)
    ckpt = tmp_path / "checkpoint.pt"

    def stop(history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(cfg, ds, CPU, checkpoint=ckpt, feature_cache=False, on_epoch=stop)
    resumed = train.fit(cfg, ds, CPU, checkpoint=ckpt, cache_dir=tmp_path / "cache")
    assert resumed.feature_cache == "prefix computed" and [h["epoch"] for h in resumed.history] == [1, 2]
    same_run(train.fit(cfg, ds, CPU, feature_cache=False), resumed)
