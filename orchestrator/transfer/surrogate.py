"""The surrogate method (``mtlo transfer --method surrogate``), after Li, Nguyen and Zhang (TMLR
2023, "Identification of Negative Transfers in Multitask Learning Using Surrogate Models";
reference code VirtuosoResearch/Task-Modeling).

1. Which task sets to train (:func:`propose_subsets`): every task alone, then ``M`` task
   subsets of two or more tasks proposed by Optuna's space-filling sampler (``QMCSampler``,
   scrambled Sobol points, one coordinate per task: a task is in the subset when its
   coordinate is at least 1/2). A point that gives a subset of fewer than two tasks, or one
   already proposed, is told to Optuna as pruned and another is asked. A pair of tasks that
   no subset holds together (few subsets) is then joined: the other task is added to the
   smallest subset that holds one of them, so that every pair co-occurs where it can; and of
   several scrambles the first is taken in which every task is also seen without each other.
2. The surrogate (:func:`fit`): for every task t a ridge regression of its measured gain
   Δ_t(S) (docs/transfer.md) over the trained subsets S ∋ t of two or more tasks,

       Δ_t(S) ≈ Σ_{j ∈ S, j ≠ t} θ_tj + γ_t · (1 − 1/|S|),

   with no intercept (t alone has Δ = 0 by definition). θ_tj > 0: j helps t, θ_tj < 0: j hurts
   t (the paper thresholds the same coefficients); the size term is the dilution under the
   equal step cap that every run trains under (t's own share of the steps falls as 1/|S| in a
   round-robin schedule). Its observations are the gains at each seed (paired with the task
   alone at the same seed); the penalty (on the task coefficients only) is the one that
   predicts left-out subsets best, and each coefficient's 95% interval comes from the
   residual variance over seeds and subsets.
3. Every group's gain is predicted (``Surrogate.predict``), the best grouping found on them by
   the exact search (``analysis.best_grouping``) and the proposed groups trained to confirm
   them, as the other methods do (``transfer/runner.py``).

How well the surrogate predicts is measured, not assumed (:func:`cross_validate`): each
trained subset is left out in turn, every task's model fitted on the others, and the left-out
gains predicted: R² and Spearman's rank correlation over those predictions.
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.domain import Group, Run, group_of, relative_gain
from orchestrator.errors import ConfigError
from orchestrator.transfer import analysis as an

# ridge penalties tried (on left-out subsets); the features are 0/1, so a penalty of 1 weighs as one observation
ALPHAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
SIZE = "size"  # the name of the group-size (dilution) term among a task's coefficients


def subsets_available(n: int) -> int:
    """Task subsets of two or more tasks out of ``n``."""
    return 2 ** n - 1 - n


def default_runs(n: int) -> int:
    return min(2 * n, subsets_available(n))


def check_runs(runs: int, n: int) -> None:
    """``--runs``: between 1 and the subsets of two or more tasks that exist."""
    if runs < 1:
        raise ConfigError(f"--runs: must be at least 1, got {runs}")
    if runs > subsets_available(n):
        have = subsets_available(n)
        raise ConfigError(f"--runs: {n} tasks have {have} subset{'s' if have != 1 else ''} of two or more tasks, "
                          f"asked for {runs}")


DESIGNS = 32  # scrambled Sobol designs tried for one that separates every ordered pair of tasks


def propose_subsets(tasks: Sequence[str], m: int, seed: int = 0) -> list[Group]:
    """``m`` distinct task subsets of two or more tasks, proposed by Optuna's QMC sampler
    (see the module's docstring); the same for the same tasks, ``m`` and ``seed``.

    Of up to ``DESIGNS`` scrambles of the Sobol points, the first where every pair of tasks
    co-occurs and every task is also seen without each other task (else a task's coefficient
    for a task always beside it could not be told from its size term) is taken; failing
    that, the one that leaves the fewest such pairs."""
    names = sorted(tasks)
    check_runs(m, len(names))
    best: tuple[int, list[Group]] | None = None
    for k in range(DESIGNS):
        design = _join_pairs(_sobol(names, m, seed * DESIGNS + k), names)
        short = _shortfall(design, names)
        if best is None or short < best[0]:
            best = (short, design)
        if short == 0:
            break
    assert best is not None
    return best[1]


def _shortfall(design: list[Group], names: Sequence[str]) -> int:
    """Pairs that never co-occur plus ordered pairs (t, j) with no subset holding t without j."""
    apart = sum(1 for i, j in itertools.combinations(names, 2) if not any(i in g and j in g for g in design))
    return apart + sum(1 for i, j in itertools.permutations(names, 2) if not any(i in g and j not in g for g in design))


def _sobol(names: Sequence[str], m: int, seed: int) -> list[Group]:
    import optuna
    from optuna.distributions import BaseDistribution, FloatDistribution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
    space: dict[str, BaseDistribution] = {t: FloatDistribution(0.0, 1.0) for t in names}
    out: list[Group] = []
    asked = 0
    verbosity = optuna.logging.get_verbosity()  # quiet here only: its first point's notice is not the user's
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(sampler=sampler, direction="maximize")
        while len(out) < m and asked < 50 * m:
            trial = study.ask(space)
            asked += 1
            g = group_of(t for t in names if trial.params[t] >= 0.5)
            if len(g) >= 2 and g not in out:
                out.append(g)
                study.tell(trial, 0.0)  # the proposal only: its gains are measured by the study's runs
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if len(out) < m:  # asked for nearly every subset there is: the rest in a seeded order
        rest = [group_of(c) for k in range(2, len(names) + 1) for c in itertools.combinations(names, k)]
        random.Random(seed).shuffle(rest)
        out += [g for g in rest if g not in out][: m - len(out)]
    return out


def _join_pairs(subsets: list[Group], names: Sequence[str]) -> list[Group]:
    """Every pair that no subset holds together joined in the smallest subset holding one of
    them (when that makes no subset twice)."""
    out = list(subsets)
    for i, j in itertools.combinations(names, 2):
        if any(i in g and j in g for g in out):
            continue
        for a, b in ((i, j), (j, i)):
            cands = sorted((k for k, g in enumerate(out) if a in g and b not in g and group_of((*g, b)) not in out),
                           key=lambda k: (len(out[k]), out[k]))
            if cands:
                out[cands[0]] = group_of((*out[cands[0]], b))
                break
    return out


def _features(group: Iterable[str], others: Sequence[str]) -> list[float]:
    g = set(group)
    return [1.0 if j in g else 0.0 for j in others] + [1.0 - 1.0 / len(g)]


def _solve(x: Any, y: Any, alpha: float) -> tuple[Any, Any]:
    """Ridge with the penalty on the task coefficients only (not on the size term, the last
    column: an L2 penalty on it would spread the common dilution over every task's
    coefficient, each other task then looking like a hurter): the coefficients and the
    inverse of the penalized normal matrix."""
    import numpy as np

    pen = np.eye(x.shape[1]) * alpha
    pen[-1, -1] = 0.0
    inv = np.linalg.pinv(x.T @ x + pen)
    return inv @ x.T @ y, inv


def _alpha(x: Any, y: Any, clusters: Any) -> float:
    """The penalty whose fit predicts left-out subsets best (each subset's seeds left out
    together; exact for a linear smoother: residual / (1 − leverage) generalised to blocks)."""
    import numpy as np

    best, err = ALPHAS[len(ALPHAS) // 2], math.inf
    for alpha in ALPHAS:
        coef, inv = _solve(x, y, alpha)
        res = y - x @ coef
        total = 0.0
        for c in np.unique(clusters):
            idx = clusters == c
            h = x[idx] @ inv @ x[idx].T
            total += float(np.sum(np.linalg.lstsq(np.eye(int(idx.sum())) - h, res[idx], rcond=None)[0] ** 2))
        if total < err - 1e-15:
            best, err = alpha, total
    return best


@dataclass
class TaskModel:
    task: str
    others: list[str]  # the tasks of the coefficients, in order (then the size term)
    coef: list[float]  # the penalized fit: what predicts
    alpha: float
    n: int  # subsets it was fitted on
    exact: list[float] = field(default_factory=list)  # least squares (no penalty): what is read as who helps whom
    ci: list[tuple[float, float]] = field(default_factory=list)  # 95% intervals of ``exact``

    def predict(self, group: Iterable[str]) -> float:
        return float(sum(c * x for c, x in zip(self.coef, _features(group, self.others), strict=True)))


def _fit_task(task: str, others: list[str], obs: list[tuple[Group, int, float]], intervals: bool) -> TaskModel:
    """One task's model on its observations (subset, seed, paired gain at that seed): the
    penalized fit that predicts, and (``intervals``) the least-squares coefficients with 95%
    t intervals from the residual variance, where the subsets identify every coefficient (a
    penalty biases coefficients toward 0, so its intervals would not cover the truth)."""
    import numpy as np
    from scipy import stats

    x = np.array([_features(g, others) for g, _, _ in obs])
    y = np.array([d for _, _, d in obs])
    keys = sorted({g for g, _, _ in obs})
    clusters = np.array([keys.index(g) for g, _, _ in obs])
    alpha = _alpha(x, y, clusters) if len(keys) >= 3 else 1.0
    coef, _ = _solve(x, y, alpha)
    model = TaskModel(task, others, [float(c) for c in coef], alpha, len(keys))
    dof = len(y) - x.shape[1]
    if intervals and dof >= 1 and np.linalg.matrix_rank(x) == x.shape[1]:
        inv = np.linalg.inv(x.T @ x)
        exact = inv @ x.T @ y
        sigma2 = float(np.sum((y - x @ exact) ** 2)) / dof
        q = float(stats.t.ppf(0.975, dof))
        half = [q * math.sqrt(max(sigma2 * v, 0.0)) for v in np.diag(inv)]
        model.exact = [float(c) for c in exact]
        model.ci = [(float(c - h), float(c + h)) for c, h in zip(exact, half, strict=True)]
    return model


Observations = dict[str, list[tuple[Group, int, float]]]  # task -> (subset, seed, gain at that seed)


def observations(runs: Iterable[Run], higher_is_better: Mapping[str, bool]) -> Observations:
    """task -> (subset, seed, gain at that seed) over the finished runs of two or more tasks:
    s_t · (m_t(S, seed) − b_t(seed)) / |mean b_t| (paired by seed, as ``analysis.grouping_totals``
    scores a grouping; their mean over seeds is Δ_t(S)). Tasks whose baseline is 0 have none."""
    runs = list(runs)
    base = an.baselines(runs)
    zero = set(an.zero_baselines(base))
    alone = {(r.group[0], r.seed): r.scores.get(r.group[0]) for r in runs if len(r.group) == 1}
    out: Observations = {}
    for r in sorted(runs, key=lambda r: (len(r.group), r.group, r.seed)):
        if len(r.group) < 2:
            continue
        for t in r.group:
            own, b = r.scores.get(t), alone.get((t, r.seed))
            if t in zero or t not in base or own is None or b is None or not (math.isfinite(own) and math.isfinite(b)):
                continue
            d = relative_gain(base[t].mean + (own - b), base[t].mean, higher_is_better[t])
            if d is not None:
                out.setdefault(t, []).append((r.group, r.seed, d))
    return out


@dataclass
class Surrogate:
    tasks: list[str]
    models: dict[str, TaskModel]
    cv: dict[str, Any] = field(default_factory=dict)

    def predict(self, task: str, group: Group) -> float | None:
        """Δ_task(group) as the surrogate predicts it (0 alone; None: no model for the task)."""
        if len(group) == 1:
            return 0.0
        model = self.models.get(task)
        return model.predict(group) if model is not None else None

    def __call__(self, task: str, group: Group) -> float | None:
        return self.predict(task, group)

    def as_dict(self) -> dict[str, Any]:
        """Each task's coefficients (least squares where its subsets identify them, with a 95%
        interval and whether it excludes 0: who helps it, who hurts it; else the penalized
        fit's, without interval), the penalized ones that predict, its penalty and subsets; the
        cross-validated fit."""
        tasks: dict[str, Any] = {}
        for t, m in self.models.items():
            rows, sign = {}, {}
            for k, name in enumerate([*m.others, SIZE]):
                ci = m.ci[k] if m.ci else None
                sign[name] = 0 if ci is None or ci[0] <= 0 <= ci[1] else (1 if ci[0] > 0 else -1)
                rows[name] = {"coef": m.exact[k] if m.exact else m.coef[k], "ci": list(ci) if ci else None,
                              "predicts": m.coef[k], "sign": sign[name]}
            tasks[t] = {"coefficients": rows, "alpha": m.alpha, "subsets": m.n,
                        "helpers": [j for j in m.others if sign[j] > 0],
                        "hurters": [j for j in m.others if sign[j] < 0]}
        return {"tasks": tasks, "cv": self.cv}


def fit(tasks: Sequence[str], runs: Iterable[Run], higher_is_better: Mapping[str, bool], *,
        intervals: bool = True, validate: bool = True) -> Surrogate:
    """Every task's model from the study's finished runs; ``validate``: with the
    leave-one-subset-out fit (:func:`cross_validate`)."""
    obs = observations(runs, higher_is_better)
    names = sorted(tasks)
    models = {t: _fit_task(t, [j for j in names if j != t], obs[t], intervals) for t in names if obs.get(t)}
    out = Surrogate(names, models)
    if validate:
        out.cv = cross_validate(names, obs)
    return out


def cross_validate(tasks: Sequence[str], obs: Observations) -> dict[str, Any]:
    """Each trained subset left out in turn (all its seeds): every task's model fitted on the
    other subsets predicts its gain there, against the measured Δ_t(S) (mean over seeds). R²
    (1 − residual / total sum of squares about the measured mean), Spearman's rank
    correlation and the mean absolute error over all the predicted (task, subset) gains;
    ``n``: how many. Figures only with three or more."""
    from scipy import stats

    names = sorted(tasks)
    subsets = sorted({g for rows in obs.values() for g, _, _ in rows}, key=lambda g: (len(g), g))
    pairs: list[tuple[float, float]] = []
    for left in subsets:
        for t in left:
            rest = [o for o in obs.get(t, []) if o[0] != left]
            held = [d for g, _, d in obs.get(t, []) if g == left]
            if len({g for g, _, _ in rest}) < 1 or not held:
                continue
            model = _fit_task(t, [j for j in names if j != t], rest, intervals=False)
            pairs.append((model.predict(left), sum(held) / len(held)))
    out: dict[str, Any] = {"n": len(pairs), "subsets": len(subsets)}
    if len(pairs) >= 3:
        pred, meas = zip(*pairs, strict=True)
        mean = sum(meas) / len(meas)
        ss_tot = sum((m - mean) ** 2 for m in meas)
        ss_res = sum((m - p) ** 2 for p, m in pairs)
        out["r2"] = 1 - ss_res / ss_tot if ss_tot > 0 else None
        rho = stats.spearmanr(pred, meas)[0] if len(set(pred)) > 1 and len(set(meas)) > 1 else float("nan")
        out["spearman"] = None if math.isnan(rho) else float(rho)
        out["mean_abs_error"] = sum(abs(p - m) for p, m in pairs) / len(pairs)
    return out
