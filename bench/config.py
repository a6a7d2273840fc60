"""One run's configuration, typed and validated once: every stage receives its own slice
(`DataConfig`, `InputConfig`, `ModelConfig`, `TrainConfig`) and trusts it.

Study files (which expand into many of these) are read by `bench.study`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bench import pretrained
from bench.util import did_you_mean

# A ResNet's stages in forward order; `freeze: stem-layerN` freezes the stem through layerN.
# Every family (ResNets too) also takes `stem-stageN`: the stem and its first N stages (bench.models.stages).
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
FREEZE = ("backbone", "stem-layer3", "stem-layer2", "stem-layer1", "stem", "none")
FREEZE_RE = re.compile(r"^(backbone|none|stem|stem-layer[1-3]|stem-stage[1-9]\d*)$")
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# He et al. 2016's CIFAR networks (bench.cifar_nets): {arch: (n blocks per stage, residual)}, 6n+2 layers
CIFAR_ARCHS = {
    f"cifar_{kind}{6 * n + 2}": (n, kind == "resnet") for kind in ("resnet", "plain") for n in (3, 5, 7, 9, 18)
}
# Which tags exist for which arch is checked by ModelConfig (bench.models.check_model), without I/O.
WEIGHTS_RE = re.compile(r"^(none|torchvision:IMAGENET1K_V[12]|timm:[\w-]+(\.[\w-]+)?|file:.+)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    # cifar10 | cifar100 | svhn | stl10 | flowers102 | pets | dtd: official releases through torchvision's
    # readers and their official splits (bench.data.official); folder: an image-folder tree; digits: offline demo
    source: Literal["cifar10", "cifar100", "svhn", "stl10", "flowers102", "pets", "dtd", "folder", "digits"] = "cifar10"
    # official sets: torchvision's root (downloaded there when `download`); folder: a tree with
    # train/<class>/* and test/<class>/*, or a .tar.gz of one. Relative to the study file.
    path: str | None = None
    download: bool = True
    # stratified, carved out of the training images; flowers102 and dtd use their official validation split
    val_size: int = Field(5000, ge=1)
    # the side images are stored at (shorter side resized, centre-cropped); needed by flowers102, pets, dtd
    # (images of many sizes); None: as the files are. input.resolution then resizes on the device.
    image_size: int | None = Field(None, ge=8, le=1024)
    split_seed: int = 0  # fixed apart from the run seed: every variant sees the same split
    # Data size: a stratified subset of the training images (a count, or a fraction of those left after
    # the validation split); smaller subsets are nested in larger ones, validation and test never change.
    limit_train: int | None = Field(None, ge=10)
    train_fraction: float | None = Field(None, gt=0, le=1)
    limit_test: int | None = Field(None, ge=10)  # stratified subset of the test images, for quick studies

    @model_validator(mode="before")
    @classmethod
    def _official_validation(cls, data):
        """Flowers-102 and DTD use their official validation split: a data.val_size (say from a study's
        CIFAR defaults, which --set cannot remove) does not apply, and is left out so it cannot tell runs apart."""
        from bench.data.catalog import OFFICIAL  # here: bench.data imports this module

        spec = OFFICIAL.get(data.get("source")) if isinstance(data, dict) else None
        if spec and spec.official_val:
            data = {k: v for k, v in data.items() if k != "val_size"}
        return data

    @model_validator(mode="after")
    def _path_needed(self):
        if self.source == "folder" and not self.path:
            raise ValueError("data.source 'folder' needs data.path (an image-folder tree or its .tar.gz)")
        from bench.data.catalog import OFFICIAL

        if self.source in OFFICIAL and OFFICIAL[self.source].size is None and self.image_size is None:
            raise ValueError(
                f"data.source '{self.source}' has images of many sizes: set data.image_size, the side they are "
                "stored at (e.g. 224: shorter side resized, then centre-cropped)"
            )
        if self.limit_train is not None and self.train_fraction is not None:
            raise ValueError(
                "data.limit_train and data.train_fraction both size the training set: set one of them "
                "(an axis over data size uses one key)"
            )
        return self


class InputConfig(Strict):
    resolution: int = Field(224, ge=16, le=1024)  # CIFAR's 32 px are resized to this
    # unit = [0,1] as in the lab report; imagenet = ImageNet mean/std; model = the mean/std the
    # model's weights were trained with (torchvision enum transforms, timm pretrained_cfg)
    # pixel-mean = the training images' per-pixel mean subtracted, [0,1] scale (He et al.'s CIFAR recipe)
    normalize: Literal["unit", "imagenet", "model", "pixel-mean"] = "unit"
    # flip-crop: random flip, 4 px reflect padding, random crop; flip-crop-zero: the same with zero padding
    # (He et al.'s CIFAR augmentation)
    augment: Literal["none", "flip-crop", "flip-crop-zero", "trivialaugment", "randaugment"] = "none"

    @model_validator(mode="after")
    def _policies_on_images(self):
        if self.normalize == "pixel-mean" and self.augment in ("trivialaugment", "randaugment"):
            raise ValueError(
                f"input.augment '{self.augment}' works on images, and input.normalize 'pixel-mean' subtracts the "
                "mean first: use flip-crop or flip-crop-zero with pixel-mean, or another input.normalize"
            )
        return self


class HeadConfig(Strict):
    # mlp: the lab's head, trained by train.optimizer; logreg / knn: probes fitted on the frozen
    # features with hyper-parameters chosen on validation (bench.training.probes), model.freeze: backbone only
    kind: Literal["mlp", "logreg", "knn"] = "mlp"
    hidden: int = Field(256, ge=0)  # 0 = one linear layer on the pooled features
    dropout: float = Field(0.5, ge=0, lt=1)
    # BatchNorm on the pooled features first (as in linear probing): centres features whose
    # common component is large, which otherwise kills the hidden ReLUs of the lab's head.
    norm: bool = False


@dataclass(frozen=True)
class WeightsSpec:
    """model.weights read: the one parser of its `kind:tag` spelling, which every reader goes through."""

    kind: str  # none | torchvision | timm | file
    tag: str  # after the colon: the enum member, timm's <model>[.<tag>] or the state dict's path; '' for none

    @classmethod
    def parse(cls, weights: str) -> WeightsSpec:
        kind, _, tag = weights.partition(":")
        return cls(kind, tag)

    def timm_name(self, arch: str) -> str:
        """The timm name whose pretrained config applies: the weights' own tag, else a timm arch's model."""
        return self.tag if self.kind == "timm" else arch.removeprefix("timm:")


class ModelConfig(Strict):
    # resnet18 | resnet34 | resnet50 | resnet101 | resnet152 (torchvision) | timm:<model name>
    # | cifar_resnet20..110, cifar_plain20..110 (He et al.'s CIFAR networks, bench.cifar_nets)
    arch: str = "resnet50"
    # none | torchvision:IMAGENET1K_V1|V2 (that arch's enum) | timm:<model>[.<tag>] | file:<state dict path>
    weights: str = "torchvision:IMAGENET1K_V1"
    # backbone | none | stem | stem-layer1..3 (ResNets) | stem-stageN (any family)
    freeze: str = "backbone"
    head: HeadConfig = HeadConfig()

    @property
    def weights_spec(self) -> WeightsSpec:
        return WeightsSpec.parse(self.weights)

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        if v in TORCHVISION_ARCHS or v in CIFAR_ARCHS:
            return v
        if not v.startswith("timm:"):
            raise ValueError(
                f"expected {', '.join(TORCHVISION_ARCHS)} (torchvision) or timm:<model name>, or one of He et al.'s "
                f"CIFAR networks: {', '.join(CIFAR_ARCHS)}{did_you_mean(v, [*TORCHVISION_ARCHS, *CIFAR_ARCHS])}"
            )
        import timm

        name = v[5:]
        if "." in name or not timm.is_model(name):
            hint = " (a pretrained tag goes in model.weights: timm:<model>.<tag>)" if "." in name else ""
            raise ValueError(f"timm has no model '{name}'{did_you_mean(name, timm.list_models())}{hint}")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if not WEIGHTS_RE.match(v):
            raise ValueError(
                "expected none, torchvision:IMAGENET1K_V1, torchvision:IMAGENET1K_V2, "
                "timm:<model>[.<tag>] (e.g. timm:resnet50.a1_in1k) or file:<path to a state dict>"
            )
        return v

    @field_validator("freeze")
    @classmethod
    def _freeze(cls, v: str) -> str:
        if not FREEZE_RE.match(v):  # reported like a Literal's error, with the open-ended spelling
            allowed = ", ".join(f"'{f}'" for f in FREEZE)
            raise PydanticCustomError("literal_error", f"Input should be {allowed} or 'stem-stage<N>'")
        return v

    @model_validator(mode="after")
    def _combination(self):
        """Weights that exist for this arch (library registries, no I/O), stages the model has, probes
        only on a frozen backbone."""
        kind, tag = self.weights_spec.kind, self.weights_spec.tag
        name = self.arch.removeprefix("timm:")
        if kind == "torchvision":
            if self.arch not in TORCHVISION_ARCHS:
                raise ValueError(
                    f"model.weights '{self.weights}' need a torchvision arch ({', '.join(TORCHVISION_ARCHS)}); "
                    f"for {self.arch} use timm:{name}[.<tag>], file:<path> or none"
                )
            known = pretrained.torchvision_weights(self.arch)
            if tag not in known["urls"]:
                allowed = ", ".join(f"torchvision:{t}" for t in known["urls"])
                raise ValueError(f"{known['enum']} has no {tag}; {self.arch} takes model.weights {allowed}")
        elif kind == "timm":
            tags = pretrained.timm_tags(name)["tags"]
            if tag.partition(".")[0] != name or not tags or ("." in tag and tag not in tags):
                raise ValueError(
                    f"model.weights '{self.weights}' are not timm pretrained weights of {self.arch}; "
                    + (f"its tags: {', '.join('timm:' + t for t in tags)}" if tags else f"timm has none for {name}")
                )
        if self.freeze.startswith("stem") and (names := static_stage_names(self.arch)):
            frozen_stages(self.freeze, names, self.arch)  # timm models: bench.models.check_freeze, as studies load
        if self.head.kind != "mlp" and self.freeze != "backbone":
            raise ValueError(
                f"model.head.kind '{self.head.kind}' is a probe on frozen features: "
                f"it needs model.freeze: backbone (got '{self.freeze}')"
            )
        return self


def static_stage_names(arch: str) -> tuple[str, ...] | None:
    """The stages of the torchvision and CIFAR ResNets; None for timm models (known once built: bench.models)."""
    if arch in TORCHVISION_ARCHS:
        return STAGES
    return STAGES[:4] if arch in CIFAR_ARCHS else None


def frozen_stages(freeze: str, names=STAGES, arch: str = "resnet50") -> list[str]:
    """'backbone' -> all stages; 'stem-layer2' or 'stem-stage2' -> stem and the first two; 'none' -> []."""
    names = list(names)
    if freeze == "backbone":
        return names
    if freeze == "none":
        return []
    n = 0 if freeze == "stem" else int(re.search(r"\d+$", freeze).group())
    spelled = "stem-stageN" + (", or stem-layerN" if names[1:2] == ["layer1"] else "")
    if names[:1] != ["stem"] or n > len(names) - 1 or ("layer" in freeze and names[1:2] != ["layer1"]):
        raise ValueError(
            f"model.freeze '{freeze}' does not fit {arch}: its stages are {', '.join(names)} "
            f"(freeze backbone, none, stem or {spelled} with N from 1 to {len(names) - 1})"
        )
    return names[: n + 1]


def features_cacheable(cfg: RunConfig) -> bool:
    """A frozen backbone without random augmentation: its pooled features are computed once (training.features)."""
    return cfg.model.freeze == "backbone" and cfg.input.augment == "none"


def prefix_cacheable(cfg: RunConfig) -> bool:
    """Frozen first stages, no augmentation, the lab's head, no gradual unfreezing: the frozen stages' outputs are
    computed once and only the rest trains (training.prefix)."""
    tc = cfg.train
    return (
        cfg.model.freeze.startswith("stem")
        and cfg.input.augment == "none"
        and cfg.model.head.kind == "mlp"
        and tc.unfreeze_after is None
    )


class TrainConfig(Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1, le=65536)
    nesterov: bool = True  # sgd: Nesterov momentum (false: the classical momentum of He et al.)
    epochs: int = Field(5, ge=1)
    schedule: Literal["constant", "step", "multistep", "cosine"] = "constant"
    step_epochs: int = Field(2, ge=1)  # step schedule: multiply lr by step_gamma every step_epochs
    step_gamma: float = Field(0.1, gt=0, le=1)
    # multistep schedule: multiply lr by step_gamma at each of these epochs (fractions allowed: the step
    # nearest to epoch * steps per epoch; He et al.'s 32k and 48k iterations are epochs 91 and 136.5 at 45k/128)
    milestones: tuple[float, ...] = ()
    warmup_epochs: float = Field(0.0, ge=0)  # warm-up length (fractions allowed), before any schedule
    # linear: from lr/100 up to lr; constant: lr/10 throughout, then lr (He et al.'s ResNet-110 warm-up)
    warmup_shape: Literal["linear", "constant"] = "linear"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # Fine-tuning recipes (bench.training.recipes), for a backbone that trains (model.freeze other than backbone):
    backbone_lr_mult: float = Field(1.0, gt=0, le=100)  # the backbone's lr relative to the head's (train.lr)
    layer_decay: float | None = Field(None, gt=0, le=1)  # layer-wise lr decay: each layer down one more factor
    no_decay_norm_bias: bool = False  # no weight decay on norm weights, biases, position embeddings (timm's rule)
    unfreeze_after: int | None = Field(None, ge=0)  # gradual unfreezing: the head alone for this many epochs,
    unfreeze_every: int = Field(1, ge=1)  # then one more stage (from the last down) every this many epochs
    # auto: bf16 autocast on GPUs with bf16 tensor cores (compute capability >= 8.0), fp16 with a gradient
    # scaler on older GPUs (T4, V100), fp32 on the CPU (bench.training.device.autocast_dtype)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False  # torch.compile the network that trains (inductor; on the CPU it needs a C++ compiler)
    select: Literal["best", "last"] = "best"  # test with the best-validation epoch, or the last

    @model_validator(mode="after")
    def _warmup(self):
        if self.schedule == "multistep" and (
            not self.milestones or list(self.milestones) != sorted(set(self.milestones))
        ):
            raise ValueError(
                "train.schedule 'multistep' needs train.milestones: increasing epochs at which the lr is "
                f"multiplied by train.step_gamma (got {list(self.milestones)}), e.g. [91, 136.5]"
            )
        if self.milestones and self.schedule != "multistep":
            raise ValueError(f"train.milestones apply to train.schedule 'multistep' only (got '{self.schedule}')")
        if any(not 0 < m < self.epochs for m in self.milestones):
            raise ValueError(
                f"train.milestones {list(self.milestones)} must lie inside 0..train.epochs ({self.epochs})"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"train.warmup_epochs ({self.warmup_epochs}) must be less than train.epochs ({self.epochs})"
            )
        if self.unfreeze_after is not None and self.unfreeze_after >= self.epochs:
            raise ValueError(
                f"train.unfreeze_after ({self.unfreeze_after}) must be less than train.epochs ({self.epochs}): "
                "otherwise nothing ever unfreezes"
            )
        return self


class RunConfig(Strict):
    """Everything that determines a run's result (with the data's and weights' fingerprints: bench.infra.identity)."""

    # factories, not instances: an instance is validated when this module is imported, and checking the
    # default weights imports torchvision (seconds), which `bench --help` and `bench list` can do without
    data: DataConfig = Field(default_factory=DataConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _model_statistics(self):
        if self.input.normalize == "model" and self.model.arch in CIFAR_ARCHS:
            raise ValueError(
                f"input.normalize 'model' uses the ImageNet statistics of a library's weights; {self.model.arch} "
                "has none: use pixel-mean (He et al.), unit or imagenet"
            )
        return self

    @model_validator(mode="after")
    def _recipes_need_a_trainable_backbone(self):
        tc = self.train
        used = [
            k
            for k, on in (
                ("train.backbone_lr_mult", tc.backbone_lr_mult != 1),
                ("train.layer_decay", tc.layer_decay is not None),
                ("train.unfreeze_after", tc.unfreeze_after is not None),
            )
            if on
        ]
        if used and self.model.freeze == "backbone":
            raise ValueError(
                f"{', '.join(used)} shape how the backbone trains, but model.freeze is 'backbone' (nothing in it "
                "trains): set model.freeze to none or stem-..."
            )
        return self


class ConfigError(Exception):
    """A study file that cannot be run; `problems` are (where, what) pairs, all reported at once."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path, self.problems = str(path), problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def __str__(self) -> str:
        return f"invalid study file {self.path}:\n" + "\n".join(f"  - {p}" for p in self.problems)


def known_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


KNOWN_KEYS = known_keys()
