"""Probes on frozen features, the field's standard protocols (`model.head.kind: logreg | knn`).

logreg (Kornblith et al., CVPR 2019): multinomial logistic regression on features standardised with
the training split's mean/std, fitted full-batch by L-BFGS (torch.optim.LBFGS, on the compute device),
minimising  mean cross-entropy + l2 / 2 * ||W||^2  (the bias is not penalised). l2 is swept over L2_GRID
from strong to weak, each fit warm-started from the previous one, and chosen on validation accuracy;
the chosen l2 is then refitted from zero on the training split. scikit-learn's LogisticRegression
minimises  C * sum(cross-entropy) + ||W||^2 / 2, the same objective times C * n_train: l2 = 1 / (C * n).

knn (DINO, Caron et al., ICCV 2021): cosine similarity of L2-normalised features; the k most similar
training images vote for their class with weight exp(similarity / T); (k, T) chosen on validation.

The test split is used once, by the selected model; never in selection. history.csv of a probe run:
one row per candidate in the order tried (epoch = its number; l2, or k and temperature; the candidate's
train and validation loss and accuracy; seconds of its fit), then one row for the selected model, the
one that made the test predictions (selected = True, best_epoch points at it). lr is NaN (no learning
rate); for k-NN, train_* are leave-one-out on up to LOO_IMAGES training images.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.infra.files import cache_root
from bench.infra.record import HistoryRow
from bench.training import features
from bench.training.device import precision_name
from bench.training.outcome import FeatureCache, FitContext, Outcome

L2_GRID = tuple(10.0**e for e in range(5, -7, -1))  # 1e5 .. 1e-6, strongest first (warm starts)
K_GRID = (1, 3, 5, 10, 20, 50, 100, 200)
T_GRID = (0.02, 0.07, 0.2, 1.0)
LOO_IMAGES = 5000
TOL = 1e-5  # L-BFGS stops when no gradient entry exceeds this (scikit-learn's tol is 1e-4)
NAN = float("nan")


class LogReg(nn.Module):
    """Standardise with the training split's statistics, then one linear layer: the fitted probe."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)
        self.l2 = l2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.float() - self.mean) / self.std)


class KNN(nn.Module):
    """Weighted cosine k-NN over the training features; returns log vote shares (softmax gives them back)."""

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int, temperature: float):
        super().__init__()
        self.register_buffer("bank", F.normalize(bank.float(), dim=1))
        self.register_buffer("labels", labels)
        self.num_classes, self.k, self.temperature = num_classes, k, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sims, idx = nearest(F.normalize(x.float(), dim=1), self.bank, self.k)
        return vote(sims, self.labels[idx], self.temperature, self.num_classes).clamp_min(1e-12).log()


def nearest(queries: torch.Tensor, bank: torch.Tensor, k: int, exclude: torch.Tensor | None = None, chunk=1024):
    """Similarities and indices of the k most similar bank rows per query, most similar first; `exclude`
    gives each query's own bank row, left out (leave-one-out)."""
    sims, idx = [], []
    for i in range(0, len(queries), chunk):
        s = queries[i : i + chunk] @ bank.T
        if exclude is not None:
            s[torch.arange(len(s), device=s.device), exclude[i : i + chunk]] = -math.inf
        top = s.topk(k, dim=1)
        sims.append(top.values)
        idx.append(top.indices)
    return torch.cat(sims), torch.cat(idx)


def vote(sims: torch.Tensor, labels: torch.Tensor, temperature: float, num_classes: int) -> torch.Tensor:
    """DINO's weighted vote, as class shares summing to 1; shifting by the top similarity cancels out."""
    weights = ((sims - sims[:, :1]) / temperature).exp()
    votes = torch.zeros(len(sims), num_classes, device=sims.device).scatter_add_(1, labels, weights)
    return votes / votes.sum(1, keepdim=True)


def _scores(logits: torch.Tensor, y: torch.Tensor, log_probs: bool = False) -> tuple[float, float]:
    loss = F.nll_loss(logits, y) if log_probs else F.cross_entropy(logits, y)
    return loss.item(), (logits.argmax(1) == y).float().mean().item()


def _row(i: int, seconds: float, n_train: int, train: tuple, val: tuple, **params) -> HistoryRow:
    row = HistoryRow(epoch=i, lr=NAN, train_loss=train[0], train_acc=train[1], val_loss=val[0], val_acc=val[1])
    row.update(seconds=seconds, train_images_per_sec=n_train / max(seconds, 1e-9), l2=NAN, k=NAN, temperature=NAN)
    row.update(params)  # the setting tried: l2, or k and temperature
    row["selected"] = False
    return row


def _best(rows: list[dict]) -> dict:
    """Highest validation accuracy, then lowest validation loss, then the first tried."""
    return max(rows, key=lambda r: (r["val_acc"], -r["val_loss"], -r["epoch"]))


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per feature; constant features get std 1 (as scikit-learn's StandardScaler)."""
    mean, std = x.mean(0), x.std(0, unbiased=False)
    return mean, std.masked_fill(std <= 1e-6 * std.max(), 1.0)


@contextlib.contextmanager
def _latency_bound(x: torch.Tensor):
    """One CPU thread for a small problem: L-BFGS runs thousands of tiny ops, and with several threads
    each one waits at a barrier, which costs milliseconds when other jobs share the cores."""
    threads = torch.get_num_threads()
    small = x.device.type == "cpu" and x.numel() < 1 << 22
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(threads)


def lbfgs(x, y, l2: float, w: torch.Tensor, b: torch.Tensor, max_iter: int = 1000):
    """Minimise mean cross-entropy + l2/2 ||w||^2 from (w, b), full batch."""
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=TOL, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, x, w.T), y) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    with _latency_bound(x):
        opt.step(closure)
    return w.detach(), b.detach()


def fit_logreg(x_tr, y_tr, x_va, y_va, num_classes: int, grid=L2_GRID, advance=None) -> tuple[LogReg, list[dict]]:
    mean, std = standardise(x_tr)
    xs_tr, xs_va = (x_tr - mean) / std, (x_va - mean) / std
    w = torch.zeros(num_classes, x_tr.shape[1], device=x_tr.device)
    b = torch.zeros(num_classes, device=x_tr.device)
    rows = []
    for i, l2 in enumerate(grid, 1):
        t0 = time.perf_counter()
        w, b = lbfgs(xs_tr, y_tr, l2, w, b, max_iter=500)
        with torch.no_grad():
            train, val = _scores(xs_tr @ w.T + b, y_tr), _scores(xs_va @ w.T + b, y_va)
        rows.append(_row(i, time.perf_counter() - t0, len(y_tr), train, val, l2=l2))
        if advance:
            advance(1)
    l2 = _best(rows)["l2"]
    t0 = time.perf_counter()  # refit from zero: the result does not depend on the path's warm starts
    w, b = lbfgs(xs_tr, y_tr, l2, torch.zeros_like(w), torch.zeros_like(b))
    head = LogReg(mean, std, w, b, l2)
    with torch.no_grad():
        train, val = _scores(head(x_tr), y_tr), _scores(head(x_va), y_va)
    rows.append({**_row(len(rows) + 1, time.perf_counter() - t0, len(y_tr), train, val, l2=l2), "selected": True})
    return head, rows


def fit_knn(x_tr, y_tr, x_va, y_va, num_classes: int, ks=K_GRID, temps=T_GRID, advance=None) -> tuple[KNN, list]:
    t0 = time.perf_counter()
    bank, queries = F.normalize(x_tr.float(), dim=1), F.normalize(x_va.float(), dim=1)
    ks = [k for k in ks if k < len(bank)] or [len(bank) - 1]  # leave-one-out needs one image to spare
    s_va, i_va = nearest(queries, bank, max(ks))
    loo = torch.linspace(0, len(bank) - 1, min(len(bank), LOO_IMAGES), device=bank.device).long()
    s_tr, i_tr = nearest(bank[loo], bank, max(ks), exclude=loo)
    search = (time.perf_counter() - t0) / (len(ks) * len(temps))  # each candidate's share of the search
    rows = []
    for k in ks:
        for t in temps:
            t0 = time.perf_counter()
            val = _scores(vote(s_va[:, :k], y_tr[i_va[:, :k]], t, num_classes).clamp_min(1e-12).log(), y_va, True)
            train = _scores(
                vote(s_tr[:, :k], y_tr[i_tr[:, :k]], t, num_classes).clamp_min(1e-12).log(), y_tr[loo], True
            )
            rows.append(
                _row(len(rows) + 1, search + time.perf_counter() - t0, len(y_tr), train, val, k=k, temperature=t)
            )
            if advance:
                advance(1)
    best = _best(rows)
    head = KNN(x_tr, y_tr, num_classes, best["k"], best["temperature"])
    rows.append({**best, "epoch": len(rows) + 1, "selected": True})
    return head, rows


def fit_probe(run: FitContext, cache_dir: Path | None, feature_cache: bool) -> Outcome:
    """train.fit for `model.head.kind: logreg | knn`: the backbone's features (bench.training.features, cached as
    for the mlp head), the probe fitted and selected on train/val, the test split predicted once."""
    cfg, model, data, device, dtype = run.cfg, run.model, run.data, run.device, run.dtype
    kind = cfg.model.head.kind
    if cfg.input.augment != "none":
        raise ValueError(f"model.head.kind '{kind}' fits on features of un-augmented images: set input.augment: none")
    with tempfile.TemporaryDirectory() as tmp:  # --no-feature-cache: computed and used, never kept or reused
        where = (cache_dir or cache_root() / "features") if feature_cache else Path(tmp)
        feats, hit = features.split_features(model.backbone, data, cfg, device, dtype, run.eval_bs, where, run.progress)
    x = {s: f.to(device).float() for s, f in feats.items()}
    y = {s: getattr(data, s).y.to(device) for s in ("train", "val", "test")}
    n = len(L2_GRID) if kind == "logreg" else len(K_GRID) * len(T_GRID)
    advance = run.bar(f"{kind} probe: candidates on validation", n)
    fit = fit_logreg if kind == "logreg" else fit_knn
    head, history = fit(x["train"], y["train"], x["val"], y["val"], len(data.classes), advance=advance)
    with torch.no_grad():
        test_logits = head(x["test"])
    model.head = head  # the classifier now predicts new images as the probe does
    return Outcome(
        history,
        test_logits.cpu().numpy(),
        len(history),
        time.perf_counter() - run.started,
        FeatureCache.HIT if hit else FeatureCache.COMPUTED,
        precision_name(dtype),
        model,
        run.layout,  # the feature pass's, as fit built the model
    )
