"""``train.own_batches``: each named task trains on exactly so many batches of its own data,
then leaves the schedule, and is judged at its best evaluation within them.

Why (docs/transfer.md, "The equal budget"): a task's gain from a group must not come from
training it longer. Alone, a task's run stops when its validation score stops improving
(patience); in a group, the group's objective (the mean over tasks) decides, so a weak task
kept training while its partner improved (wnut_ner "gained" 60-72% next to every partner at ten
tasks, from about three times its own batches). A transfer study therefore gives each task of a
group the own batches it took alone at the same seed, and judges it on its own validation score
within them: alone and in a group, a task has seen the same data when it is judged.

:class:`OwnBatches` keeps the counts and the judgements in the run's :class:`TrainState`
(``seen``, ``judged``, ``done``), so that a resumed run goes on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables.state import TrainState

Metrics = dict[str, float]


class OwnBatches:
    """The own-batch budgets of a run (``budget``: task -> batches; empty: none, nothing
    changes). ``evaluate(tasks, split)`` scores some tasks on a split; ``sign[t]`` makes a
    task's main metric higher-is-better."""

    def __init__(self, budget: dict[str, int], st: TrainState, main_metric: dict[str, str], sign: dict[str, float],
                 evaluate: Callable[[list[str], str], dict[str, Metrics]]) -> None:
        self.budget, self.st, self.main, self.sign, self.evaluate = dict(budget), st, main_metric, sign, evaluate

    def __bool__(self) -> bool:
        return bool(self.budget)

    def active(self, step_tasks: list[str]) -> list[str]:
        """The tasks of a planned step that still train (a step of finished tasks only is skipped)."""
        return [t for t in step_tasks if t not in self.st.done]

    def count(self, step_tasks: list[str]) -> None:
        """After an optimizer step on ``step_tasks``: count their batches; a task that just had
        its last one is evaluated there, judged and done."""
        for t in step_tasks:
            self.st.seen[t] = self.st.seen.get(t, 0) + 1
            if t in self.budget and self.st.seen[t] >= self.budget[t]:
                self.judge(t, self.evaluate([t], "val")[t])
                self.st.done.append(t)

    def all_done(self) -> bool:
        return bool(self.budget) and all(t in self.st.done for t in self.budget)

    def running(self, tasks: list[str]) -> list[str]:
        """The tasks still training (those evaluated at an epoch's end)."""
        return [t for t in tasks if t not in self.st.done]

    def at_epoch_end(self, tasks: list[str]) -> dict[str, Metrics]:
        """Every task's validation metrics at an epoch's end: the tasks still training evaluated
        now (and judged), those that left as they were when they left."""
        running = self.running(tasks)
        metrics = {**self.evaluate(running, "val"), **self.frozen()}
        for t in running:
            self.judge(t, metrics[t])
        return metrics

    def judge(self, t: str, metrics: Metrics) -> None:
        """An evaluation of a named task: kept as its judgement where its main metric is its best
        so far within its batches (its test split scored then: the model changes after, and a copy of
        the weights for each task would cost more than a test split's pass); the last one is kept too
        (what the run's rows show once the task is done)."""
        if t not in self.budget:
            return
        score = self.sign[t] * metrics[self.main[t]]
        old = self.st.judged.get(t)
        if old is None or score > old["score"]:
            self.st.judged[t] = {"score": score, "step": self.st.step, "own": self.st.seen.get(t, 0),
                                 "metrics": dict(metrics), "test": self.evaluate([t], "test")[t], "last": dict(metrics)}
        else:
            old["last"] = dict(metrics)

    def frozen(self) -> dict[str, Metrics]:
        """The finished tasks' last evaluations (their rows' values once they left the schedule)."""
        return {t: dict(self.st.judged[t]["last"]) for t in self.st.done if t in self.st.judged}

    def row(self, final: bool) -> dict[str, Any]:
        """``own/<task>`` (own batches so far) each epoch; at the run's end also each named
        task's judgement: ``judged/<task>/<metric>`` (validation) and ``judged_own/<task>``."""
        out: dict[str, Any] = {f"own/{t}": n for t, n in self.st.seen.items()} if self.budget else {}
        if final:
            for t, j in self.st.judged.items():
                out.update({f"judged/{t}/{m}": v for m, v in j["metrics"].items()})
                out[f"judged_own/{t}"] = j["own"]
        return out

    def result(self, metrics: dict[str, Metrics], test: dict[str, Metrics]
               ) -> tuple[dict[str, Metrics], dict[str, Metrics]]:
        """A run's (validation, test) metrics per task: each named task's judgement in place of
        the run's best epoch."""
        val = {**metrics, **{t: dict(j["metrics"]) for t, j in self.st.judged.items()}}
        return val, {**test, **{t: dict(j["test"]) for t, j in self.st.judged.items()}}
