"""The search's Optuna study, on disk (``search.storage``, default ``sqlite:///optuna.db`` in
the working folder, beside mlflow.db; any Optuna RDB URL), named after the search.

Ray's ``OptunaSearch`` writes every trial it asks and tells to that storage, so the study
outlives the driver: ``optuna-dashboard`` shows it, ``optuna.load_study`` reads it,
``--resume`` goes on with the same study, and ``search.warm_start: OTHER`` seeds a new study
with an earlier one's finished trials when both searched the same space for the same
objective (recorded on each study as ``mtlo.*`` user attributes, and compared).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from orchestrator.config import Config, resolve_tracking_uri
from orchestrator.errors import ConfigError
from trainables.errors import first_line

MIN_FOR_IMPORTANCE = 5  # finished trials before parameter importance means anything


def storage_url(cfg: Config) -> str:
    return resolve_tracking_uri(cfg.search.storage)


def open_storage(url: str) -> Any:
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and Optuna raise many kinds for a bad URL
        raise ConfigError(f"search.storage: cannot open the Optuna storage {url}: {first_line(exc)}") from None


def identity(space: Any, objective: Any) -> dict[str, str]:
    """What must agree for an earlier study's values to mean the same here."""
    params = repr((space.params, space.subset))
    return {"mtlo.space": hashlib.sha256(params.encode()).hexdigest()[:16], "mtlo.objective": objective.kind,
            "mtlo.tasks": ",".join(sorted(objective.tasks)), "mtlo.target": objective.target or ""}


def _absent(url: str) -> bool:
    """A sqlite storage whose file does not exist yet (opening it would create it)."""
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()


def check(cfg: Config, url: str, *, resume: bool, ident: dict[str, str]) -> list[Any]:
    """Before anything starts (and before a new sqlite file is made): a new search's study name
    is free; ``warm_start`` names a study of the same space and objective. Returns the
    warm-start trials (finished ones)."""
    import optuna

    from orchestrator.store.tracking import sqlite_problem

    problem = url.startswith("sqlite:///") and sqlite_problem(Path(url.removeprefix("sqlite:///")))
    if problem:
        raise ConfigError(f"search.storage: {problem}")
    storage = None if _absent(url) else open_storage(url)
    names = set(optuna.study.get_all_study_names(storage)) if storage is not None else set()
    if not resume and cfg.name in names:
        raise ConfigError(f"search.storage: {url} already holds an Optuna study named '{cfg.name}': use --resume "
                          "to continue that search, or give this one another name (--set name=...)")
    other = cfg.search.warm_start
    if other is None or resume:
        return []
    if other not in names:
        raise ConfigError(f"search.warm_start: no study named '{other}' in {url} "
                          f"(studies: {', '.join(sorted(names)) or 'none'})")
    assert storage is not None  # the study is in it
    study = optuna.load_study(study_name=other, storage=storage)
    theirs = {k: str(v) for k, v in study.user_attrs.items() if k in ident}
    differ = [k.removeprefix("mtlo.") for k, v in ident.items() if theirs.get(k) != v]
    if differ:
        raise ConfigError(f"search.warm_start: study '{other}' searched a different "
                          f"{' and '.join(differ)}; its values do not carry over to this search")
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
            and "mtlo.repeat_of" not in t.user_attrs]


def seed(study: Any, ident: dict[str, str], warm: list[Any], source: str | None) -> int:
    """Mark a new study with what it searches and add the warm-start trials; returns how many."""
    import optuna

    for k, v in ident.items():
        study.set_user_attr(k, v)
    if study.get_trials(deepcopy=False):
        return 0  # a resumed study has them already
    for t in warm:
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, values=t.values,
            user_attrs={"mtlo.warm_start_from": f"{source}#{t.number}"}))
    return len(warm)


def importance(storage: Any, name: str) -> dict[str, float]:
    """Parameter importance (Optuna's default evaluator) once enough trials finished with
    more than one searched value; {} before that or for a multi-objective study."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    if len(study.directions) > 1:
        return {}
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < MIN_FOR_IMPORTANCE or not any(len({repr(t.params.get(p)) for t in done}) > 1
                                                 for p in done[0].params):
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):  # e.g. no parameter common to every finished trial
        return {}


def dashboard_command(url: str) -> str:
    """The command that shows the study (its URL's password masked: the user gives it)."""
    from orchestrator.redact import redact

    return f"optuna-dashboard {redact(url)} --host 127.0.0.1"
