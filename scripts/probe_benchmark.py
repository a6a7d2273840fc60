"""Time bench's L-BFGS logistic-regression probe against scikit-learn's LogisticRegression.

Both fit the same standardised synthetic features with the same L2 strength (bench's l2 in
mean CE + l2/2 ||W||^2 is scikit-learn's C = 1 / (l2 * n_train)); the script prints each one's fit
time and test accuracy, and with --sweep also the time of bench's whole selection (every l2 of
probes.L2_GRID on validation, then the refit).

    python scripts/probe_benchmark.py                              # 10,000 x 512: ~1 min on 2 CPU cores
    python scripts/probe_benchmark.py --train 45000 --dim 2048     # CIFAR-10's split, ResNet-50's width
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from bench.training import probes


def features(n: int, dim: int, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, correlated features as pooled CNN features are: class means in a 64-d subspace."""
    basis = np.random.default_rng(0).standard_normal((64, dim)) / 8  # the same subspace for every split
    means = np.random.default_rng(1).standard_normal((classes, 64))
    y = rng.integers(0, classes, n)
    z = means[y] + 3.0 * rng.standard_normal((n, 64))
    return np.maximum(z @ basis + 0.5 * rng.standard_normal((n, dim)), 0).astype(np.float32), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--val", type=int, default=2_000)
    ap.add_argument("--test", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sweep", action="store_true", help="also time bench's whole L2 selection")
    args = ap.parse_args()
    rng = np.random.default_rng(2)
    (xtr, ytr), (xva, yva), (xte, yte) = (
        features(n, args.dim, args.classes, rng) for n in (args.train, args.val, args.test)
    )
    dev = torch.device(args.device)
    t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    print(f"features: {args.train:,} train / {args.test:,} test x {args.dim}, {args.classes} classes, l2 {args.l2:g}")
    print(f"device: {dev}, torch threads: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    mean, std = probes.standardise(t(xtr))
    w = torch.zeros(args.classes, args.dim, device=dev)
    w, b = probes.lbfgs((t(xtr) - mean) / std, t(ytr), args.l2, w, torch.zeros(args.classes, device=dev))
    head = probes.LogReg(mean, std, w, b, args.l2)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    ours_s = time.perf_counter() - t0
    ours_acc = (head(t(xte)).argmax(1).cpu().numpy() == yte).mean()

    t0 = time.perf_counter()
    scaler = StandardScaler().fit(xtr)
    sk = LogisticRegression(C=1 / (args.l2 * args.train), max_iter=1000).fit(scaler.transform(xtr), ytr)
    sk_s = time.perf_counter() - t0
    sk_acc = sk.score(scaler.transform(xte), yte)
    coef = np.abs(w.cpu().numpy() - sk.coef_).max() / np.abs(sk.coef_).max()

    print(f"bench probe (torch L-BFGS, float32): {ours_s:7.2f} s   test accuracy {100 * ours_acc:.2f}%")
    print(f"scikit-learn LogisticRegression:     {sk_s:7.2f} s   test accuracy {100 * sk_acc:.2f}%")
    print(
        f"speed-up {sk_s / ours_s:.1f}x; accuracy difference {100 * (ours_acc - sk_acc):+.2f} points; "
        f"largest weight difference {coef:.1e} of the largest weight"
    )
    if args.sweep:
        t0 = time.perf_counter()
        head, rows = probes.fit_logreg(t(xtr), t(ytr), t(xva), t(yva), args.classes)
        print(
            f"bench's whole selection ({len(rows) - 1} l2 values, then the refit): {time.perf_counter() - t0:.2f} s, "
            f"chosen l2 {head.l2:g}, test accuracy {100 * (head(t(xte)).argmax(1).cpu().numpy() == yte).mean():.2f}%"
        )


if __name__ == "__main__":
    main()
