"""Drawing primitives every report figure shares: a figure on its own Agg canvas (no pyplot, so nothing depends on
a display or leaks state between reports), user text drawn as written, and saving as PNG and PDF."""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.infra.files import atomic_save

EXTENSIONS = {"md": "png", "tex": "pdf"}
LINESTYLES = ("-", "--", ":", "-.")


def save(fig: Figure, stem: Path, formats: set[str]) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in sorted(formats):
        path = stem.with_suffix("." + EXTENSIONS[fmt])
        # No creation date in the PDF: the same results give the same file. Written whole or not at all.
        meta = {"CreationDate": None} if fmt == "tex" else None
        ext = EXTENSIONS[fmt]
        atomic_save(
            path, lambda f, ext=ext, meta=meta: fig.savefig(f, format=ext, dpi=150, bbox_inches="tight", metadata=meta)
        )
        paths.append(path)
    return paths


# Characters per line of drawn text: a longer title (a weights file's provenance, say) would widen its figure,
# which the page then shrinks until nothing in it can be read
WRAP = 90


def plain(text: str) -> str:
    """User text drawn as written (a '$' would start matplotlib's math mode), its lines wrapped at WRAP."""
    lines = str(text).replace("$", r"\$").split("\n")
    return "\n".join(textwrap.fill(line, WRAP, break_on_hyphens=False) or line for line in lines)


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig
