"""Figures: matplotlib (Agg) drawing helpers, and `Canvas`, which saves each figure as PNG + SVG under
plots/ and returns the <figure> block that embeds the PNG (base64) with its caption.

Output is deterministic: no dates in the files, a fixed SVG id salt, fixed fonts and sizes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, same pixels everywhere

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kdyn.io import atomic_path  # noqa: E402
from kdyn.report.html import Markup, tag  # noqa: E402
from kdyn.report.text import group_label  # noqa: E402

DPI = 110  # pixels per inch in the PNG; the page shows it at 100 px per inch (sharper on high-DPI screens)
WIDTH = 11.0  # inches: the page's content width
KIND_COLORS = {"new": "#2b6cb0", "related": "#d97706", "updated": "#7c3aed", "known": "#15803d",
               "known_wrong_at_base": "#9ca3af", "skill": "#dc2626"}  # fmt: skip
PALETTE = ("#2b6cb0", "#d97706", "#15803d", "#7c3aed", "#dc2626", "#0891b2", "#4b5563", "#be185d")
TYPE_STYLES = {"cloze": "-", "qa": "--", "mcq": ":", "compositional": "-.", "arithmetic": "-"}
STYLE = {
    "font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
    "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.color": "#e5e7eb", "grid.linewidth": 0.6, "figure.dpi": DPI,
    "svg.hashsalt": "kdyn", "svg.fonttype": "none", "font.family": "DejaVu Sans", "figure.constrained_layout.use": True,
}  # fmt: skip


def kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, "#374151")


def new_figure(n_panels: int, ncols: int = 4, height: float = 3.0, width: float = WIDTH,
               sharey: bool = False) -> tuple[Figure, list[Axes]]:  # fmt: skip
    """A figure with `n_panels` axes in rows of at most `ncols` (unused axes removed)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=False, sharey=sharey)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.remove()
    return fig, flat[:n_panels]


def styled(fn: Any) -> Any:
    """Run a drawing function under the report's rc style (fonts, grid, SVG salt)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def ci_line(ax: Axes, x: Sequence[Any], y: Sequence[Any], lo: Sequence[Any] | None, hi: Sequence[Any] | None,
            color: str, label: str, linestyle: str = "-", marker: str = "o") -> None:  # fmt: skip
    """A line with a shaded confidence band."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ax.plot(x, y, linestyle=linestyle, marker=marker, markersize=3.5, color=color, label=label, linewidth=1.6)
    if lo is not None and hi is not None:
        lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        ax.fill_between(x, lo_a, hi_a, color=color, alpha=0.12, linewidth=0)


def step_axis(ax: Axes, steps: Sequence[Any], epochs: dict[Any, float] | None = None) -> None:
    """Ticks at the checkpoints (thinned past 12); labels 'step' or 'step\\ne<epoch>'."""
    steps = list(steps)
    shown = steps if len(steps) <= 12 else steps[:: int(np.ceil(len(steps) / 12))]
    ax.set_xticks([float(s) for s in shown])
    if epochs:
        labels = [f"{s}\ne{epochs[s]:g}" if np.isfinite(epochs.get(s, np.nan)) else f"{s}" for s in shown]
    else:
        labels = [str(s) for s in shown]
    ax.set_xticklabels(labels)


def heatmap(ax: Axes, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], cmap: str, vmax: float,
            title: str, annotate: bool = True) -> Any:  # fmt: skip
    """Rows x columns heatmap with values written in the cells (NaN cells blank)."""
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=0 if len(cols) <= 8 else 45, ha="center" if len(cols) <= 8 else "right")
    ax.set_title(title)
    ax.grid(False)
    if annotate and values.size <= 240:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                        color="white" if v > 0.6 * vmax else "#111827")  # fmt: skip
    return im


def group_key_labels(keys: Sequence[tuple[str, str]], adjusted: Sequence[bool] | None = None) -> list[str]:
    adjusted = adjusted or [False] * len(keys)
    return [group_label(k, t) + (" (adj.)" if a else "") for (k, t), a in zip(keys, adjusted)]


class Canvas:
    """Saves figures into `plots_dir` (PNG + SVG) and turns them into captioned <figure> blocks."""

    def __init__(self, plots_dir: Path) -> None:
        self.plots_dir = Path(plots_dir)
        self.saved: list[Path] = []

    def figure(self, name: str, fig: Figure, caption: Any, alt: str) -> Markup:
        png = io.BytesIO()
        svg = io.BytesIO()
        with plt.rc_context(STYLE):
            fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
            fig.set_layout_engine("none")  # the layout is solved (in figure fractions); the SVG reuses it
            fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
        width_px = int(round(fig.get_figwidth() * 100))
        plt.close(fig)
        for suffix, buf in ((".png", png), (".svg", svg)):
            path = self.plots_dir / f"{name}{suffix}"
            with atomic_path(path) as tmp:
                tmp.write_bytes(buf.getvalue())
            self.saved.append(path)
        data = base64.b64encode(png.getvalue()).decode("ascii")
        img = tag("img", src=f"data:image/png;base64,{data}", alt=alt, width=width_px, loading="eager")
        return tag("figure", img, tag("figcaption", caption), id=f"fig-{name}")
