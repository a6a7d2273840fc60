"""The lab's recipe as a notebook would write it in PyTorch: the reference scripts/first_run_benchmark.py times
`bench run` against. torchvision's ImageFolder with a per-image transform, a DataLoader, a frozen ResNet-50 run on
every batch of every epoch, the lab's Dense head, Adam, validation each epoch and one test pass.

    python scripts/notebook_baseline.py EXTRACTED_FOLDER [--train 2000 --val 500 --test 500 --size 64 --epochs 5]

EXTRACTED_FOLDER holds train/<class>/*.jpg and test/<class>/*.jpg (the shared copy, extracted). The slice is
stratified like bench's (the same sizes, not the same images): a timing, not a result to cite.
"""

import argparse
import time

import numpy as np
import torch
import torchvision
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)

    transform = T.Compose([T.Resize(args.size), T.ToTensor()])  # scaled to [0, 1], as the lab's images
    train_all = torchvision.datasets.ImageFolder(f"{args.folder}/train", transform=transform)
    test_all = torchvision.datasets.ImageFolder(f"{args.folder}/test", transform=transform)
    idx = np.arange(len(train_all))
    rest, val_idx = train_test_split(idx, test_size=args.val, stratify=train_all.targets, random_state=0)
    train_idx, _ = train_test_split(
        rest, train_size=args.train, stratify=np.array(train_all.targets)[rest], random_state=0
    )
    test_idx, _ = train_test_split(
        np.arange(len(test_all)), train_size=args.test, stratify=test_all.targets, random_state=0
    )
    loaders = {
        "train": DataLoader(Subset(train_all, train_idx), batch_size=32, shuffle=True),
        "val": DataLoader(Subset(train_all, val_idx), batch_size=32),
        "test": DataLoader(Subset(test_all, test_idx), batch_size=32),
    }

    backbone = torchvision.models.resnet50(weights=None)
    backbone.fc = nn.Identity()
    backbone.requires_grad_(False)
    backbone.eval()  # frozen, BatchNorm statistics included
    head = nn.Sequential(nn.Linear(2048, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)

    def accuracy(split: str) -> float:
        head.eval()
        correct = 0
        with torch.no_grad():
            for x, y in loaders[split]:
                correct += (head(backbone(x)).argmax(1) == y).sum().item()
        return correct / len(loaders[split].dataset)

    for epoch in range(1, args.epochs + 1):
        head.train()
        for x, y in loaders["train"]:
            with torch.no_grad():
                features = backbone(x)  # the frozen backbone runs again every epoch
            loss = nn.functional.cross_entropy(head(features), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: val accuracy {accuracy('val'):.4f}", flush=True)
    print(f"test accuracy {accuracy('test'):.4f}; {time.perf_counter() - started:.1f} s in the script")


if __name__ == "__main__":
    main()
