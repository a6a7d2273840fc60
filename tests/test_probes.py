import dataclasses

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bench import data
from bench.config import RunConfig
from bench.data import Split
from bench.training import loop as train
from bench.training import probes
from bench.training.transforms import BatchTransform
from tests.helpers import TINY


def splits(seed=0, n=2400, features=48, classes=10, sep=2.0):
    """Train / val / test features and labels, 60 / 20 / 20 %."""
    x, y = make_classification(
        n_samples=n,
        n_features=features,
        n_informative=features // 2,
        n_redundant=features // 6,
        n_classes=classes,
        class_sep=sep,
        flip_y=0.05,
        random_state=seed,
    )
    a, b = int(0.6 * n), int(0.8 * n)
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def tensors(x, y):
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@pytest.mark.parametrize("l2", [1e-4, 1e-2, 1.0])
def test_logistic_probe_is_scikit_learns_logistic_regression(l2):
    (xtr, ytr), (xva, yva), (xte, yte) = splits()
    head, rows = probes.fit_logreg(*tensors(xtr, ytr), *tensors(xva, yva), 10, grid=(l2,))
    assert head.l2 == l2 and rows[-1]["selected"] and rows[-1]["l2"] == l2
    # Ours: mean CE + l2/2 ||W||^2. scikit-learn's: C * sum CE + 1/2 ||W||^2 = C n * (ours) when
    # l2 = 1 / (C n); so C = 1 / (n l2) gives the same minimiser (intercept unpenalised in both).
    scaler = StandardScaler().fit(xtr)
    sk = LogisticRegression(C=1 / (len(ytr) * l2), max_iter=10_000, tol=1e-8).fit(scaler.transform(xtr), ytr)
    ours = head(torch.tensor(xte, dtype=torch.float32)).argmax(1).numpy()
    assert abs((ours == yte).mean() - sk.score(scaler.transform(xte), yte)) <= 0.005
    np.testing.assert_allclose(head.linear.weight.detach().numpy(), sk.coef_, atol=2e-3 * np.abs(sk.coef_).max())
    # softmax is unchanged by adding one constant to every class's (unpenalised) bias: compare centred
    bias = head.linear.bias.detach().numpy()
    np.testing.assert_allclose(bias - bias.mean(), sk.intercept_ - sk.intercept_.mean(), atol=1e-2)


def test_logistic_probe_sweep_chooses_on_validation_and_matches_scikit_learn_there():
    (xtr, ytr), (xva, yva), (xte, yte) = splits(seed=1, features=64)
    head, rows = probes.fit_logreg(*tensors(xtr, ytr), *tensors(xva, yva), 10)
    candidates, selected = rows[:-1], rows[-1]
    assert [r["l2"] for r in candidates] == list(probes.L2_GRID) and len(candidates) >= 12
    assert selected["val_acc"] == pytest.approx(max(r["val_acc"] for r in candidates), abs=1 / len(yva))
    assert selected["l2"] == head.l2 and selected["epoch"] == len(rows)
    scaler = StandardScaler().fit(xtr)
    sk = LogisticRegression(C=1 / (len(ytr) * head.l2), max_iter=10_000, tol=1e-8).fit(scaler.transform(xtr), ytr)
    ours = (head(torch.tensor(xte, dtype=torch.float32)).argmax(1).numpy() == yte).mean()
    assert abs(ours - sk.score(scaler.transform(xte), yte)) <= 0.005
    assert ours > 0.5  # a real signal, not two chance-level classifiers agreeing


def knn_numpy(xtr, ytr, xq, k, temperature, classes):
    """DINO's weighted k-NN, brute force in float64."""
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    q = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    sims = q @ a.T
    idx = np.argsort(-sims, axis=1)[:, :k]
    w = np.exp(np.take_along_axis(sims, idx, 1) / temperature)
    votes = np.stack([(w * (ytr[idx] == c)).sum(1) for c in range(classes)], 1)
    return votes.argmax(1)


def test_knn_probe_is_brute_force_weighted_knn():
    (xtr, ytr), (xva, yva), (xte, yte) = splits(seed=2, n=1000, features=16, sep=1.0)
    head, rows = probes.fit_knn(*tensors(xtr, ytr), *tensors(xva, yva), 10)
    candidates = rows[:-1]
    ks = [k for k in probes.K_GRID if k < len(ytr)]
    assert [(r["k"], r["temperature"]) for r in candidates] == [(k, t) for k in ks for t in probes.T_GRID]
    for r in candidates:
        ref = (knn_numpy(xtr, ytr, xva, r["k"], r["temperature"], 10) == yva).mean()
        assert r["val_acc"] == pytest.approx(ref, abs=1.01 / len(yva))  # float32 vs float64: at most one near-tie
    best = max(candidates, key=lambda r: (r["val_acc"], -r["val_loss"], -r["epoch"]))
    assert (head.k, head.temperature) == (best["k"], best["temperature"]) and rows[-1]["selected"]
    ours = head(torch.tensor(xte, dtype=torch.float32))
    ref = knn_numpy(xtr, ytr, xte, head.k, head.temperature, 10)
    assert (ours.argmax(1).numpy() != ref).sum() <= 1
    np.testing.assert_allclose(torch.softmax(ours, 1).sum(1).numpy(), 1, rtol=1e-5)  # log vote shares


def probe_cfg(kind: str, **model) -> RunConfig:
    return RunConfig.model_validate({**TINY, "model": {**TINY["model"], **model, "head": {"kind": kind}}})


@pytest.mark.parametrize("kind", ["logreg", "knn"])
def test_probe_runs_through_fit_and_selection_never_sees_the_test_labels(kind):
    cfg = probe_cfg(kind)
    ds = data.load(cfg.data)
    out = train.fit(cfg, ds, torch.device("cpu"))
    n_candidates = (
        len(probes.L2_GRID)
        if kind == "logreg"
        else len(probes.T_GRID) * len([k for k in probes.K_GRID if k < len(ds.train)])
    )
    assert len(out.history) == n_candidates + 1 and out.best_epoch == len(out.history)
    assert [r["selected"] for r in out.history] == [False] * n_candidates + [True]
    assert out.test_logits.shape == (len(ds.test), len(ds.classes))
    assert out.feature_cache in ("computed", "hit") and out.precision == "fp32"
    # the returned classifier predicts new images as the probe did
    with torch.no_grad():
        logits = out.model.eval()(BatchTransform(cfg.input, False, cfg.model)(ds.test.x))
    np.testing.assert_allclose(logits.numpy(), out.test_logits, rtol=1e-4, atol=1e-4)

    shuffled = dataclasses.replace(ds, test=Split(ds.test.x, ds.test.y[torch.randperm(len(ds.test))]))
    again = train.fit(cfg, shuffled, torch.device("cpu"))
    assert again.feature_cache == "hit"
    keys = ("l2", "k", "temperature", "val_acc", "val_loss", "train_acc")
    flat = lambda history: [r[k] for r in history for k in keys]  # noqa: E731
    assert flat(again.history) == pytest.approx(flat(out.history), nan_ok=True)
    np.testing.assert_array_equal(again.test_logits, out.test_logits)


def test_probes_need_a_frozen_backbone_and_no_augmentation():
    with pytest.raises(ValidationError, match="probe on frozen features: it needs model.freeze: backbone"):
        probe_cfg("logreg", freeze="stem-layer3")
    cfg = RunConfig.model_validate(
        {
            **TINY,
            "input": {"resolution": 16, "augment": "flip-crop"},
            "model": {**TINY["model"], "head": {"kind": "knn"}},
        }
    )
    with pytest.raises(ValueError, match="un-augmented images"):
        train.fit(cfg, data.load(cfg.data), torch.device("cpu"))
