import math

import numpy as np
import pytest
import torch
import torchvision
from sklearn.metrics import f1_score

from bench import data
from bench.config import RunConfig, TrainConfig
from bench.training import loop as train
from bench.training.metrics import classification_metrics
from bench.training.transforms import BatchTransform
from tests.helpers import TINY


def tiny(**sections) -> RunConfig:
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values} if isinstance(values, dict) else values
    return RunConfig.model_validate(tree)


def test_lr_schedules():
    steps = 10  # per epoch
    const = TrainConfig(epochs=4)
    assert [train.lr_factor(const, s, steps) for s in (0, 39)] == [1.0, 1.0]
    step = TrainConfig(epochs=6, schedule="step", step_epochs=2, step_gamma=0.1)
    assert [round(train.lr_factor(step, s, steps), 6) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.1, 0.01]
    cos = TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1)
    assert train.lr_factor(cos, 0, steps) == pytest.approx(0.01)
    assert train.lr_factor(cos, 5, steps) == pytest.approx(0.01 + 0.99 * 0.5)
    assert train.lr_factor(cos, 10, steps) == pytest.approx(1.0)  # warm-up over, cosine starts at the top
    assert train.lr_factor(cos, 25, steps) == pytest.approx(0.5)  # half-way through the cosine
    assert train.lr_factor(cos, 40, steps) == pytest.approx(0.0, abs=1e-12)


def test_feature_cache_gives_the_same_run_as_the_full_path(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))  # a cold cache, whatever ran before
    cfg = tiny()
    ds = data.load(cfg.data)
    full = train.fit(cfg, ds, torch.device("cpu"), feature_cache=False)
    cached = train.fit(cfg, ds, torch.device("cpu"))
    again = train.fit(cfg, ds, torch.device("cpu"))
    assert (full.feature_cache, cached.feature_cache, again.feature_cache) == ("off", "computed", "hit")
    np.testing.assert_allclose(cached.test_logits, full.test_logits, rtol=1e-4, atol=1e-4)
    for a, b in zip(full.history, cached.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"])
    np.testing.assert_array_equal(cached.test_logits, again.test_logits)
    # another frozen variant on the same backbone, resolution and data reuses the features
    other = train.fit(tiny(train={"lr": 0.01}), ds, torch.device("cpu"))
    assert other.feature_cache == "hit"
    # a random-init backbone depends on the seed: another seed must not reuse them
    assert train.fit(tiny(seed=1), ds, torch.device("cpu")).feature_cache == "computed"


def test_seeded_runs_repeat_exactly_and_seeds_differ():
    cfg = tiny(model={"freeze": "stem-layer3"})
    ds = data.load(cfg.data)
    a, b = (train.fit(cfg, ds, torch.device("cpu")) for _ in range(2))
    np.testing.assert_array_equal(a.test_logits, b.test_logits)
    c = train.fit(tiny(model={"freeze": "stem-layer3"}, seed=3), ds, torch.device("cpu"))
    assert not np.array_equal(a.test_logits, c.test_logits)


def test_divergence_stops_the_run_at_once(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    state["layer4.2.conv3.weight"][0, 0] = float("nan")  # as a blown-up fine-tune would leave it
    torch.save(state, tmp_path / "nan.pth")
    cfg = tiny(model={"freeze": "stem-layer3", "weights": f"file:{tmp_path / 'nan.pth'}"}, train={"epochs": 3})
    with pytest.raises(train.Diverged) as e:
        train.fit(cfg, data.load(cfg.data), torch.device("cpu"))
    assert (e.value.epoch, e.value.step) == (1, 0) and not math.isfinite(e.value.loss)
    assert "lower train.lr" in str(e.value)


def test_best_epoch_selection_uses_validation_only():
    cfg = tiny(train={"epochs": 3, "select": "best"})
    out = train.fit(cfg, data.load(cfg.data), torch.device("cpu"))
    accs = [h["val_acc"] for h in out.history]
    assert out.best_epoch == accs.index(max(accs)) + 1
    last = train.fit(tiny(train={"epochs": 3, "select": "last"}), data.load(cfg.data), torch.device("cpu"))
    assert last.best_epoch == 3


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=1 R=2/3; b P=1/2 R=1/2; c P=1/2 R=1
    assert [c["precision"] for c in m["per_class"]] == pytest.approx([1, 0.5, 0.5])
    assert [c["recall"] for c in m["per_class"]] == pytest.approx([2 / 3, 0.5, 1])
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert [c["support"] for c in m["per_class"]] == [3, 2, 1]


def test_history_lr_is_the_mean_rate_each_epoch_used():
    cfg = tiny(train={"epochs": 3, "schedule": "cosine", "warmup_epochs": 1})
    out = train.fit(cfg, data.load(cfg.data), torch.device("cpu"))
    steps = -(-len(data.load(cfg.data).train) // cfg.train.batch_size)
    for h in out.history:
        used = [
            cfg.train.lr * train.lr_factor(cfg.train, s, steps)
            for s in range((h["epoch"] - 1) * steps, h["epoch"] * steps)
        ]
        assert h["lr"] == pytest.approx(np.mean(used))
    assert out.history[0]["lr"] < out.history[1]["lr"]  # warm-up, then the top of the cosine


def test_validation_loss_uses_the_training_loss_and_select_last_reports_its_own_epoch(tmp_path):
    cfg = tiny(train={"epochs": 3, "label_smoothing": 0.3, "select": "last"})
    ds = data.load(cfg.data)
    out = train.fit(cfg, ds, torch.device("cpu"))
    model = out.model.eval()
    with torch.no_grad():
        logits = model(BatchTransform(cfg.input, train=False)(ds.val.x))
    smoothed = torch.nn.functional.cross_entropy(logits, ds.val.y, label_smoothing=0.3).item()
    assert out.history[-1]["val_loss"] == pytest.approx(smoothed, rel=1e-4)
    assert out.best_epoch == 3  # select: last


@pytest.mark.slow
def test_a_compiled_run_matches_the_eager_run():
    """train.compile: torch.compile (inductor, a C++ compiler on the CPU) gives the same training up to float error."""
    cfg = tiny(model={**TINY["model"], "arch": "resnet18", "freeze": "stem-layer3"}, train={"epochs": 2})
    ds = data.load(cfg.data)
    eager = train.fit(cfg, ds, torch.device("cpu"), feature_cache=False)
    compiled = train.fit(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"compile": True})}),
        ds,
        torch.device("cpu"),
        feature_cache=False,
    )
    # inductor fuses and reorders float operations: two epochs of training drift by ~1e-3 in the logits
    np.testing.assert_allclose(compiled.test_logits, eager.test_logits, rtol=0, atol=1e-2)
    assert [h["val_acc"] for h in compiled.history] == pytest.approx([h["val_acc"] for h in eager.history], abs=0.02)
