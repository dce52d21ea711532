"""The pairwise transfer matrix as a task x task heat map (and the heat map every matrix figure uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.transfer.shapes import TransferResult


def matrix_figure(tasks: list[str], m: Any, text: Any, path: Path, *, lim: float, title: str, label: str,
                   xlabel: str, ylabel: str, rows: list[str] | None = None) -> None:
    """A task x task heat map (diverging, centred on 0) with a text in every measured cell;
    ``rows``: the row labels, if not the tasks' names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.0 * len(tasks) + 1.5))
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(tasks)), rows or tasks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            if not np.isnan(m[i, j]):
                dark = abs(m[i, j]) > 0.6 * lim
                ax.text(j, i, text(i, j), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def transfer_matrix(res: TransferResult, path: Path) -> bool:
    import numpy as np

    tasks = res["tasks"]
    m = np.array([[np.nan if i == j or (v := res["pairwise"][i][j]) is None else 100 * v
                   for j in tasks] for i in tasks], dtype=float)
    if np.isnan(m).all():
        return False
    sig = {(g["task"], tuple(g["group"])) for g in res["gains"] if g["significant"]}

    def text(i: int, j: int) -> str:
        a, b = tasks[i], tasks[j]
        return f"{m[i, j]:+.1f}%" + ("*" if (a, tuple(sorted((a, b)))) in sig else "")

    matrix_figure(tasks, m, text, path, lim=max(1.0, float(np.nanmax(np.abs(m)))),
                   title=f"{res['name']}: pairwise transfer (* adjusted p < 0.05, {len(res['seeds'])} seeds)",
                   label="relative gain, %", xlabel="trained together with",
                   ylabel="gain of this task (relative to alone)",
                   rows=[f"{t} (baseline 0: n/a)" if t in (res.get("zero_baselines") or []) else t for t in tasks])
    return True
