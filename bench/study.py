"""Study files: read, validated once at load time, and expanded into variants.

A study file has `defaults` (one run's configuration), then any of
  ablate:   {dotted.key: [values]}  one variant per value, everything else at the defaults
  grid:     {dotted.key: [values]}  the cartesian product of all listed keys
  variants: [{name, set: {dotted.key: value}}]  hand-written extras
  seeds:    [0, 1, 2]                every variant is repeated once per seed
Every problem is reported at once, with its key path, the value, what is allowed and the line.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from bench.config import KNOWN_KEYS, ConfigError, RunConfig, Strict
from bench.infra.identity import Fingerprints, run_id
from bench.util import did_you_mean, flatten, fmt_value
from bench.yamlfile import read_yaml


def _distinct_seeds(seeds: list[int] | None) -> list[int] | None:
    """A repeated seed is the same run twice: it would count twice in every mean and spread."""
    repeated = sorted({s for s in seeds or [] if seeds.count(s) > 1})
    if repeated:
        listed = ", ".join(map(str, repeated))
        raise ValueError(f"seed{'s' * (len(repeated) > 1)} {listed} repeated; list each seed once")
    return seeds


class VariantSpec(Strict):
    name: str = Field(min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = Field(None, min_length=1)  # instead of the study's seeds (costly variants)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        return _distinct_seeds(seeds)


class TrackersConfig(Strict):
    """Where finished runs are also logged (bench.infra.trackers); the command line's --mlflow/--tensorboard win."""

    mlflow: str | None = None  # a tracking URI, e.g. sqlite:///mlflow.db
    tensorboard: str | None = None  # a folder for event files, relative to the study file


class Target(Strict):
    """A bound that `bench speed` checks a column of its table against, on every row it applies to."""

    column: str  # e.g. uncached_over_cached
    op: Literal[">=", "<=", "<"]
    bound: float
    what: str  # what meeting it means, as speed.md and the console say
    where: dict[str, Any] = Field(default_factory=dict)  # only the rows with these values, e.g. {freeze: stem-layer3}


class StudyFile(Strict):
    study: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    baseline: bool = True  # include the defaults themselves as the variant 'baseline'
    ablate: dict[str, list[Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    variants: list[VariantSpec] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    trackers: TrackersConfig = TrackersConfig()
    targets: list[Target] = Field(default_factory=list)  # `bench speed` only

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds):
        return _distinct_seeds(seeds)


@dataclass(frozen=True)
class Variant:
    name: str  # what differs from the defaults, e.g. 'freeze=none,lr=0.0001'
    seed: int
    overrides: dict[str, Any]  # dotted key -> value, as written in the study file
    config: RunConfig
    fingerprints: Fingerprints | None = None  # set by bench.infra.identity.resolve: what the data and weights are

    @property
    def run_id(self) -> str:
        """The run's identity: its configuration without paths, and its data and weights fingerprints."""
        if self.fingerprints is None:
            raise LookupError(
                f"variant {self.name}: its data and weights are not fingerprinted yet (bench.infra.identity.resolve)"
            )
        return run_id(self.config, self.fingerprints)


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    variants: list[Variant]
    overrides: dict[str, Any] = field(default_factory=dict)  # applied to every variant (`--set`)
    trackers: TrackersConfig = TrackersConfig()
    targets: list[Target] = field(default_factory=list)

    def label(self, v: Variant) -> str:
        """The variant's name in the results, with the settings changed for this invocation:
        'baseline [train.epochs=1]'. Paths are left out: where the data lie is not what they are."""
        changed = {k: val for k, val in self.overrides.items() if k != "data.path"}
        return v.name + (
            " [" + ", ".join(f"{k}={fmt_value(val)}" for k, val in changed.items()) + "]" if changed else ""
        )


# ---- dotted keys ------------------------------------------------------------------------


def _check_key(key: str) -> str | None:
    if key in KNOWN_KEYS:
        return None
    hint = did_you_mean(key, KNOWN_KEYS) or f" (known keys: {', '.join(KNOWN_KEYS)})"
    return f"unknown key '{key}'{hint}"


def set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


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
    """An override's value written as text, read as YAML (so 1, 1e-3, true, [a, b] work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_study_file(path: str | Path, overrides: dict[str, Any] | None = None, given_by: str = "overrides") -> Study:
    """Read, validate and expand a study file. Raises ConfigError listing every problem found.

    `overrides` (dotted key -> value) apply to every variant, after the study file's own values;
    errors in them are attributed to `given_by` (the CLI says '--set').
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, [f"no such file (looked for {path.resolve()})"])
    raw, lines = read_yaml(path)
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
        raise ConfigError(
            path, [_describe(err, err["loc"], at(*err["loc"]), StudyFile) for err in e.errors()]
        ) from None

    overrides = dict(overrides or {})
    problems: list[str] = []
    defaults = flatten(spec.defaults)
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
            problems.append(f"{given_by} {key}: {msg}")
    if problems:
        raise ConfigError(path, problems)

    # (name, overrides as dotted keys, seeds, where they came from in the file)
    candidates: list[tuple[str, dict[str, Any], list[int], tuple]] = []
    if spec.baseline:
        candidates.append(("baseline", {}, spec.seeds, ("defaults",)))
    axis_keys = list(spec.ablate) + list(spec.grid)
    for key, values in spec.ablate.items():
        for i, value in enumerate(values):
            candidates.append(
                (f"{_label(axis_keys, key)}={fmt_value(value)}", {key: value}, spec.seeds, ("ablate", key, i))
            )
    if spec.grid:
        keys = list(spec.grid)
        for combo in itertools.product(*spec.grid.values()):
            name = ",".join(f"{_label(axis_keys, k)}={fmt_value(v)}" for k, v in zip(keys, combo))
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
            problems.append(
                f"duplicate variant name '{name}'{at(*origin)} (first defined{at(*seen[name])}); "
                "give hand-written variants unique names"
            )
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
                        src = f" (from {given_by})"
                    elif key in sets:
                        src = at(*origin, "set", key) if origin[0] == "variants" else at(*origin)
                    else:
                        src = at("defaults", *err["loc"])
                    problems.append(f"variant '{name}': " + _describe(err, err["loc"], src))
                break
            if cfg.model.freeze.startswith("stem") and cfg.model.arch.startswith("timm:"):
                from bench.models import check_freeze  # torch and timm: only for a timm model's stages

                try:
                    check_freeze(cfg.model)
                except ValueError as e:
                    problems.append(f"variant '{name}': {e}")
                    break
            cfg = _resolve_paths(cfg, base_dir, problems)
            if cfg is None:
                break
            variants.append(Variant(name, seed, sets, cfg))
    if problems:
        raise ConfigError(path, sorted(set(problems), key=problems.index))

    board = spec.trackers.tensorboard
    if board and not Path(board).expanduser().is_absolute():
        board = str((path.resolve().parent / board).resolve())
    trackers = spec.trackers.model_copy(update={"tensorboard": board})
    return Study(spec.study, path, spec.description, variants, overrides, trackers, spec.targets)


def select(study: Study, patterns: list[str] | None) -> list[Variant]:
    """The variants each pattern picks (all of them when there is none): a pattern that is a variant's exact
    name picks that variant alone (names may hold `[`, `*`, `?`), any other is a glob."""
    if not patterns:
        return study.variants
    names = {v.name for v in study.variants}
    exact = {p for p in patterns if p in names}
    globs = [p for p in patterns if p not in names]
    chosen = [v for v in study.variants if v.name in exact or any(fnmatch.fnmatchcase(v.name, p) for p in globs)]
    if not chosen:
        names = list(dict.fromkeys(v.name for v in study.variants))
        raise ConfigError(study.path, [f"{' or '.join(patterns)} matches no variant; variants are: {', '.join(names)}"])
    return chosen


def _resolve_paths(cfg: RunConfig, base_dir: Path, problems: list[str]) -> RunConfig | None:
    """Data and weights paths with their environment variables expanded ($BENCH_DATA: where a machine keeps its
    data); what is still relative is relative to the study file's folder. None, with the problems said once for
    the whole study, where a variable is not set."""
    data, model, said = cfg.data, cfg.model, len(problems)
    try:
        path = expand_env(data.path, "data.path").expanduser() if data.path else None
    except ValueError as e:
        problems.append(str(e))
    else:
        if path is not None:
            data = data.model_copy(update={"path": str(path if path.is_absolute() else (base_dir / path).resolve())})
    if model.weights_spec.kind == "file":
        try:
            p = expand_env(model.weights_spec.tag, "model.weights").expanduser()
        except ValueError as e:
            problems.append(str(e))
        else:
            weights = f"file:{p if p.is_absolute() else (base_dir / p).resolve()}"
            model = model.model_copy(update={"weights": weights})
    return None if len(problems) > said else cfg.model_copy(update={"data": data, "model": model})


ENV_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand_env(path: str, key: str) -> Path:
    """`path` with each $NAME or ${NAME} replaced by that environment variable made absolute (a relative value
    is taken from the current directory, as the shell would); ValueError naming the unset ones."""
    names = [a or b for a, b in ENV_VAR.findall(path)]
    unset = [n for n in dict.fromkeys(names) if not os.environ.get(n)]
    if unset:
        hint = " (the folder that holds the data files)" if unset[0] == "BENCH_DATA" else ""
        raise ValueError(
            f"{key} {path!r} uses ${', $'.join(unset)}, which is not set: export {unset[0]}=DIR{hint}, "
            "or give the path with --data-dir / --set"
        )
    return Path(ENV_VAR.sub(lambda m: os.path.abspath(os.environ[m.group(1) or m.group(2)]), path))


def _describe(err: dict, loc: tuple, where: str, root: type[BaseModel] = RunConfig) -> str:
    key = ".".join(map(str, loc)) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + did_you_mean(str(loc[-1]), _siblings(loc, root))
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
