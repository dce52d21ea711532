"""The trials of a two-objective search and their Pareto front."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pareto_plot(ok: list[dict[str, Any]], front: list[dict[str, Any]], path: Path) -> bool:
    """False without a front (a search of one objective, or none finished yet)."""
    if not front:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(ok[0]["objective"]) if ok else []
    if len(keys) < 2:
        return False
    x, y = keys[0], keys[1]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter([t["objective"].get(x) for t in ok], [t["objective"].get(y) for t in ok], c="#999999", label="trials")
    ax.scatter([t["objective"].get(x) for t in front], [t["objective"].get(y) for t in front], c="#b2182b",
               label="Pareto front")
    ax.set_xlabel(f"{x} (signed main metric)")
    ax.set_ylabel(f"{y} (signed main metric)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


