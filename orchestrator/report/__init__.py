"""Reports: typed results (a transfer study's or a search's, as ``--json`` gives them)
rendered as ``report.md`` and PNG figures, one module per figure. Nothing here trains,
reads MLflow's runs or calls a runner; ``commands.build_report`` brings the results.

:func:`write_report` writes to one folder (``reports/<sanitized run name>`` unless ``--out``)
and returns the paths of the files it wrote; the command logs those, and only those, on the
parent run under ``report/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.domain import scored
from orchestrator.files import write_whole
from orchestrator.redact import redact


def safe_name(name: str, fallback: str) -> str:
    """A run name as one folder name: every character but letters, digits, '-', '_' and '.'
    becomes '_', and no leading dot (so never '..', a hidden folder or a path); ``fallback``
    (the run id) where nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name or "").lstrip(".")
    return cleaned or fallback


def default_folder(run_name: str, run_id: str) -> Path:
    return Path("reports") / safe_name(run_name, run_id)


def figures(res: Any, out: Path) -> list[str]:
    """Draw the figures a result has data for into ``out``; their file names."""
    from orchestrator.report.affinity import affinity_map
    from orchestrator.report.gains import gain_bars
    from orchestrator.report.matrix import transfer_matrix
    from orchestrator.report.pareto import pareto_plot

    drawn = []
    if "method" in res:  # a transfer study
        if transfer_matrix(res, out / "transfer_matrix.png"):
            drawn.append("transfer_matrix.png")
        if res["affinity"] and affinity_map(res, out / "affinity.png"):
            drawn.append("affinity.png")
        if gain_bars(res, out / "gains.png"):
            drawn.append("gains.png")
        return drawn
    from orchestrator.report.search_plots import history_plot, importance_plot, tasks_plot

    ok = scored(res["trials"])
    best = (res.get("best") or {}).get("trial_id")
    # each draws only what its data allow: a history of one-number objectives, a front of a pareto search
    for name, draw in (("history.png", lambda p: history_plot(ok, p)),
                       ("importance.png", lambda p: importance_plot(res.get("importance") or {}, p)),
                       ("pareto.png", lambda p: pareto_plot(ok, res.get("pareto_front") or [], p)),
                       ("tasks.png", lambda p: tasks_plot(ok, best, p, res.get("main_metric") or {}))):
        if draw(out / name):
            drawn.append(name)
    return drawn


def markdown(res: Any, drawn: list[str]) -> str:
    from orchestrator.report.search_md import search_markdown
    from orchestrator.report.transfer_md import transfer_markdown

    return transfer_markdown(res, drawn) if "method" in res else search_markdown(res, drawn)


def write_report(res: Any, folder: Path, halfway: Callable[[], None] | None = None
                 ) -> tuple[str, dict[str, Any], list[Path]]:
    """Write report.md, report.json and the figures of ``res`` (a study's results,
    ``transfer.shapes.TransferResult``, or a search's) into ``folder``. Returns the markdown,
    the result as report.json holds it (what ``--json`` prints) and the paths of the files
    written, which the command logs on the parent run. ``halfway``: called when half of
    report.json is in its temporary file (the test-only fault point ``driver@report``)."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = figures(res, folder)
    md = redact(markdown(res, drawn))
    write_whole(folder / "report.md", md)
    text = redact(json.dumps(res, indent=2, default=str))
    write_whole(folder / "report.json", text, halfway=halfway)
    return md, json.loads(text), [folder / name for name in ["report.md", "report.json", *drawn]]
