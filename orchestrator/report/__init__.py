"""Reports: typed results (a transfer study's or a search's, as ``--json`` gives them)
rendered as ``report.md`` and PNG figures, one module per figure. Nothing here trains,
reads MLflow's runs or calls a runner; ``commands.build_report`` brings the results.

:func:`write_report` writes to one folder (``reports/<sanitized run name>`` unless ``--out``)
and logs the files it wrote, and only those, on the parent run under ``report/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from orchestrator.redact import redact
from orchestrator.runtime import faults
from orchestrator.store import tracking
from orchestrator.store.runs import scored


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
    elif "pareto_front" in res and pareto_plot(scored(res["trials"]), res["pareto_front"], out / "pareto.png"):
        drawn.append("pareto.png")
    return drawn


def markdown(res: Any, drawn: list[str]) -> str:
    from orchestrator.report.search_md import search_markdown
    from orchestrator.report.transfer_md import transfer_markdown

    return transfer_markdown(res, drawn) if "method" in res else search_markdown(res, drawn)


def write_whole(path: Path, text: str, fault: str | None = None) -> None:
    """Whole or not at all: a reader never sees a half-written report (a temporary file,
    flushed to disk, then renamed over ``path``). The temporary file is a new one that
    ``mkstemp`` makes in the same folder (never a name given in advance, which a link planted in
    a shared folder could point elsewhere), and the rename replaces ``path`` itself, not what a
    link there points to. ``fault``: the test-only driver fault point (MTLO_FAULT) fired when
    half the text is in the temporary file."""
    import tempfile

    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write killed halfway left it
        with contextlib.suppress(OSError):
            if stale.is_file() and not stale.is_symlink() and stale.stat().st_uid == os.getuid():
                stale.unlink()
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            if fault is not None:
                f.write(text[:len(text) // 2])
                f.flush()
                faults.driver_point(faults.from_env(), fault)
                text = text[len(text) // 2:]
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o644)  # mkstemp's 0600: a report or predictions file reads as any other file
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def write_report(client: Any, run_id: str, res: Any, folder: Path) -> tuple[str, dict[str, Any]]:
    """Write report.md, report.json and the figures of ``res`` (a study's results,
    ``transfer.shapes.TransferResult``, or a search's) into ``folder``, then log those files, and
    no other, on the run ``run_id`` under ``report/``. Returns the markdown and the result as
    report.json holds it (what ``--json`` prints)."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = figures(res, folder)
    md = redact(markdown(res, drawn))
    write_whole(folder / "report.md", md)
    text = tracking.as_json(res)
    write_whole(folder / "report.json", text, fault="report")  # test-only: MTLO_FAULT=driver@report
    for name in ["report.md", "report.json", *drawn]:
        client.log_artifact(run_id, str(folder / name), artifact_path="report")
    return md, json.loads(text)
