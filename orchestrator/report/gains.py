"""Every measured gain of a transfer study with its interval, as horizontal bars."""

from __future__ import annotations

from pathlib import Path

from orchestrator.transfer.shapes import GainRow, TransferResult

GAIN_BARS_ONE_PANEL = 40  # above this many gains, one panel per task (an exhaustive study of 6 tasks has 186)


def gain_bars(res: TransferResult, path: Path) -> bool:
    """Every measured gain with its interval; one panel per task, its groups sorted best first,
    once a single column of bars would be too tall to read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [g for g in res["gains"] if not g["estimated"]]
    if not gains:
        return False
    by_task: dict[str, list[GainRow]] = {}
    if len(gains) <= GAIN_BARS_ONE_PANEL:
        by_task[""] = sorted(gains, key=lambda g: (g["task"], len(g["group"]), g["group"]))
    else:
        for g in gains:
            by_task.setdefault(g["task"], []).append(g)
        for rows in by_task.values():
            rows.sort(key=lambda g: -g["delta"])
    cols = 1 if len(by_task) == 1 else 2
    nrows = -(-len(by_task) // cols)
    tallest = max(len(v) for v in by_task.values())
    fig, axes = plt.subplots(nrows, cols, figsize=(8 * cols, nrows * (0.24 * tallest + 1.2) + 0.6), squeeze=False,
                             layout="constrained")
    for ax, (task, rows) in zip(axes.flat, by_task.items(), strict=False):
        others = ["+".join(x for x in g["group"] if x != g["task"]) for g in rows]
        labels = [f"{g['task']} | {o}" for g, o in zip(rows, others, strict=True)] if not task else others
        vals = [100 * g["delta"] for g in rows]
        lo = [100 * (g["delta"] - g["ci"][0]) if g["ci"] else 0 for g in rows]
        hi = [100 * (g["ci"][1] - g["delta"]) if g["ci"] else 0 for g in rows]
        colors = ["#b2182b" if g["significant"] and g["delta"] < 0 else "#2166ac" if g["significant"] else "#999999"
                  for g in rows]
        ax.barh(range(len(rows)), vals, xerr=[lo, hi], color=colors, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), labels, fontsize=8 if len(rows) <= 20 else 7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        if task:
            ax.set_title(f"{task}, trained with ... (best first)", fontsize=10)
    for ax in list(axes.flat)[len(by_task):]:
        ax.axis("off")
    fig.supxlabel("relative gain over the task alone, % (95% Welch CI; colour: significant)", fontsize=10)
    fig.suptitle(f"{res['name']}: gain of each task in each trained group")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


