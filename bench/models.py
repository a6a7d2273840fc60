"""ResNet-50 backbones with their weights, the classification head, and freezing by stage.

Weights come through the libraries' own loaders (torchvision weight enums, timm pretrained
tags) or from a local state-dict file. A frozen stage has requires_grad=False *and* stays in
eval mode, so its BatchNorm running statistics never move: frozen means bit-identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from bench.config import STAGES, HeadConfig, ModelConfig

FEATURES = 2048  # ResNet-50's pooled feature width
STAGE_MODULES = {
    "stem": ("conv1", "bn1"),
    "layer1": ("layer1",),
    "layer2": ("layer2",),
    "layer3": ("layer3",),
    "layer4": ("layer4",),
}


class WeightsError(Exception):
    """Pretrained weights that cannot be had: which file, where the cache looks, how to pass one."""


class Classifier(nn.Module):
    """backbone (image -> pooled features) followed by the head (features -> logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: list[str]):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.frozen = frozen  # backbone submodule names that never train
        for name in frozen:
            self.backbone.get_submodule(name).requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:  # keep frozen BatchNorm statistics fixed
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def frozen_stages(freeze: str) -> list[str]:
    """'backbone' -> all stages; 'stem-layer2' -> stem, layer1, layer2; 'none' -> []."""
    if freeze == "backbone":
        return list(STAGES)
    if freeze == "none":
        return []
    last = freeze.split("-")[-1]
    return list(STAGES[: STAGES.index(last) + 1])


def build_head(cfg: HeadConfig, num_classes: int) -> nn.Module:
    """GAP features -> [BatchNorm] -> Dense(hidden, ReLU) -> Dropout -> Dense(classes), as in the lab."""
    layers = [nn.BatchNorm1d(FEATURES)] if cfg.norm else []
    if cfg.hidden == 0:
        return nn.Sequential(*layers, nn.Dropout(cfg.dropout), nn.Linear(FEATURES, num_classes))
    return nn.Sequential(
        *layers,
        nn.Linear(FEATURES, cfg.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(cfg.dropout),
        nn.Linear(cfg.hidden, num_classes),
    )


def build_model(cfg: ModelConfig, num_classes: int) -> Classifier:
    backbone = build_backbone(cfg.weights)
    names = [m for stage in frozen_stages(cfg.freeze) for m in STAGE_MODULES[stage]]
    if cfg.freeze == "backbone":
        names = [n for n, _ in backbone.named_children()]  # everything, pooling included
    return Classifier(backbone, build_head(cfg.head, num_classes), names)


def build_backbone(weights: str) -> nn.Module:
    """ResNet-50 without its ImageNet classifier: (N, 3, H, W) -> (N, 2048) pooled features."""
    import torchvision

    kind, _, tag = weights.partition(":")
    if kind == "none":
        net = torchvision.models.resnet50(weights=None)
    elif kind == "torchvision":
        enum = torchvision.models.ResNet50_Weights[tag]
        try:
            net = torchvision.models.resnet50(weights=enum)
        except Exception as e:  # offline: URLError, or a truncated file in the cache
            raise WeightsError(_missing(weights, hub_file(enum.url), enum.url, e)) from None
    elif kind == "timm":
        import timm

        try:
            return timm.create_model(tag, pretrained=True, num_classes=0)
        except Exception as e:  # offline: huggingface_hub's LocalEntryNotFoundError and friends
            hf = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
            raise WeightsError(
                _missing(weights, hf / f"models--timm--{tag}", f"https://huggingface.co/timm/{tag}", e)
            ) from None
    else:  # file:<path>
        net = torchvision.models.resnet50(weights=None)
        net.load_state_dict(_read_state_dict(Path(tag)), strict=False)
    net.fc = nn.Identity()
    return net


def hub_file(url: str) -> Path:
    """Where torch.hub looks for (and downloads) a checkpoint URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _missing(spec: str, path: Path, url: str, err: Exception) -> str:
    return (
        f"pretrained weights '{spec}' could not be loaded: {type(err).__name__}: {err}\n"
        f"  the cache looks for: {path}\n"
        f"  fix: download {url} on a machine with internet and copy it there, "
        f"or set model.weights: file:/path/to/resnet50.pth (a ResNet-50 state dict); "
        f"bench never falls back to random weights on its own (weights: none does that, labelled)"
    )


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; model.weights: file:<path> needs a saved "
            "ResNet-50 state dict (torch.save(model.state_dict(), path))"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {
        k.removeprefix("module.").removeprefix("backbone."): v
        for k, v in state.items()
        if not k.removeprefix("module.").startswith(("fc.", "head."))
    }
    import torchvision

    expected = set(torchvision.models.resnet50().state_dict()) - {"fc.weight", "fc.bias"}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise WeightsError(
            f"weights file {path} is not a ResNet-50 state dict: "
            f"{len(missing)} keys missing (e.g. {sorted(missing)[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )
    return state


def describe_weights(weights: str) -> str:
    return "random init (no pretraining)" if weights == "none" else f"pretrained ({weights})"
