"""The inter-task affinity (TAG) measured in a study's all-tasks runs, as a heat map."""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.matrix import matrix_figure
from orchestrator.transfer.shapes import TransferResult


def affinity_map(res: TransferResult, path: Path) -> bool:
    import numpy as np

    tasks = res["tasks"]
    z = np.array([[np.nan if i == j else res["affinity"].get(j, {}).get(i, np.nan) for j in tasks] for i in tasks],
                 dtype=float)
    if np.isnan(z).all():
        return False
    matrix_figure(tasks, z, lambda i, j: f"{z[i, j]:.2g}", path, lim=float(np.nanmax(np.abs(z))) or 1.0,
                   title=f"{res['name']}: inter-task affinity (TAG), mean over training and seeds",
                   label="lookahead affinity Z (estimated)", xlabel="a step on this task's loss ...",
                   ylabel="... changes this task's loss (Z > 0: lowers it)")
    return True


