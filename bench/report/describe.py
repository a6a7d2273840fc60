"""How a report names, labels and chooses variants: what differs from the baseline and from
the lab's recipe, run status, random-init labels, and the variants chosen on validation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePath

import pandas as pd
import yaml

from bench.data.catalog import OFFICIAL
from bench.report.format import VAL_ACC, mean_of
from bench.report.runs import Run, StudyRuns
from bench.training.outcome import FeatureCache
from bench.util import flatten, fmt_value


@cache
def references() -> dict:
    """bench/references.yaml: the paper's and the lab report's figures, with their sources."""
    return yaml.safe_load(resources.files("bench").joinpath("references.yaml").read_text())


def what_differs(study: StudyRuns, variant: str, baseline: str | None) -> str:
    """The settings that differ from the baseline run's (from the stored configs when both
    exist, else the variant's overrides of the study defaults)."""
    if variant == baseline:
        return "(baseline)"
    own, base = study.config(variant), study.config(baseline) if baseline else None
    if own and base:
        a, b = flatten(own), flatten(base)
        diff = {k: a.get(k) for k in sorted(set(a) | set(b)) if k != "seed" and a.get(k) != b.get(k)}
    else:
        diff = study.of(variant)[0].overrides
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in diff.items()) or "(same settings)"


# How a setting that differs from the lab's is said in a row (the rest: key=value).
LAB_WORDS = {
    "data.source": {
        "folder": "another copy of the data (data.source=folder)",
        "digits": "sklearn digits, not CIFAR-10",
        **{s: f"{spec.title}, not CIFAR-10" for s, spec in OFFICIAL.items() if s != "cifar10"},
    },
    "model.weights": {"none": "random init (no pretraining)"},
    "model.head.norm": {True: "BatchNorm added to the lab's head"},
}


def vs_lab(config: dict | None) -> str:
    """How a stored run config differs from the lab report's recipe (bench/references.yaml)."""
    if not config:
        return "?"
    return ", ".join(lab_differences(config)) or "the lab's recipe"


def lab_differences(config: dict) -> list[str]:
    """The settings of a stored run config that differ from the lab report's recipe, each in words."""
    return differences(config, references()["lab_report"]["settings"], LAB_WORDS)


def differs_from(config: dict | None, settings: dict, words: dict) -> str:
    """The settings of a stored run config that differ from a reference recipe's (`words` says some in words);
    '' when none does, '?' without a config."""
    if not config:
        return "?"
    return ", ".join(differences(config, settings, words))


def differences(config: dict, settings: dict, words: dict) -> list[str]:
    own = flatten(config)
    said = []
    for key, ref in settings.items():
        value = own.get(key, ref)
        if isinstance(value, list) and isinstance(ref, list):  # milestones: [91, 136.5] as written or stored
            value, ref = tuple(float(x) for x in value), tuple(float(x) for x in ref)
        if value != ref:
            said.append(words.get(key, {}).get(value, f"{key}={fmt_value(value) if value != () else '[]'}"))
    return said


def status(study: StudyRuns, variant: str) -> str:
    """'3 done', '2 done, 1 failed', 'failed: diverged', 'pending'."""
    runs = study.of(variant)
    counts = pd.Series([r.state for r in runs]).value_counts()
    if counts.get("done", 0) == 0 and len(counts) == 1 and runs[0].detail:
        return f"{runs[0].state}: {runs[0].detail}"
    order = ["done", "failed", "damaged", "running", "pending"]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts)


def is_random_init(study: StudyRuns, variant: str) -> bool:
    runs = study.done(variant)
    if runs:
        return not all(r.metrics.pretrained for r in runs)
    cfg = study.config(variant)
    return bool(cfg) and cfg.get("model", {}).get("weights") == "none"


def reference_data(study: StudyRuns, prints: list[str]) -> str:
    """The images the study is about: the baseline's, else those most runs used (ties: the first by name)."""
    base = [r.fingerprints.get("data") for r in study.done("baseline") if r.fingerprints.get("data")]
    return base[0] if base else min(set(prints), key=lambda p: (-prints.count(p), p))


def label(study: StudyRuns, variant: str) -> str:
    """The variant's name, with what a reader must not miss: random weights, other images than the rest."""
    tags = ["random init"] if is_random_init(study, variant) else []
    prints = [r.fingerprints.get("data") for r in study.runs if r.state == "done" and r.fingerprints.get("data")]
    own = {r.fingerprints.get("data") for r in study.done(variant)} - {None}
    if len(set(prints)) > 1 and own and own != {reference_data(study, prints)}:
        tags.append("other data: " + ", ".join(sorted(own)))
    return f"{variant} [{'; '.join(tags)}]" if tags else variant


def cache_note(study: StudyRuns) -> str | None:
    """Runs that found their frozen-backbone features cached were timed without the backbone."""

    def reused(state: FeatureCache) -> list[str]:
        return [v for v in study.variants if any(r.metrics.feature_cache == state for r in study.done(v))]

    notes = []
    if cached := reused(FeatureCache.HIT):
        notes.append(
            f"Training time of {', '.join(cached)} leaves out the frozen backbone's pass over the images: "
            "those runs reused features from the feature cache."
        )
    if cached := reused(FeatureCache.PREFIX_HIT):
        notes.append(
            f"Training time of {', '.join(cached)} leaves out the frozen stages' pass over the images: "
            "those runs reused their outputs from the prefix cache."
        )
    return " ".join(notes) or None


# ---- chosen on validation, never on test ---------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    variant: str  # the best mean validation accuracy among the candidates
    runner_up: str | None
    lead: float | None  # points of validation accuracy over the runner-up
    noise: float  # 1.96 binomial standard errors of one validation accuracy, in points (NaN: unknown)

    @property
    def clear(self) -> bool:
        """Best by more than the noise of one validation accuracy (or the only candidate)."""
        return self.lead is None or self.lead > self.noise


def val_noise(runs: list[Run]) -> float:
    """Half-width (points) of a 95% binomial interval of one validation accuracy: a lead within it is noise."""
    n_val, acc = runs[0].metrics.n_val, mean_of(runs, VAL_ACC) / 100
    return 100 * 1.96 * math.sqrt(acc * (1 - acc) / n_val) if n_val else float("nan")


def choose(study: StudyRuns, variants: list[str]) -> Choice | None:
    """The variant with the best mean validation accuracy among `variants` that finished, and its lead."""
    scored = sorted(((mean_of(study.done(v), VAL_ACC), v) for v in variants if study.done(v)), reverse=True)
    if not scored:
        return None
    (best, v), rest = scored[0], scored[1:]
    lead, runner_up = (best - rest[0][0], rest[0][1]) if rest else (None, None)
    return Choice(v, runner_up, lead, val_noise(study.done(v)))


def choice_words(c: Choice) -> str:
    """'best', or why not: what a reader may say about the variant chosen on validation."""
    if c.clear:
        return "best" + (f" by {c.lead:.2f} points" if c.lead is not None else "")
    return f"highest (by {c.lead:.2f} points over {c.runner_up}, within the ±{c.noise:.2f} noise of one accuracy)"


def kind_of(study: StudyRuns, variant: str) -> str:
    """frozen backbone, fine-tuned or from scratch."""
    freeze = (study.done(variant)[0].config or {}).get("model", {}).get("freeze", "backbone")
    return "frozen" if freeze == "backbone" else "from scratch" if is_random_init(study, variant) else "fine-tuned"


def choices_by_kind(study: StudyRuns) -> dict[str, Choice]:
    """The variant with the best mean validation accuracy per kind: frozen backbone, fine-tuned, from scratch."""
    kinds = {v: kind_of(study, v) for v in study.variants if study.done(v)}
    out = {k: choose(study, [v for v in kinds if kinds[v] == k]) for k in ("frozen", "fine-tuned", "from scratch")}
    return {k: c for k, c in out.items() if c}


def default_baseline(study: StudyRuns) -> str:
    """'baseline', or the one variant labelled 'baseline [...]' (run with set=: 'baseline [train.epochs=1]')."""
    labelled = [v for v in study.variants if v.startswith("baseline [")]
    return labelled[0] if "baseline" not in study.variants and len(labelled) == 1 else "baseline"


def best_by_kind(study: StudyRuns) -> dict[str, str]:
    return {k: c.variant for k, c in choices_by_kind(study).items()}


def best_variant(study: StudyRuns) -> str | None:
    """The variant with the best mean validation accuracy (the default for the per-class views)."""
    c = choose(study, study.variants)
    return c.variant if c else None


def candidates(run: Run) -> str:
    """What the tested model was chosen from on validation: '5 epochs', '12 settings', '1 (last epoch)'."""
    cfg = run.config or {}
    if cfg.get("model", {}).get("head", {}).get("kind", "mlp") != "mlp":  # a probe: one history row per setting
        n = run.metrics.epochs - 1  # and one for the refitted, selected model
        if run.history is not None and "selected" in run.history:
            n = int((~run.history["selected"].astype(bool)).sum())
        return f"{n} settings"
    if cfg.get("train", {}).get("select", "best") == "last":
        return "1 (last epoch)"
    return f"{run.metrics.epochs} epochs"


# ---- what made the numbers: weights and data ------------------------------------------------------


def data_title(run: Run) -> str:
    """The data set's title (data/catalog.py), or for other sources what the run recorded about its images."""
    return source_title((run.config or {}).get("data", {})) or run.metrics.dataset


def source_title(data: dict) -> str | None:
    """A data configuration's images in words: the set's title, 'image folder NAME', 'sklearn digits'."""
    source = data.get("source")
    if source in OFFICIAL:
        return OFFICIAL[source].title
    if source == "folder" and (path := data.get("path")):
        return f"image folder {PurePath(path).name}"  # the name, not where it lay on the machine that ran it
    return "sklearn digits" if source == "digits" else None


def made_of(configs: list, data: bool = True) -> str:
    """'Weights: random init (no pretraining). Data: image folder cifar10-jpeg.tar.gz.' for runs' RunConfigs (a
    benchmark page's line; `data`=False: the weights only, for one that reads no data)."""
    from bench.models import describe_weights

    weights = " / ".join(dict.fromkeys(describe_weights(c.model.weights) for c in configs))
    sources = " / ".join(dict.fromkeys(source_title(c.data.model_dump(mode="json")) or c.data.source for c in configs))
    return f"Weights: {weights}." + (f" Data: {sources}." if data else "")


def made_with(study: StudyRuns, variants: list[str] | None = None) -> str:
    """'random init (no pretraining); CIFAR-10': the weights and data of the finished runs of `variants`."""
    runs = [r for v in (study.variants if variants is None else variants) for r in study.done(v)]
    weights = list(dict.fromkeys(r.metrics.weights for r in runs))
    data = list(dict.fromkeys(data_title(r) for r in runs))
    return "; ".join([" / ".join(weights) or "?", " / ".join(data) or "?"])
