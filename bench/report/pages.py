"""The report pages: report.md (renders on GitHub) and a standalone report.tex, with the
provenance a reader needs before trusting the numbers."""

from __future__ import annotations

import re

import pandas as pd

from bench.report.describe import is_random_init
from bench.report.format import Table, md, tex
from bench.report.runs import StudyRuns


def provenance(study: StudyRuns) -> list[tuple[str, str]]:
    """(what, value) pairs a reader needs before trusting the numbers."""
    done = [r for r in study.runs if r.state == "done"]

    def tally(get) -> str:
        return tally_runs(done, lambda r: get(r.metrics))

    states = pd.Series([r.state for r in study.runs]).value_counts()
    return [
        ("Command", study.command or "(not recorded)"),
        ("Study file", study.file or "(not recorded)"),
        ("Runs", ", ".join(f"{n} {s}" for s, n in states.items()) + f" (of {len(study.runs)})"),
        ("Data set", tally(lambda m: m.dataset)),
        ("Weights", tally(lambda m: m.weights)),
        ("Device", tally(lambda m: m.device)),
        ("Hardware", tally(lambda m: hardware_words(m.hardware))),
        ("Precision", tally(lambda m: m.precision)),
        ("Software", tally(lambda m: ", ".join(f"{k} {v}" for k, v in m.versions.items()))),
        ("Data fingerprint", tally_runs(done, lambda r: r.fingerprints.get("data", "not recorded"))),
        ("Weights fingerprint", tally_runs(done, lambda r: r.fingerprints.get("weights", "not recorded"))),
        ("Code", tally_runs(done, lambda r: ", ".join(f"{k} {v}" for k, v in r.code.items()) or "not recorded")),
    ]


def hardware_words(hardware: dict[str, str]) -> str:
    """'CPU AMD EPYC (AVX512 (avx2 avx512f)), GPU none', or 'not recorded' for records that predate it."""
    if not hardware:
        return "not recorded"
    return f"CPU {hardware.get('cpu', '?')} ({hardware.get('isa', '?')}), GPU {hardware.get('gpu', '?')}"


def md_code(text: str) -> str:
    """`text` as a markdown code span, fenced by more backticks than it holds."""
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if len(fence) > 1 else f"`{text}`"


def tally_runs(runs, get) -> str:
    """'x' when every run agrees, else 'x (3 runs); y (1 run)'."""
    counts = pd.Series([get(r) for r in runs], dtype=object).value_counts()
    return "; ".join(f"{k} ({n} run{'s' * (n > 1)})" if len(counts) > 1 else str(k) for k, n in counts.items())


def random_init_warning(study: StudyRuns) -> str | None:
    random = [v for v in study.variants if is_random_init(study, v)]
    if not random:
        return None
    who = (
        "every variant starts"
        if len(random) == len(study.variants)
        else f"{len(random)} of {len(study.variants)} variants ({', '.join(random)}) start"
    )
    if all(_from_scratch(study, v) for v in random):  # He et al.'s CIFAR experiment: random init is the recipe
        return (
            f"TRAINED FROM SCRATCH: {who} from random weights, training the whole network as He et al.'s CIFAR-10 "
            "experiment does; nothing here is transferred from ImageNet."
        )
    return (
        f"RANDOM INITIALISATION: {who} from random weights, not ImageNet. Their numbers show "
        "what the pipeline does without pretraining and say nothing about transfer from ImageNet."
    )


def _from_scratch(study: StudyRuns, variant: str) -> bool:
    model = (study.config(variant) or {}).get("model", {})
    return model.get("freeze") == "none" and str(model.get("arch", "")).startswith("cifar_")


SECTIONS = {
    "results": "Results",
    "effects": "Ablation effects",
    "per_class": "Per class",
    "reproduction": "He et al.'s CIFAR-10 experiment reproduced (Table 6, Figure 6)",
    "references": "Against the paper and the lab report",
    "depth": "Depth",
}
FIGURE_TITLES = {
    "effects": "Ablation effects",
    "confusion": "Confusion matrix",
    "learning_curves": "Learning curves",
    "accuracy_vs_time": "Accuracy against compute",
    "depth": "Accuracy against depth",
    "data_size": "Accuracy against training images",
}


def page_markdown(
    study: StudyRuns, tables: list[Table], captions: dict[str, str], variant: str | None, warnings: list[str]
) -> str:
    lines = [f"# {md(study.name)}", "", md(study.description), ""]
    if warning := random_init_warning(study):
        lines += [f"> **⚠ {md(warning)}**", ""]
    lines += ["## How these numbers were made", ""]
    lines += [
        f"- **{k}:** {md_code(v)}" if k in ("Command", "Study file") else f"- **{k}:** {md(v)}"
        for k, v in provenance(study)
    ]
    lines.append("")
    for t in tables:
        lines += [f"## {SECTIONS[t.name]}", "", md(t.caption), "", t.markdown(), ""]
        lines += [f"_{md(n)}_" + "\n" for n in t.notes]
        if t.name == "effects" and "effects" in captions:
            lines += ["![ablation effects](figures/effects.png)", "", md(captions["effects"]), ""]
        if t.name == "per_class" and "confusion" in captions:
            lines += ["![confusion matrix](figures/confusion.png)", "", md(captions["confusion"]), ""]
        if t.name == "reproduction":
            for name in (n for n in captions if n.startswith("paper_curves")):
                lines += [f"![training curves](figures/{name}.png)", "", md(captions[name]), ""]
    for name in ("learning_curves", "data_size", "accuracy_vs_time", "depth"):
        if name in captions:
            lines += [
                f"## {FIGURE_TITLES[name]}",
                "",
                f"![{FIGURE_TITLES[name]}](figures/{name}.png)",
                "",
                md(captions[name]),
                "",
            ]
    if warnings:
        lines += ["## Warnings", ""] + [f"- {md(w)}" for w in warnings] + [""]
    return "\n".join(lines)


def page_latex(
    study: StudyRuns, tables: list[Table], captions: dict[str, str], variant: str | None, warnings: list[str]
) -> str:
    body = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[margin=2cm]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage{array}",
        r"\usepackage{float}",
        # scale a table down only when it is wider than the text, or taller than most of a page: a tabular cannot
        # break across pages, and one taller than the page ran off its bottom (the references table did)
        r"\newsavebox{\fitbox}",
        r"\newcommand{\fitwidth}[1]{\sbox{\fitbox}{#1}%",
        r"\ifdim\wd\fitbox>\linewidth\sbox{\fitbox}{\resizebox{\linewidth}{!}{\usebox{\fitbox}}}\fi%",
        r"\ifdim\dimexpr\ht\fitbox+\dp\fitbox\relax>0.8\textheight"
        r"\sbox{\fitbox}{\resizebox*{!}{0.8\textheight}{\usebox{\fitbox}}}\fi%",  # *: height and depth
        r"\usebox{\fitbox}}",
        f"\\title{{{tex(study.name)}}}",
        r"\author{}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
        tex(study.description),
        "",
    ]
    if warning := random_init_warning(study):
        body += [
            r"\medskip\noindent\fbox{\parbox{\dimexpr\linewidth-2\fboxsep-2\fboxrule}{\textbf{" + tex(warning) + "}}}",
            "",
        ]
    body += [r"\section*{How these numbers were made}", r"\begin{itemize}"]
    body += [
        f"\\item \\textbf{{{tex(k)}:}} " + (f"\\texttt{{{tex(v)}}}" if k in ("Command", "Study file") else tex(v))
        for k, v in provenance(study)
    ]
    body += [r"\end{itemize}", ""]
    for t in tables:
        body += [
            f"\\section*{{{tex(SECTIONS[t.name])}}}",
            r"\begin{table}[H]",
            r"\centering",
            f"\\caption{{{tex(t.caption)}}}",
            f"\\fitwidth{{\\input{{tables/{t.name}.tex}}}}",
        ]
        body += [f"\\par\\smallskip{{\\footnotesize {tex(n)}}}" for n in t.notes]
        body += [r"\end{table}", ""]
        if t.name == "effects" and "effects" in captions:
            body += latex_figure("effects", captions["effects"])
    for name, caption in captions.items():
        if name != "effects":
            body += latex_figure(name, caption)
    if warnings:
        body += [r"\section*{Warnings}", r"\begin{itemize}"] + [f"\\item {tex(w)}" for w in warnings]
        body += [r"\end{itemize}"]
    body += [r"\end{document}", ""]
    return "\n".join(body)


def latex_figure(name: str, caption: str) -> list[str]:
    return [
        r"\begin{figure}[H]",
        r"\centering",
        f"\\includegraphics[width=\\linewidth,height=0.8\\textheight,keepaspectratio]{{figures/{name}.pdf}}",
        f"\\caption{{{tex(caption)}}}",
        r"\end{figure}",
        "",
    ]
