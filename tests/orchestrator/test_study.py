"""The Optuna study on disk (orchestrator/search/study.py), without Ray: name clashes,
warm starts that must agree on space and objective, parameter importance."""

import optuna
import pytest

from orchestrator.config import Config
from orchestrator.errors import ConfigError
from orchestrator.search import study

IDENT = {"mtlo.space": "abc", "mtlo.objective": "mean_score", "mtlo.tasks": "rt,vader", "mtlo.target": ""}


def cfg(name: str, url: str, warm: str | None = None) -> Config:
    return Config(name=name, tasks={"rt": {"source": "builtin:rt_polarity"}},
                  search={"storage": url, "warm_start": warm})


def earlier(url: str, name: str = "first", n: int = 6, ident: dict | None = None) -> optuna.Study:
    s = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for k, v in (ident or IDENT).items():
        s.set_user_attr(k, v)
    for _ in range(n):
        t = s.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
                   "sharing": optuna.distributions.CategoricalDistribution(["hard", "soft"])})
        s.tell(t, t.params["lr"] * 10 + (0.1 if t.params["sharing"] == "hard" else 0.0))
    s.enqueue_trial({"lr": 1e-3, "sharing": "hard"})  # one left RUNNING: not a finished trial
    s.ask()
    return s


def test_a_new_search_needs_a_free_study_name_and_no_file_is_made_for_a_bad_warm_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(ConfigError, match=r"^search.warm_start: no study named 'first' in sqlite:///.*"
                                          r"\(studies: none\)$"):
        study.check(cfg("second", url, warm="first"), url, resume=False, ident=IDENT)
    assert not (tmp_path / "optuna.db").exists()  # a refused search leaves no file behind
    earlier(url)
    with pytest.raises(ConfigError, match="already holds an Optuna study named 'first': use --resume"):
        study.check(cfg("first", url), url, resume=False, ident=IDENT)
    assert study.check(cfg("first", url), url, resume=True, ident=IDENT) == []


def test_a_warm_start_takes_the_finished_trials_of_a_study_of_the_same_space_and_objective(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    earlier(url)
    warm = study.check(cfg("second", url, warm="first"), url, resume=False, ident=IDENT)
    assert len(warm) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in warm)
    new = optuna.create_study(study_name="second", storage=url, direction="maximize")
    assert study.seed(new, IDENT, warm, "first") == 6
    assert [t.value for t in new.trials] == [t.value for t in warm] and new.user_attrs == IDENT
    assert {t.user_attrs["mtlo.warm_start_from"] for t in new.trials} == {f"first#{i}" for i in range(6)}
    assert study.seed(new, IDENT, warm, "first") == 0  # a resumed study has them already
    for key, other in (("mtlo.space", "xyz"), ("mtlo.objective", "mean_delta")):
        with pytest.raises(ConfigError, match=rf"^search.warm_start: study 'first' searched a different "
                                              rf"{key.removeprefix('mtlo.')}; its values do not carry over"):
            study.check(cfg("third", url, warm="first"), url, resume=False, ident={**IDENT, key: other})


def test_parameter_importance_once_enough_trials_finished(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    earlier(url, "few", n=study.MIN_FOR_IMPORTANCE - 1)
    assert study.importance(optuna.storages.RDBStorage(url), "few") == {}
    earlier(url, "many", n=20)
    imp = study.importance(optuna.storages.RDBStorage(url), "many")
    assert set(imp) == {"lr", "sharing"} and sum(imp.values()) == pytest.approx(1.0)


def test_a_bad_storage_url_is_one_line():
    with pytest.raises(ConfigError, match=r"^search.storage: cannot open the Optuna storage nosuch://x: "):
        study.open_storage("nosuch://x")
