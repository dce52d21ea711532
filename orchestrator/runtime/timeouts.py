"""``search.trial_timeout``: a trial running past it is stopped and recorded FAILED.

A hung trial (a deadlocked data loader, a collective that never returns, a stuck file
system) reports nothing, so neither a Ray Tune ``Stopper`` (it sees results only) nor a
thread inside the trial (it cannot interrupt the hung one) can end it. The Tune controller
can: ``TrialTimeouts`` wraps the search's scheduler (ASHA or FIFO, which it delegates every
decision to) and, at each step of the controller (several a second), fails every running
trial whose time is up through the controller's own failure path, not retried, then kills
its worker so that its CPUs and GPU share go to the next trial. The MLflow recorder, the
live table and Optuna see an ordinary failed trial whose error is "timed out after N s".

A trial's time is Ray's ``time_total_s`` when it last started (its time before a retry or a
``--resume``) plus the wall time since: setup, training and evaluation, not time waiting
for a worker.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune.schedulers import TrialScheduler


class TrialTimedOut(RuntimeError):
    """The error a timed-out trial is recorded with."""


class TrialTimeouts(TrialScheduler):
    """``inner``'s decisions, plus: a trial running more than ``seconds`` is failed."""

    def __init__(self, inner: TrialScheduler, seconds: float) -> None:
        self.inner = inner
        self.seconds = float(seconds)
        self._since: dict[str, tuple[float, float]] = {}  # trial id -> (monotonic start, time before it)

    def __getstate__(self) -> dict[str, Any]:  # saved with the experiment: start times mean nothing later
        return {"inner": self.inner, "seconds": self.seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], state["seconds"])  # type: ignore[misc]

    # -- the timeouts ------------------------------------------------------------------
    def elapsed(self, trial: Any, now: float) -> float:
        start, before = self._since.setdefault(
            trial.trial_id, (now, float((getattr(trial, "last_result", None) or {}).get("time_total_s") or 0.0)))
        return before + now - start

    def stop_overdue(self, wrapped: Any) -> None:
        from ray.tune.experiment import Trial

        controller = getattr(wrapped, "_tune_controller", wrapped)
        now = time.monotonic()
        running = {t.trial_id: t for t in controller.get_live_trials() if t.status == Trial.RUNNING}
        for tid in [t for t in self._since if t not in running]:
            del self._since[tid]  # ended, or waiting again: its clock starts anew when it runs
        for tid, trial in running.items():
            if self.elapsed(trial, now) > self.seconds:
                self._fail(controller, trial)
                del self._since[tid]

    def _fail(self, controller: Any, trial: Any) -> None:
        import ray

        actor = trial.temporary_state.ray_actor
        error = TrialTimedOut(f"timed out after {self.seconds:g} s (search.trial_timeout)")
        # the controller's own failure path (scheduler, searcher, callbacks, error file), with
        # no retry: a hung trial retried would hang again
        retries, trial.max_failures = trial.max_failures, 0
        try:
            controller._process_trial_failure(trial, exception=error)
        finally:
            trial.max_failures = retries
        if actor is not None:  # Ray asks it to stop, which a hung worker never does
            ray.kill(actor, no_restart=True)

    # -- the scheduler's decisions: the wrapped one's ------------------------------------
    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self.stop_overdue(tune_controller)  # called at every step of the controller
        return self.inner.choose_trial_to_run(tune_controller)

    @property
    def metric(self) -> Any:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.inner.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)
