"""Human output: per-task tables (rich), written to stdout; progress lines to stderr."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

err_console = Console(stderr=True, highlight=False)


def out_console() -> Console:
    """stdout; wide enough for the tables when piped to a file or a CI log."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def task_table(metrics: dict[str, dict[str, float]], main: dict[str, str], *, title: str,
               test: dict[str, dict[str, float]] | None = None) -> Table:
    """Each task's main metric on validation (what chose the epoch and the trial) and, where
    there is one, on the held-out test split, then its other validation metrics."""
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    table.add_column("main metric")
    table.add_column("validation", justify="right")
    if test is not None:
        table.add_column("test (held out)", justify="right")
    table.add_column("other metrics (validation)")
    for task, ms in metrics.items():
        m = main[task]
        others = ", ".join(f"{k}={_fmt(v)}" for k, v in ms.items() if k != m)
        cells = [task, m, _fmt(ms[m])]
        if test is not None:
            cells.append(_fmt(test[task][m]) if m in test.get(task, {}) else "-")
        table.add_row(*cells, others)
    return table


def epoch_line(row: dict[str, Any], main: dict[str, str]) -> str:
    parts = [f"epoch {row['epoch']}", f"step {row['step']}", f"objective {row['objective']:.4f}"]
    parts += [f"{t} {m} {row[f'val/{t}/{m}']:.4f}" for t, m in main.items()]
    parts.append(f"{row['seconds']:.0f}s")
    return " | ".join(parts)
