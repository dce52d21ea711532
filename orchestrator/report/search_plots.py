"""The figures of a search report, the ones users open first: the optimization history (each
trial's objective in the order trials started, and the best so far), the parameter importance
(Optuna's) and the per-task trade-offs (each scored trial's validation main metric per task,
the best trial drawn over the others). A two-objective search's Pareto front is
``report/pareto.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_plot(trials: list[dict[str, Any]], path: Path) -> bool:
    """Objective per trial in start order and the running best; False below two scored trials."""
    done = sorted((t for t in trials if isinstance(t.get("objective"), (int, float))),
                  key=lambda t: (t.get("started") or 0, str(t["trial_id"])))
    if len(done) < 2:
        return False
    values = [float(t["objective"]) for t in done]
    best = [max(values[:i + 1]) for i in range(len(values))]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter(range(1, len(values) + 1), values, c="#4d4d4d", s=18, label="trial")
    ax.step(range(1, len(best) + 1), best, where="post", c="#b2182b", label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (in the order it started)")
    ax.set_ylabel("objective (validation, higher is better)")
    ax.set_title("Optimization history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def importance_plot(importance: dict[str, float], path: Path) -> bool:
    """Optuna's parameter importance as bars, largest on top; False without any."""
    if not importance:
        return False
    items = sorted(importance.items(), key=lambda kv: kv[1])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#2166ac")
    ax.set_xlabel("importance (Optuna, share of the objective's variance)")
    ax.set_title("Parameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _lower_is_better() -> set[str]:
    from trainables.tasks import TASK_TYPES

    return {m for t in TASK_TYPES.values() for m, higher in t.higher_is_better.items() if not higher}


def _main(metrics: set[str]) -> str:
    """A task's main metric where the search did not record it: its type's default."""
    from trainables.tasks import TASK_TYPES

    return next((t.default_metric for t in TASK_TYPES.values() if t.default_metric in metrics), min(metrics))


def tasks_plot(trials: list[dict[str, Any]], best_id: str | None, path: Path,
               main_metric: dict[str, str] | None = None) -> bool:
    """One line per scored trial across the tasks, the best trial in colour: where one task's
    gain is another's loss. Each task's main metric at the trial's best epoch, on the task's own
    scale from the worst trial (0) to the best (1), so that tasks on other scales, and metrics
    where lower is better (mse), read alike. False with fewer than two tasks or two trials."""
    rows = [t for t in trials if t.get("scores")]
    tasks = sorted({task for t in rows for task in t["scores"]})
    if len(tasks) < 2 or len(rows) < 2:
        return False
    metric = {task: (main_metric or {}).get(task) or _main({m for t in rows for m in t["scores"].get(task, {})})
              for task in tasks}
    lower = _lower_is_better()
    span: dict[str, tuple[float, float]] = {}
    for task in tasks:
        vals = [t["scores"][task][metric[task]] for t in rows if metric[task] in t["scores"].get(task, {})]
        span[task] = (min(vals), max(vals))

    def scaled(task: str, value: float | None) -> float:
        if value is None:
            return float("nan")
        lo, hi = span[task]
        x = 0.5 if hi == lo else (value - lo) / (hi - lo)
        return 1 - x if metric[task] in lower else x

    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.4 * len(tasks) + 3, 4))
    for t in rows:
        best = t["trial_id"] == best_id
        ax.plot(range(len(tasks)), [scaled(task, t["scores"].get(task, {}).get(metric[task])) for task in tasks],
                marker="o", c="#b2182b" if best else "#bbbbbb", lw=2.2 if best else 1, zorder=3 if best else 1,
                label="best trial" if best else None)
    ax.set_xticks(range(len(tasks)), [f"{task}\n{metric[task]}" + (" (lower is better)" if metric[task] in lower
                                                                   else "") + f"\n{span[task][0]:.3g} to "
                                      f"{span[task][1]:.3g}" for task in tasks])
    ax.set_ylabel("validation score, worst trial 0, best 1")
    ax.set_title("Per-task trade-offs across trials")
    if best_id is not None:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
