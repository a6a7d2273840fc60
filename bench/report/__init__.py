"""The report side: the results store read back as tables, figures and one page per study.

runs.py        the store's runs read back, damaged ones named (and `verify`)
format.py      metric columns, number formats, the markdown/LaTeX table renderer
describe.py    what differs (from the baseline, from the lab), labels, choices on validation, weights and data
tables.py      results, ablation effects (seed-level statistics), per-class tables
references.py  He et al. (2016) and the lab report beside the study's best variants
figures.py     confusion matrix, learning curves, accuracy against compute, data size, depth
pages.py       report.md and report.tex with provenance
build.py       `bench report` and `bench compare`
"""

import sys
import types

from bench.report.build import FORMATS, compare, report, write_report, write_reports
from bench.report.runs import ReportError, load_runs, verify

__all__ = ["FORMATS", "ReportError", "compare", "load_runs", "report", "verify", "write_report"]


class _CallablePackage(types.ModuleType):
    """`bench.report(...)` writes a study's report (build.write_reports) while `bench.report` stays this
    package: a package is its parent's attribute of the same name, so a function there would be replaced."""

    def __call__(self, *args, **kwargs):
        return write_reports(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
