"""He et al. 2016's CIFAR-10 networks (section 4.2, Table 6, Figure 6): ResNet-20/32/44/56/110 and plain nets.

6n+2 weighted layers: a 3x3 convolution with 16 filters, then three stages of n basic blocks (two 3x3
convolutions each) with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps; the first block of stages 2
and 3 has stride 2. Shortcuts are identities; where the width doubles the shortcut subsamples and pads the
new channels with zeros (the paper's option A, no parameters). A plain net is the same stack without
shortcuts. Global average pooling gives 64 features; the 10-way (or C-way) linear layer is bench's head
(`model.head.hidden: 0, dropout: 0`). Convolutions are He-initialised (fan_out, ReLU), as in the paper.

model.arch  cifar_resnet20 | cifar_resnet32 | cifar_resnet44 | cifar_resnet56 | cifar_resnet110
            cifar_plain20  | cifar_plain32  | cifar_plain44  | cifar_plain56  | cifar_plain110
Their stages for `model.freeze` are stem, layer1, layer2, layer3 (timm's ResNet grouping).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import CIFAR_ARCHS


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, residual: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.residual, self.stride, self.pad = residual, stride, c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity; subsampled by the stride and zero-padded to the new width where they change."""
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x) if self.residual else out)


class CifarNet(nn.Module):
    """(N, 3, 32, 32) -> (N, 64) pooled features; `fc` is left to bench's head."""

    def __init__(self, n: int, residual: bool = True, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c_in = widths[0]
        for i, width in enumerate(widths, 1):
            blocks = [
                BasicBlock(c_in if j == 0 else width, width, 2 if i > 1 and j == 0 else 1, residual) for j in range(n)
            ]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c_in = width
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean((2, 3))


def build(arch: str) -> CifarNet:
    n, residual = CIFAR_ARCHS[arch]
    return CifarNet(n, residual)
