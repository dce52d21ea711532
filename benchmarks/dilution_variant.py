"""Exploratory, not the product's estimate: an "effective steps" dilution for the affinity
method's estimate (orchestrator/transfer/predict.py), scored like benchmarks/grouping.py's
``estimates`` against the gains measured by exhaustive studies.

The product's dilution D_t(G) reads task t's own single-task learning curve at its share of
the step cap (1/|G| with round-robin): only t's own steps count. On the six-task study
wnut_ner's curve says -49% at a sixth of the cap, yet it lost only 17% in the all-tasks
group: the others' steps train the shared encoder too. The variant fits, per task, the
fraction λ_t of the *other* tasks' steps that count as t's own, from the all-tasks group
(the smallest λ_t in 0, 0.01, ..., 1 at which the dilution read at share + λ_t ·
(1 − share) is no worse than min(0, Δ_t(all)); 1 if none is), and reads the curve there for
every group. The rest of the estimate is unchanged. It was chosen after all three studies
were seen: none of them is a held-out check of it.

    python benchmarks/dilution_variant.py sqlite:////tmp/planted/mlflow.db:planted \\
        sqlite:////tmp/five/mlflow.db:five-tiny sqlite:////tmp/six/mlflow.db:six-tiny
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.report import find_parent  # noqa: E402
from orchestrator.transfer import analysis as an  # noqa: E402
from orchestrator.transfer.predict import Estimator, best_within, step_shares  # noqa: E402
from orchestrator.transfer.runner import estimator, read_study, study_from_mlflow, with_curves  # noqa: E402


class EffectiveSteps(Estimator):
    measured_all: dict[str, float]
    lam: dict[str, float]

    def own(self, t: str, share: float) -> float | None:
        vals = [v for c in self.curves.get(t, []) for v in [best_within(c, share * self.cap, self.higher_is_better[t])]
                if v is not None]
        b = self.baseline.get(t)
        if b is None or not vals or not self.cap:
            return None
        sign = 1.0 if self.higher_is_better[t] else -1.0
        return min(0.0, sign * (statistics.fmean(vals) - b) / max(abs(b), 1e-12))

    def fraction(self, t: str) -> float:
        if t not in self.lam:
            s_all = step_shares(self.schedule, self.batches, self.tasks, self.temperature)[t]
            target = min(0.0, self.measured_all.get(t, 0.0))
            self.lam[t] = next((i / 100 for i in range(101)
                                if (self.own(t, s_all + i / 100 * (1 - s_all)) or 0.0) >= target - 1e-9), 1.0)
        return self.lam[t]

    def dilution(self, t: str, group: Any) -> float | None:
        share = step_shares(self.schedule, self.batches, group, self.temperature)[t]
        if t not in self.baseline:
            return None
        d = self.own(t, share + self.fraction(t) * (1 - share))
        return 0.0 if d is None else d


def score(est: Any, rows: list[an.Gain]) -> dict[str, float]:
    from scipy import stats

    pairs = [(v, g.delta) for g in rows for v in [est(g.task, g.group)] if v is not None]
    a, b = zip(*pairs, strict=True)
    return {"n": len(pairs), "pearson": float(stats.pearsonr(a, b)[0]), "spearman": float(stats.spearmanr(a, b)[0]),
            "mean_abs_error": sum(abs(x - y) for x, y in pairs) / len(pairs)}


def main() -> None:
    from mlflow.tracking import MlflowClient

    for arg in sys.argv[1:]:
        uri, name = arg.rsplit(":", 1)
        client = MlflowClient(uri)
        parent = find_parent(client, name)
        study = study_from_mlflow(client, parent.info.run_id)
        runs, affinity, _ = read_study(client, parent.info.experiment_id, replace(study, method="exhaustive"))
        runs = with_curves(client, runs, study.main_metric)
        gains = an.gains(runs, study.higher_is_better)
        n, every = len(study.tasks), an.group_of(study.tasks)
        rows = [g for g in gains if 2 <= len(g.group) < n]
        used = [r for r in runs if len(r.group) in (1, n)]
        at_all = [g for g in gains if g.group == every]
        product = estimator(study, used, at_all, affinity or {})
        variant = EffectiveSteps(**{k: getattr(product, k) for k in (
            "tasks", "higher_is_better", "baseline", "curves", "affinity", "cap", "schedule", "batches",
            "temperature")})
        variant.measured_all, variant.lam = {g.task: g.delta for g in at_all}, {}
        variant.fit(variant.measured_all)
        print(name, {"product": score(product, rows), "effective_steps": score(variant, rows),
                     "fraction": {t: variant.fraction(t) for t in study.tasks}})


if __name__ == "__main__":
    main()
