"""Progress of a search on stderr.

On a terminal: a live table (one row per trial: status, epoch, objective, node, the
searched parameters) under a header with the counts running / done / stopped / failed
(/ diverged),
the best objective so far and the elapsed time. Elsewhere (a CI log, a pipe): one line
whenever a trial starts, ends or fails, with the same counts.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback
from rich.live import Live
from rich.table import Table

from orchestrator.display import err_console
from orchestrator.runtime.trial import ended_early, trial_params


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class Progress(Callback):
    def __init__(self, total: int, role: str, metric: str | None, *, epochs: int | None = None,
                 live: bool | None = None) -> None:
        self.total = total
        self.role = role
        self.metric = metric
        self.epochs = epochs
        self.start = time.time()
        self.rows: dict[str, dict[str, Any]] = {}  # trial id -> status, epoch, value, node, params
        self.best: tuple[float, str] | None = None
        self.live_wanted = err_console.is_terminal if live is None else live
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:  # Ray saves callbacks with the experiment state
        return {**self.__dict__, "_live": None}

    # -- state ---------------------------------------------------------------------------
    def _count(self, status: str) -> int:
        return sum(1 for r in self.rows.values() if r["status"] == status)

    def header(self) -> str:
        best = "" if self.metric is None else \
            f" | best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else " | best -"
        return (f"[{time.time() - self.start:6.0f}s] {self.role}s: {self._count('RUNNING')} running, "
                f"{self._count('FINISHED')} done, {self._count('STOPPED')} stopped early, "
                f"{self._count('FAILED')} failed"
                + (f", {self._count('DIVERGED')} diverged" if self._count("DIVERGED") else "")
                + f" of {self.total}{best}")

    def table(self) -> Table:
        table = Table(title=self.header(), title_justify="left", expand=False)
        for col in ("trial", "status", "epoch", self.metric or "result", "node", "params"):
            table.add_column(col)
        for tid, r in self.rows.items():
            value = f"{r['value']:.4f}" if r.get("value") is not None else "-"
            epoch = f"{r.get('epoch') or 0}" + (f"/{self.epochs}" if self.epochs else "")
            params = ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items())
            table.add_row(tid, r["status"], epoch, value, r.get("node") or "-", params)
        return table

    def _event(self, text: str) -> None:
        if self._live is not None:
            self._live.update(self.table())
        elif not self.live_wanted:
            err_console.print(f"{self.header()} | {text}")

    def _ended(self, epoch: int) -> str:
        """A trial that ended on its own: STOPPED (early: patience, or the scheduler) or FINISHED."""
        return "STOPPED" if self.epochs is not None and epoch < self.epochs else "FINISHED"

    def _restored(self, trials: list) -> None:
        """Count the trials a resumed search had already ended (Ray restores this callback as
        it was saved when the search began, and reports no event for them)."""
        for t in trials:
            if t.trial_id in self.rows or t.status not in ("TERMINATED", "ERROR"):
                continue
            last = t.last_result or {}
            epoch = int(last.get("epoch") or 0)
            early = ended_early(last)
            status = "FAILED" if t.status == "ERROR" else early[0] if early else self._ended(epoch)
            self.rows[t.trial_id] = {"params": trial_params(t.config), "epoch": epoch, "status": status}
            self._best(last.get(self.metric) if self.metric else None, t.trial_id)

    def _best(self, value: Any, trial_id: str) -> None:
        if value is not None and (self.best is None or value > self.best[0]):
            self.best = (float(value), trial_id)

    # -- Ray Tune callbacks ----------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self.start = time.time()  # elapsed: since this session of the search began (a resumed one too)
        if self.live_wanted and self._live is None:
            self._live = Live(self.table(), console=err_console, refresh_per_second=1,
                              get_renderable=self.table, transient=False)
            self._live.start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._restored(trials)
        last = trial.last_result or {}  # a trial restored from its checkpoint goes on from its epoch
        row = self.rows.setdefault(trial.trial_id, {"params": trial_params(trial.config),
                                                    "epoch": int(last.get("epoch") or 0)})
        row["status"] = "RUNNING"
        self._event(f"started {trial.trial_id}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        row = self.rows.get(trial.trial_id)
        value = result.get(self.metric) if self.metric else None
        early = ended_early(result)
        if row is not None and early is not None:
            row["status"] = early[0]
        elif row is not None:
            row["epoch"] = result.get("epoch")
            row["node"] = str(result.get("node_id") or "")[:8]
            if value is not None:
                row["value"] = float(value)
        self._best(value, trial.trial_id)
        if self._live is not None:
            self._live.update(self.table())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.rows.setdefault(trial.trial_id, {"params": {}, "epoch": 0})
        if row.get("status") == "DIVERGED":
            self._event(f"DIVERGED {trial.trial_id} (NaN or infinite loss)")
            return
        row["status"] = self._ended(int(row.get("epoch") or 0))
        self._event(f"{'stopped' if row['status'] == 'STOPPED' else 'finished'} {trial.trial_id}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.rows.setdefault(trial.trial_id, {"params": {}, "epoch": 0})
        row["status"] = "FAILED"
        self._event(f"FAILED {trial.trial_id}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        row = self.rows.setdefault(trial.trial_id, {"params": {}, "epoch": 0})
        row["status"] = "RETRYING"
        self._event(f"failed, retrying from its last checkpoint: {trial.trial_id}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self.table())
            self._live.stop()
            self._live = None
