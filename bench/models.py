"""Backbones (torchvision ResNets, any timm model) with their weights, the head, and freezing by stage.

model.arch     resnet18 | resnet34 | resnet50 | resnet101 | resnet152 (torchvision), timm:<model name>
model.weights  none (random init) | file:<state dict> (any arch) | torchvision:IMAGENET1K_V1|V2 (that
               ResNet's weight enum) | timm:<model>[.<tag>] (a timm pretrained tag of the arch's model; on a
               torchvision ResNet it builds timm's ResNet of that depth: resnet50 + timm:resnet50.a1_in1k)
model.freeze   backbone | none | stem | stem-stageN (the stem and the first N of `stages`); ResNets also
               stem-layerN. A frozen stage has requires_grad=False *and* stays in eval mode, so its
               BatchNorm statistics never move: frozen means bit-identical.

Weights load through the libraries' own loaders (torch hub cache, Hugging Face cache) or a local file.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

import torch
import torchvision
from torch import nn

from bench import cifar_nets
from bench.config import (
    CIFAR_ARCHS,
    TORCHVISION_ARCHS,
    HeadConfig,
    ModelConfig,
    WeightsSpec,
    frozen_stages,
    static_stage_names,
)
from bench.pretrained import WeightsError, hub_file

# timm's own grouping of its ResNets (group_matcher), applied to torchvision's, which have none:
# coarse (stages, for freezing) and fine (blocks, for layer-wise learning-rate decay)
RESNET_GROUPS = {"stem": r"^conv1|^bn1|^maxpool", "blocks": r"^layer(\d+)"}
RESNET_BLOCKS = {"stem": r"^conv1|^bn1|^maxpool", "blocks": r"^layer(\d+)\.(\d+)"}


class Classifier(nn.Module):
    """backbone (image -> pooled features) followed by the head (features -> logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, frozen: list[str], frozen_params: list[str] = ()):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.set_frozen(frozen, frozen_params)

    def set_frozen(self, modules: list[str], params: list[str]) -> None:
        """Freeze exactly these backbone submodules (kept in eval mode) and parameters (which include those
        held by no submodule, such as a ViT's cls_token); the rest of the backbone trains."""
        self.frozen = list(modules)  # backbone submodules that do not train and stay in eval mode
        params = set(params) | {
            f"{m}.{n}" for m in modules for n, _ in self.backbone.get_submodule(m).named_parameters()
        }
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(name not in params)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:  # keep frozen BatchNorm statistics fixed, frozen dropout off
            self.backbone.get_submodule(name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _torchvision_enum(arch: str, tag: str):
    try:
        return torchvision_weights(arch, tag)
    except ValueError as e:
        raise WeightsError(str(e)) from None


# ---- building ----------------------------------------------------------------------------------


def torchvision_weights(arch: str, tag: str):
    """The torchvision weight enum member `tag` of a ResNet; ValueError naming the tags it has."""
    enum = torchvision.models.get_model_weights(arch)
    if tag not in enum.__members__ or tag == "DEFAULT":
        allowed = ", ".join(f"torchvision:{t}" for t in enum.__members__ if t != "DEFAULT")
        raise ValueError(f"{enum.__name__} has no {tag}; {arch} takes model.weights {allowed}")
    return enum[tag]


def build_backbone(weights: str, arch: str = "resnet50") -> nn.Module:
    """The arch without its ImageNet classifier: (N, 3, H, W) -> (N, feature_width) pooled features."""
    spec = WeightsSpec.parse(weights)
    kind, tag = spec.kind, spec.tag
    if arch in CIFAR_ARCHS:  # He et al.'s CIFAR networks: random init or a file, no library weights
        net = cifar_nets.build(arch)
    elif kind == "timm" or arch.startswith("timm:"):
        net = _timm(spec.timm_name(arch), kind == "timm", weights, arch)
    else:
        import torchvision

        enum = _torchvision_enum(arch, tag) if kind == "torchvision" else None
        try:
            net = torchvision.models.get_model(arch, weights=enum)
        except Exception as e:  # offline: URLError, or a truncated file in the cache
            raise WeightsError(_missing(weights, arch, hub_file(enum.url), enum.url, e)) from None
        net.num_features = net.fc.in_features
        net.fc = nn.Identity()
    if kind == "file":
        state = _read_state_dict(Path(tag), net, arch)
        net.load_state_dict(state)
    return net


def _timm(name: str, pretrained: bool, weights: str, arch: str) -> nn.Module:
    import timm

    def create(**kwargs):
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)

    try:
        try:  # ViT-like models: position embeddings follow the input size (input.resolution may be 32 px)
            return create(dynamic_img_size=True)
        except TypeError:  # convolutional models take any size and have no such argument
            return create()
    except Exception as e:  # offline: huggingface_hub's LocalEntryNotFoundError and friends
        if not pretrained:
            raise
        from huggingface_hub import constants
        from timm.models import get_pretrained_cfg

        hub_id = getattr(get_pretrained_cfg(name), "hf_hub_id", None) or f"timm/{name}"
        path = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}" / "snapshots"
        raise WeightsError(_missing(weights, arch, path, f"https://huggingface.co/{hub_id}", e)) from None


def build_head(cfg: HeadConfig, num_features: int, num_classes: int) -> nn.Module:
    """GAP features -> [BatchNorm] -> Dense(hidden, ReLU) -> Dropout -> Dense(classes), as in the lab."""
    layers = [nn.BatchNorm1d(num_features)] if cfg.norm else []
    if cfg.hidden == 0:
        return nn.Sequential(*layers, nn.Dropout(cfg.dropout), nn.Linear(num_features, num_classes))
    return nn.Sequential(
        *layers,
        nn.Linear(num_features, cfg.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(cfg.dropout),
        nn.Linear(cfg.hidden, num_classes),
    )


def build_model(cfg: ModelConfig, num_classes: int, prebuilt: Prebuilt | None = None) -> Classifier:
    """The classifier: `prebuilt`'s backbone where given (Prebuilt), else one built now."""
    backbone = prebuilt.take() if prebuilt is not None else build_backbone(cfg.weights, cfg.arch)
    modules, params = freeze_plan(backbone, cfg.freeze, cfg.arch)
    return Classifier(backbone, build_head(cfg.head, feature_width(backbone), num_classes), modules, params)


class Prebuilt:
    """A backbone built before its run (the pre-flight check builds it to check its weights), handed to that run
    with the CPU random state its build left: the run takes it instead of building its own, and draws its head
    and everything after from the same random numbers as if it had built it, so its result is the same to the
    last bit (tests/test_runner.py). A run seeds torch with its seed and then builds its backbone before it
    draws anything else (training.loop.fit): `prebuild` does the same under that seed."""

    def __init__(self, arch: str, weights: str, seed: int):
        self.key = (arch, weights, seed)
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
            torch.manual_seed(seed)
            self.net: nn.Module | None = build_backbone(weights, arch)
            self.rng_after = torch.get_rng_state()

    def take(self) -> nn.Module:
        """The backbone (once), and torch's CPU random state set to what building it left."""
        if self.net is None:
            raise RuntimeError(f"the prebuilt backbone {self.key} was taken already")
        net, self.net = self.net, None
        torch.set_rng_state(self.rng_after)
        return net


def feature_width(backbone: nn.Module) -> int:
    """Width of the backbone's output: timm's head_hidden_size where a pre-logits layer follows the pooling
    (MobileNetV3's conv_head), else num_features."""
    return getattr(backbone, "head_hidden_size", None) or backbone.num_features


# ---- stages and freezing -----------------------------------------------------------------------


def stages(backbone: nn.Module) -> dict[str, list[str]]:
    """{stage: parameter names} in forward order, from timm's coarse group_matcher (torchvision ResNets:
    timm's ResNet grouping): 'stem'; then 'layer1'..'layer4' for ResNets, 'stage1'..'stageK' otherwise
    (ConvNeXt/Swin stages, ViT blocks with the final norm in the last, EfficientNet block groups);
    then 'tail', what follows the last stage (ConvNeXt's head.norm, Swin's norm): only `backbone` freezes it."""
    from timm.models._manipulate import group_parameters

    matcher = backbone.group_matcher(coarse=True) if hasattr(backbone, "group_matcher") else RESNET_GROUPS
    groups = list(group_parameters(backbone, matcher).values())
    out, tail = {}, None
    if isinstance(matcher, dict):
        patterns = {k: [v] if isinstance(v, str) else [p for p, _ in v] for k, v in matcher.items() if v}
        if groups and any(re.match(p, groups[0][0]) for p in patterns.get("stem", [])):
            out["stem"] = groups.pop(0)
        if groups and not any(re.match(p, n) for ps in patterns.values() for p in ps for n in groups[-1]):
            tail = groups.pop()  # parameters no pattern claims: timm puts them after everything
    for i, names in enumerate(groups, 1):
        out[f"layer{i}" if all(n.startswith(f"layer{i}.") for n in names) else f"stage{i}"] = names
    if tail:
        out["tail"] = tail
    return out


def layer_ids(backbone: nn.Module) -> dict[str, int]:
    """{parameter name: depth} from 0 (the stem) to the last layer, by timm's fine group_matcher (ResNets:
    one layer per residual block, ViTs per transformer block); what follows the last block (a final norm)
    is the last layer. Layer-wise learning-rate decay scales each layer's rate by its distance from the head."""
    from timm.models._manipulate import group_parameters

    matcher = backbone.group_matcher(coarse=False) if hasattr(backbone, "group_matcher") else RESNET_BLOCKS
    return group_parameters(backbone, matcher, reverse=True)


@functools.cache
def stage_names(arch: str) -> tuple[str, ...] | None:
    """The freezable stages of an arch (timm's: built once on the meta device, no memory, no weights)."""
    if names := static_stage_names(arch):
        return names
    try:
        with torch.device("meta"):
            net = build_backbone("none", arch)
    except Exception:
        return None
    return tuple(s for s in stages(net) if s != "tail")


def check_freeze(cfg: ModelConfig) -> None:
    """ValueError when model.freeze names stages the arch does not have (timm models: known only once built;
    bench.config checks the torchvision and CIFAR ResNets itself). Called as a study file loads."""
    names = stage_names(cfg.arch)  # None: the model does not build on the meta device; checked at build
    if cfg.freeze.startswith("stem") and names is not None:
        frozen_stages(cfg.freeze, names, cfg.arch)


def freeze_plan(backbone: nn.Module, freeze: str, arch: str = "resnet50") -> tuple[list[str], list[str]]:
    """(submodules kept in eval mode, parameter names frozen) for a freeze setting."""
    if freeze == "backbone":  # everything, pooling included
        return [n for n, _ in backbone.named_children()], [n for n, _ in backbone.named_parameters()]
    groups = stages(backbone)
    chosen = frozen_stages(freeze, [s for s in groups if s != "tail"], arch)
    params = [p for s in chosen for p in groups[s]]
    return whole_modules(backbone, set(params)), params


def whole_modules(backbone: nn.Module, params: set[str]) -> list[str]:
    """The largest submodules all of whose parameters are in `params` (BatchNorm and dropout inside them
    are covered by putting them in eval mode)."""
    total, hit = Counter(), Counter()
    for name, _ in backbone.named_parameters():
        parts = name.split(".")
        for i in range(1, len(parts)):  # every enclosing module, outermost first
            prefix = ".".join(parts[:i])
            total[prefix] += 1
            hit[prefix] += name in params
    out: list[str] = []
    for m in total:
        if hit[m] == total[m] and not any(m.startswith(o + ".") for o in out):
            out.append(m)
    return out


# ---- normalisation -----------------------------------------------------------------------------


@functools.cache
def input_stats(arch: str, weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the weights were trained with (`input.normalize: model`): the torchvision enum's
    transforms, or timm's pretrained_cfg; for none/file, those of the arch's default pretrained weights."""
    spec = WeightsSpec.parse(weights)
    kind, tag = spec.kind, spec.tag
    if kind == "timm" or arch.startswith("timm:"):
        from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(spec.timm_name(arch))
        return (tuple(cfg.mean), tuple(cfg.std)) if cfg else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    transform = _torchvision_enum(arch, tag if kind == "torchvision" else "IMAGENET1K_V1").transforms()
    return tuple(transform.mean), tuple(transform.std)


# ---- weights files -----------------------------------------------------------------------------


def _label(arch: str) -> str:
    if arch in CIFAR_ARCHS:  # cifar_resnet20 -> CIFAR ResNet-20, cifar_plain20 -> CIFAR plain-20
        kind, depth = re.fullmatch(r"cifar_(resnet|plain)(\d+)", arch).groups()
        return f"CIFAR {'ResNet' if kind == 'resnet' else 'plain'}-{depth}"
    return f"ResNet-{arch[6:]}" if arch in TORCHVISION_ARCHS else arch.replace(":", " ")


def _missing(spec: str, arch: str, path: Path, url: str, err: Exception) -> str:
    return (
        f"pretrained weights '{spec}' could not be loaded: {type(err).__name__}: {err}\n"
        f"  the cache looks for: {path}\n"
        f"  fix: download {url} on a machine with internet and copy it there, "
        f"or set model.weights: file:/path/to/{arch.removeprefix('timm:')}.pth (a {_label(arch)} state dict); "
        f"bench never falls back to random weights on its own (weights: none does that, labelled)"
    )


def _read_state_dict(path: Path, net: nn.Module, arch: str) -> dict:
    """A state dict for `net` from a file: plain, wrapped by a training script, or a bench Classifier's;
    the ImageNet classifier's weights are dropped, anything else must match exactly."""
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; model.weights: file:<path> needs a saved "
            f"{_label(arch)} state dict (torch.save(model.state_dict(), path))"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):  # a bench Classifier: its backbone only
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    classifier = getattr(net, "pretrained_cfg", {}).get("classifier", "fc")
    heads = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    expected = set(net.state_dict())
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(heads)}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise WeightsError(
            f"weights file {path} is not a {_label(arch)} state dict: "
            f"{len(missing)} keys missing (e.g. {sorted(missing)[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
        )
    shapes = [k for k, v in net.state_dict().items() if v.shape != state[k].shape]
    if shapes:
        raise WeightsError(
            f"weights file {path} does not fit {_label(arch)}: {len(shapes)} shapes differ, {shapes[:3]}"
        )
    return state


def describe_weights(weights: str) -> str:
    """The weights in words, as the run record and every report page state them. A weights file with a provenance
    file beside it (scripts/export_weights.py: NAME.json next to NAME.safetensors) is described by its `what`."""
    if weights == "none":
        return "random init (no pretraining)"
    if weights.startswith("file:"):
        path = Path(weights[5:])
        try:
            what = json.loads(path.with_suffix(".json").read_text()).get("what")
        except (OSError, ValueError, AttributeError):
            what = None
        if isinstance(what, str) and what:
            return f"pretrained: {what} ({path.name})"
    return f"pretrained ({weights})"
