"""The chart of a benchmark run: every target ratio against its bar, as a PNG (matplotlib).

Above, the in-process ratios of time per request (lower is better), one bar per backend; below,
the served ratios of requests per second (higher is better), one bar per server. Each bar runs
from 1 (parity with the anchor) to the median of the rounds, on a log scale; its whisker is the
spread over the rounds, and a red tick the bar the ratio has to meet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .ratios import Ratio

#: Panel title -> group (backend or server) -> its ratios.
Panels = dict[str, dict[str, list[Ratio]]]


def available() -> bool:
    """True if matplotlib can be imported (``make bench`` installs it)."""
    return importlib.util.find_spec("matplotlib") is not None


def draw_panel(axes: Any, title: str, groups: dict[str, list[Ratio]]) -> None:
    """Grouped horizontal bars from 1 (parity) to each ratio, with whiskers, values and bars."""
    from matplotlib.ticker import FixedLocator, NullLocator

    labels = [f"{r.scenario}\n/ {r.anchor}" for r in next(iter(groups.values()))]
    height = 0.8 / len(groups)
    for index, (group, measured) in enumerate(groups.items()):
        positions = [i + (index - (len(groups) - 1) / 2) * height for i in range(len(labels))]
        axes.barh(
            positions,
            [r.median - 1 for r in measured],
            left=1,
            height=height,
            xerr=[[r.median - r.low for r in measured], [r.high - r.median for r in measured]],
            capsize=2,
            label=group,
        )
        for r, y in zip(measured, positions, strict=True):
            axes.annotate(
                f"{r.median:.2f}",
                (max(r.high, r.bar), y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=11,
            )
        axes.scatter([r.bar for r in measured], positions, marker="|", s=250, color="red", zorder=3)
    axes.set_xscale("log")  # a ratio and its inverse are as far from 1
    low = min(r.low for measured in groups.values() for r in measured)
    high = max(max(r.high, r.bar) for measured in groups.values() for r in measured)
    steps = (0.25, 0.5, 1, 2, 5, 10, 20) if high > 3 else (0.5, 0.75, 1, 1.25, 1.5, 2, 3)
    ticks = [t for t in steps if low / 1.3 <= t <= high]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([f"{t:g}" for t in ticks])
    axes.set_xlim(min(low, 1) / 1.15, high * 1.35)
    axes.set_yticks(range(len(labels)), labels, fontsize=11)
    axes.tick_params(axis="x", labelsize=11)
    axes.invert_yaxis()
    axes.axvline(1.0, color="grey", linewidth=0.8)
    axes.set_title(title, fontsize=13)
    axes.legend(fontsize=11, loc="best")


def write(path: Path, panels: Panels) -> None:
    """Draw the non-empty panels one above the other, so that the page's width shows their
    labels at a readable size, and save them to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {title: groups for title, groups in panels.items() if groups}
    rows = sum(len(next(iter(groups.values()))) for groups in shown.values())
    figure, axes = plt.subplots(
        len(shown),
        1,
        figsize=(10, 1.6 + 0.75 * rows),
        squeeze=False,
        height_ratios=[len(next(iter(groups.values()))) for groups in shown.values()],
    )
    for ax, (title, groups) in zip(axes[:, 0], shown.items(), strict=True):
        draw_panel(ax, title, groups)
    figure.suptitle(
        "Median ratio of interleaved rounds (whiskers: spread; red |: the bar)", fontsize=13
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
