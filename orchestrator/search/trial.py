"""The Ray Tune trainable: a searched trial = the config's run dict + the suggested params.

Everything the trial needs beyond Optuna's suggestions travels in a :class:`TrialContext`
through ``tune.with_parameters`` (put in the object store once, not copied per trial).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orchestrator.search.objectives import Objective
from search_spaces import apply_params

# keys Ray adds or that are ours, never Optuna suggestions
CONTEXT_KEYS = ("__mtlo_fixed",)


@dataclass(frozen=True)
class TrialContext:
    run: dict[str, Any]  # the config's run dict (encoder, tasks, train)
    objective: Objective
    cpus_per_trial: float


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The searched parameters of a trial (Optuna's suggestions, or fixed ones such as a
    baseline's task)."""
    params = {k: v for k, v in config.items() if k not in CONTEXT_KEYS}
    params.update(config.get("__mtlo_fixed") or {})
    return params


def trial_run(ctx: TrialContext, config: dict[str, Any]) -> dict[str, Any]:
    run = apply_params(ctx.run, trial_params(config))
    run["train"]["num_threads"] = max(1, int(ctx.cpus_per_trial or 1))
    return run


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Train one configuration and report every epoch to Ray Tune with the objective."""
    from ray import tune

    from trainables import train

    run = trial_run(ctx, config)
    tasks = list(run["tasks"])

    def report(row: dict[str, Any]) -> None:
        out = dict(row)
        out.update(ctx.objective.compute(row, tasks))
        for k, v in list(out.items()):
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None  # an undefined metric is missing, never NaN, for the searcher
        out["tasks"] = "+".join(tasks)
        tune.report(out)

    train(run, report)
