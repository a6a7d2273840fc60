"""Study files: typed run configuration, validated once at load time, expanded into variants.

A study file has `defaults` (one run's configuration), then any of
  ablate:   {dotted.key: [values]}  one variant per value, everything else at the defaults
  grid:     {dotted.key: [values]}  the cartesian product of all listed keys
  variants: [{name, set: {dotted.key: value}}]  hand-written extras
  seeds:    [0, 1, 2]                every variant is repeated once per seed
Everything downstream receives a validated, frozen `RunConfig` and trusts it.
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Backbone stages in forward order; `freeze: stem-layerN` freezes the stem through layerN.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
FREEZE = ("backbone", "stem-layer3", "stem-layer2", "stem-layer1", "stem", "none")
WEIGHTS_RE = re.compile(r"^(none|torchvision:IMAGENET1K_V[12]|timm:resnet50(\.[\w-]+)?|file:.+)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    source: Literal["cifar10", "folder", "digits"] = "cifar10"
    # cifar10: torchvision root (downloaded there when `download`); folder: a tree with
    # train/<class>/* and test/<class>/*, or a .tar.gz of one. Relative to the study file.
    path: str | None = None
    download: bool = True
    val_size: int = Field(5000, ge=1)  # stratified, carved out of the training images
    split_seed: int = 0  # fixed apart from the run seed: every variant sees the same split
    limit_train: int | None = Field(None, ge=10)  # stratified subsample, for quick studies
    limit_test: int | None = Field(None, ge=10)

    @model_validator(mode="after")
    def _path_needed(self):
        if self.source == "folder" and not self.path:
            raise ValueError("data.source 'folder' needs data.path (an image-folder tree or its .tar.gz)")
        return self


class InputConfig(Strict):
    resolution: int = Field(224, ge=16, le=1024)  # CIFAR's 32 px are resized to this
    normalize: Literal["unit", "imagenet"] = "unit"  # unit = [0,1] as in the lab report
    augment: Literal["none", "flip-crop", "trivialaugment", "randaugment"] = "none"


class HeadConfig(Strict):
    hidden: int = Field(256, ge=0)  # 0 = one linear layer on the pooled features
    dropout: float = Field(0.5, ge=0, lt=1)
    # BatchNorm on the pooled features first (as in linear probing): centres features whose
    # common component is large, which otherwise kills the hidden ReLUs of the lab's head.
    norm: bool = False


class ModelConfig(Strict):
    arch: Literal["resnet50"] = "resnet50"
    # none | torchvision:IMAGENET1K_V1|V2 | timm:resnet50.<tag> | file:<state dict path>
    weights: str = "torchvision:IMAGENET1K_V1"
    freeze: Literal[FREEZE] = "backbone"
    head: HeadConfig = HeadConfig()

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if not WEIGHTS_RE.match(v):
            raise ValueError(
                "expected none, torchvision:IMAGENET1K_V1, torchvision:IMAGENET1K_V2, "
                "timm:resnet50.<tag> (e.g. timm:resnet50.a1_in1k) or file:<path to a state dict>")
        return v


class TrainConfig(Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1, le=65536)
    epochs: int = Field(5, ge=1)
    schedule: Literal["constant", "step", "cosine"] = "constant"
    step_epochs: int = Field(2, ge=1)  # step schedule: multiply lr by step_gamma every step_epochs
    step_gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up from lr/100, before any schedule
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    select: Literal["best", "last"] = "best"  # test with the best-validation epoch, or the last

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs ({self.warmup_epochs}) must be less than train.epochs ({self.epochs})")
        return self


class RunConfig(Strict):
    """Everything that determines a run's result; its hash is the run's identity."""
    data: DataConfig = DataConfig()
    input: InputConfig = InputConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class VariantSpec(Strict):
    name: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = Field(None, min_length=1)  # instead of the study's seeds (costly variants)


class StudyFile(Strict):
    study: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    baseline: bool = True  # include the defaults themselves as the variant 'baseline'
    ablate: dict[str, list[Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[VariantSpec] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)


@dataclass(frozen=True)
class Variant:
    name: str  # what differs from the defaults, e.g. 'freeze=none,lr=0.0001'
    seed: int
    overrides: dict[str, Any]  # dotted key -> value, as written in the study file
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    variants: list[Variant]


class ConfigError(Exception):
    """A study file that cannot be run; `problems` are (where, what) pairs, all reported at once."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path, self.problems = str(path), problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def __str__(self) -> str:
        return f"invalid study file {self.path}:\n" + "\n".join(f"  - {p}" for p in self.problems)


class UsageError(ConfigError):
    """A command-line option that cannot work (the study file itself is fine); `path` names the option."""

    def __str__(self) -> str:
        return "; ".join(self.problems)


# ---- YAML with line numbers --------------------------------------------------------------

def _line_index(node, prefix=(), out=None) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, so errors can point at it."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = prefix + (k.value,)
            out[path] = k.start_mark.line + 1
            _line_index(v, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[prefix + (i,)] = v.start_mark.line + 1
            _line_index(v, prefix + (i,), out)
    return out


def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    text = path.read_text()
    try:
        data, node = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(path, [f"YAML syntax error at {where}{getattr(e, 'problem', None) or e}"]) from None
    return data, _line_index(node) if node is not None else {}


# ---- dotted keys ------------------------------------------------------------------------

def _known_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


KNOWN_KEYS = _known_keys()


def _check_key(key: str) -> str | None:
    if key in KNOWN_KEYS:
        return None
    close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(KNOWN_KEYS)})"
    return f"unknown key '{key}'{hint}"


def set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + str(k)] = v
    return flat


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "+".join(map(_fmt, v))
    return str(v).lower() if isinstance(v, bool) else str(v)


def _label(keys: list[str], key: str) -> str:
    """The shortest dotted suffix of `key` that no other key in the study shares."""
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        tail = ".".join(parts[-n:])
        if sum(k.split(".")[-n:] == parts[-n:] for k in keys) == 1:
            return tail
    return key


# ---- loading -------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A `--set key=value` value, read as YAML (so 1, 1e-3, true, [a, b] work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> Study:
    """Read, validate and expand a study file. Raises ConfigError listing every problem found.

    `overrides` (from `--set`) apply to every variant, after the study file's own values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, [f"no such file (looked for {path.resolve()})"])
    raw, lines = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(path, ["the study file must be a YAML mapping with at least 'study:' and 'defaults:'"])

    def at(*loc) -> str:
        for n in range(len(loc), 0, -1):
            if tuple(loc[:n]) in lines:
                return f" (line {lines[tuple(loc[:n])]})"
        return ""

    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(path, [_describe(err, err["loc"], at(*err["loc"]), StudyFile) for err in e.errors()]) from None

    overrides = dict(overrides or {})
    problems: list[str] = []
    defaults = _flatten(spec.defaults)
    for key in defaults:
        if msg := _check_key(key):
            problems.append(f"defaults.{key}: {msg}{at('defaults', *key.split('.'))}")
    for section in ("ablate", "grid"):
        for key, values in getattr(spec, section).items():
            if msg := _check_key(key):
                problems.append(f"{section}.{key}: {msg}{at(section, key)}")
            if not values:
                problems.append(f"{section}.{key}: empty list of values{at(section, key)}")
    for i, v in enumerate(spec.variants):
        for key in v.set:
            if msg := _check_key(key):
                problems.append(f"variants[{i}] ({v.name}).set.{key}: {msg}{at('variants', i, 'set', key)}")
    for key in overrides:
        if msg := _check_key(key):
            problems.append(f"--set {key}: {msg}")
    if problems:
        raise ConfigError(path, problems)

    # (name, overrides as dotted keys, seeds, where they came from in the file)
    candidates: list[tuple[str, dict[str, Any], list[int], tuple]] = []
    if spec.baseline:
        candidates.append(("baseline", {}, spec.seeds, ("defaults",)))
    axis_keys = list(spec.ablate) + list(spec.grid)
    for key, values in spec.ablate.items():
        for i, value in enumerate(values):
            candidates.append((f"{_label(axis_keys, key)}={_fmt(value)}", {key: value}, spec.seeds, ("ablate", key, i)))
    if spec.grid:
        keys = list(spec.grid)
        for combo in itertools.product(*spec.grid.values()):
            name = ",".join(f"{_label(axis_keys, k)}={_fmt(v)}" for k, v in zip(keys, combo))
            candidates.append((name, dict(zip(keys, combo)), spec.seeds, ("grid",)))
    for i, v in enumerate(spec.variants):
        candidates.append((v.name, dict(v.set), v.seeds or spec.seeds, ("variants", i)))
    if not candidates:
        problems.append("the study has no variants: set baseline: true, or give ablate, grid or variants")

    seen: dict[str, tuple] = {}
    variants: list[Variant] = []
    base_dir = path.resolve().parent
    for name, sets, seeds, origin in candidates:
        if name in seen:
            problems.append(f"duplicate variant name '{name}'{at(*origin)} (first defined{at(*seen[name])}); "
                            "give hand-written variants unique names")
            continue
        seen[name] = origin
        for seed in seeds:
            tree = copy.deepcopy(spec.defaults)
            set_dotted(tree, "seed", seed)
            for key, value in {**sets, **overrides}.items():
                set_dotted(tree, key, value)
            try:
                cfg = RunConfig.model_validate(tree)
            except ValidationError as e:
                for err in e.errors():
                    key = ".".join(map(str, err["loc"]))
                    if key in overrides:
                        src = " (from --set)"
                    elif key in sets:
                        src = at(*origin, "set", key) if origin[0] == "variants" else at(*origin)
                    else:
                        src = at("defaults", *err["loc"])
                    problems.append(f"variant '{name}': " + _describe(err, err["loc"], src))
                break
            cfg = _resolve_paths(cfg, base_dir)
            variants.append(Variant(name, seed, sets, cfg))
    if problems:
        raise ConfigError(path, sorted(set(problems), key=problems.index))

    return Study(spec.study, path, spec.description, variants)


def select(study: Study, patterns: list[str] | None) -> list[Variant]:
    """The variants whose name matches any glob pattern (all of them when there is none)."""
    if not patterns:
        return study.variants
    chosen = [v for v in study.variants if any(fnmatch.fnmatchcase(v.name, p) for p in patterns)]
    if not chosen:
        names = list(dict.fromkeys(v.name for v in study.variants))
        raise ConfigError(study.path, [f"--only {' '.join(patterns)} matches no variant; variants are: {', '.join(names)}"])
    return chosen


def _resolve_paths(cfg: RunConfig, base_dir: Path) -> RunConfig:
    """Relative data and checkpoint paths are relative to the study file's folder."""
    data, model = cfg.data, cfg.model
    if data.path and not Path(data.path).expanduser().is_absolute():
        data = data.model_copy(update={"path": str((base_dir / data.path).resolve())})
    if model.weights.startswith("file:"):
        p = Path(model.weights[5:]).expanduser()
        if not p.is_absolute():
            model = model.model_copy(update={"weights": f"file:{(base_dir / p).resolve()}"})
    return cfg.model_copy(update={"data": data, "model": model})


def _describe(err: dict, loc: tuple, where: str, root: type[BaseModel] = RunConfig) -> str:
    key = ".".join(map(str, loc)) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _siblings(loc, root), n=1, cutoff=0.6)
        msg = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
    elif err["type"] == "literal_error":
        msg = f"got {err['input']!r}; {msg[0].lower()}{msg[1:]}"
    elif "input" in err and not isinstance(err["input"], dict):
        msg = f"got {err['input']!r}; {msg[0].lower()}{msg[1:]}"
    return f"{key}: {msg}{where}"


def _siblings(loc: tuple, root: type[BaseModel]) -> list[str]:
    """Field names beside the one at `loc`, to suggest a close match for a misspelt key."""
    if root is StudyFile:
        return list(VariantSpec.model_fields) if loc[0] == "variants" and len(loc) > 2 else list(StudyFile.model_fields)
    model = root
    for part in loc[:-1]:
        ann = getattr(model.model_fields.get(str(part)), "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    return list(model.model_fields)
