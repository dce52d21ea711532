"""Optuna through Ray Tune: told each trial's best epoch, tolerant of a result without the
objective, no configuration trained twice, and a study on disk that a kill leaves whole.

A diverged trial's last result carries no objective (never a NaN); Ray's ``OptunaSearch``
indexes the metric of every intermediate result and would fail on it. Here such a result
is skipped, and the trial's completion without a value tells Optuna it was pruned.

In a discrete space (``combinations``: the task subsets; ``choice`` parameters) Optuna's
samplers propose a configuration already tried again and again; every trial trains with the
config's seed, so a repeat would only train the same numbers twice. Parameters that differ
only where they change nothing (``search_spaces.RunKey``: a one-task subset under two sharing
modes, ``soft_l2`` under hard sharing) are a repeat too. A proposal that repeats a finished
trial is told the value that trial got (what training it again would give) and one of an
unfinished trial is dropped (state FAIL, which the samplers ignore); then Optuna is asked
again, up to ``MAX_REDRAWS`` times, after which the repeat is trained (the space is nearly
exhausted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

MAX_REDRAWS = 10


class Searcher(OptunaSearch):
    """``key``: what a trial's parameters train (``search_spaces.RunKey``); default: the
    parameters themselves."""

    _key: Callable[[dict[str, Any]], Any] | None = None  # a class default: older saved searchers lack it
    _best: dict[str, dict[str, float]] | None = None  # per running trial: its best epoch's values so far

    def __init__(self, *args: Any, key: Callable[[dict[str, Any]], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key = key

    @property
    def study(self) -> Any:
        return self._ot_study

    def restore(self, checkpoint_path: str) -> None:
        """Ray's saved searcher, after a kill: a trial it asked for after its last save is in the
        study on disk, RUNNING, and no Ray trial will ever tell it: it is failed (marked
        ``mtlo.orphan``), so that the study holds every configuration once."""
        super().restore(checkpoint_path)
        study = self._ot_study
        if study is None:
            return
        live = {ot.number for ot in self._ot_trials.values()}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in live:
                study._storage.set_trial_user_attr(t._trial_id, "mtlo.orphan", True)
                study.tell(t.number, state=TrialState.FAIL)

    def _trains(self, params: dict[str, Any]) -> Any:
        return params if self._key is None else self._key(params)

    @property
    def redraws(self) -> int:
        """Repeats told or dropped over the search (marked ``mtlo.repeat_of`` in the study)."""
        study = self._ot_study
        return 0 if study is None else sum(
            "mtlo.repeat_of" in t.user_attrs for t in study.get_trials(deepcopy=False))

    def _metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric or [])

    def _track(self, trial_id: str, result: dict[str, Any]) -> None:
        """Remember the trial's best epoch so far (the weights it keeps)."""
        if result.get("objective") is None:
            return
        if self._best is None:
            self._best = {}
        best = self._best.get(trial_id)
        if best is None or float(result["objective"]) > best["objective"]:
            self._best[trial_id] = {k: result[k] for k in ["objective", *self._metrics()] if k in result}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._track(trial_id, result)
        if isinstance(self.metric, str) and result.get(self.metric) is None:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Optuna is told a trial's value at its best epoch (what the search ranks and the
        model kept), not at its last; a diverged trial stays without a value (pruned). A trial's
        last result comes only here, not through ``on_trial_result``."""
        if result:
            self._track(trial_id, result)
        best = (self._best or {}).pop(trial_id, None)
        if result and best and all(result.get(m) is not None for m in self._metrics()):
            result = {**result, **{m: best[m] for m in self._metrics() if m in best}}
        super().on_trial_complete(trial_id, result, error)

    def suggest(self, trial_id: str) -> dict | None:
        for attempt in range(MAX_REDRAWS + 1):
            config = super().suggest(trial_id)
            ot, study = self._ot_trials.get(trial_id), self._ot_study
            if ot is None or study is None or attempt == MAX_REDRAWS:
                return config
            mine = self._trains(ot.params)
            same = [t for t in study.get_trials(deepcopy=False)
                    if t.number != ot.number and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
                    and self._trains(t.params) == mine]
            if not same:
                return config
            done = [t for t in same if t.state == TrialState.COMPLETE]
            ot.set_user_attr("mtlo.repeat_of", (done or same)[0].number)
            if done:  # the same configuration and seed: the value it got
                study.tell(ot, done[0].values)
            else:  # still training: nothing to tell yet
                study.tell(ot, state=TrialState.FAIL)
            del self._ot_trials[trial_id]
        return config
