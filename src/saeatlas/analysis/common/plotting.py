"""Plotting shared by the analyses' figures (matplotlib figures built directly, no pyplot state)."""

from __future__ import annotations

from typing import Any


def size_colors(n: int) -> list[Any]:
    """One viridis colour per dictionary size, smallest dark, largest light."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure (not through pyplot: no global state, safe in any thread)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))
