"""The search-space language and its translation to Optuna (define-by-run)."""

from pathlib import Path

import optuna
import pytest
import yaml

from search_spaces import RunKey, SpaceError, apply_params, define_by_run, load_space, parse_space

TASKS = ["rt", "vader", "ner"]
SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"


def space_of(text: str, **kw):
    return parse_space(yaml.safe_load(text), source="s.yaml", tasks=TASKS, **kw)


def sample(space, n=60, base=None):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn = define_by_run(space, base or {"sharing": "hard", "weighting": "static"})
    study.optimize(lambda trial: (fn(trial), 0.0)[1], n_trials=n)
    return [t.params for t in study.trials]


def test_default_space_conditions_hold_in_every_trial():
    space = load_space("default", config_dir=Path("/nonexistent"), tasks=TASKS, base_train={})
    trials = sample(space, 150)
    for p in trials:
        assert ("soft_l2" in p) == (p["sharing"] == "soft")
        assert ("branch_layer" in p) == (p["sharing"] == "partial")
        weights = {k for k in p if k.startswith("task_weight.")}
        assert weights == ({f"task_weight.{t}" for t in TASKS} if p["weighting"] == "static" else set())
        assert 2e-5 <= p["lr"] <= 3e-4
        assert ("lora_rank" in p) == (p["sharing"] == "lora")
        options = {k.split(".")[1] for k in p if k.startswith("weighting_options.")}
        assert options == ({p["weighting"]} & {"gradnorm", "dwa", "famo", "cagrad"})
    assert {p["sharing"] for p in trials} == {"hard", "soft", "partial", "lora"}
    assert {k for p in trials for k in p if k.startswith("weighting_options.")} == {
        "weighting_options.gradnorm.alpha", "weighting_options.dwa.temperature", "weighting_options.famo.lr",
        "weighting_options.cagrad.c"}


def test_every_shipped_space_parses():
    shipped = sorted(SHIPPED.glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"default", "weights", "architecture"}, shipped  # the glob found them
    for path in shipped:
        space = load_space(str(path), config_dir=Path("."), tasks=TASKS, base_train={})
        assert space.names, path


def test_when_can_test_a_config_value_not_searched():
    space = space_of("soft_l2: {float: [0.001, 0.1], when: {sharing: soft}}")
    assert all("soft_l2" not in p for p in sample(space, 5, base={"sharing": "hard"}))
    assert all("soft_l2" in p for p in sample(space, 5, base={"sharing": "soft"}))


def test_subset_search_offers_every_allowed_group_once():
    space = space_of("tasks: {subset: all, min_size: 2}")
    assert sorted(space.subset.options()) == ["ner+rt", "ner+rt+vader", "ner+vader", "rt+vader"]
    target = space_of("tasks: {subset: [vader, ner], min_size: 1}", target="rt")
    assert sorted(target.subset.options()) == ["ner+rt", "ner+rt+vader", "rt", "rt+vader"]  # rt always kept


def test_apply_params_builds_the_trial_run_dict():
    run = {"encoder": {"model": "m"}, "tasks": {t: {"source": f"builtin:{t}"} for t in TASKS},
           "train": {"lr": 1e-4, "sharing": "hard", "task_weights": {}}}
    out = apply_params(run, {"lr": 3e-4, "sharing": "soft", "task_weight.rt": 2.0, "task_weight.ner": 0.5,
                             "tasks": "ner+rt"})
    assert out["train"]["lr"] == 3e-4 and list(out["tasks"]) == ["rt", "ner"]
    assert out["train"]["task_weights"] == {"rt": 2.0, "ner": 0.5}
    assert run["train"]["lr"] == 1e-4  # the config's dict is not modified
    single = apply_params(run, {"sharing": "soft", "tasks": "vader"})
    assert single["train"]["sharing"] == "hard"  # one task: sharing modes coincide


def test_a_weighting_option_key_sets_that_method_s_option_and_only_counts_under_it():
    run = {"encoder": {}, "tasks": {"rt": {}}, "train": {"weighting": "static",
                                                        "weighting_options": {"famo": {"lr": 0.05}}}}
    out = apply_params(run, {"weighting": "cagrad", "weighting_options.cagrad.c": 0.3})
    assert out["train"]["weighting_options"] == {"famo": {"lr": 0.05}, "cagrad": {"c": 0.3}}
    assert run["train"]["weighting_options"] == {"famo": {"lr": 0.05}}  # the config's dict is not edited
    key = RunKey(run)
    assert key({"weighting": "cagrad", "weighting_options.cagrad.c": 0.3}) != \
        key({"weighting": "cagrad", "weighting_options.cagrad.c": 0.4})
    assert key({"weighting": "static", "weighting_options.cagrad.c": 0.3}) == \
        key({"weighting": "static", "weighting_options.cagrad.c": 0.4})  # cagrad's c: inert under static


def test_run_key_is_equal_only_for_parameters_that_train_alike():
    run = {"encoder": {"model": "m"}, "tasks": {t: {"source": f"builtin:{t}"} for t in TASKS},
           "train": {"lr": 1e-4, "sharing": "hard", "soft_l2": 1e-3, "branch_layer": 3, "schedule": "joint",
                     "temperature": 2.0, "task_weights": {}}}
    key = RunKey(run)
    # one task: every sharing mode trains the same, and so does its soft_l2 / branch_layer
    assert len({key({"tasks": "rt", "sharing": m, "soft_l2": 0.1, "branch_layer": 1})
                for m in ("hard", "soft", "partial", "single")}) == 1
    # two tasks: the modes differ, soft_l2 matters under soft only, branch_layer under partial only
    two = {m: key({"tasks": "ner+rt", "sharing": m}) for m in ("hard", "soft", "partial")}
    assert len(set(two.values())) == 3
    assert key({"tasks": "ner+rt", "sharing": "hard", "soft_l2": 0.1}) == two["hard"]
    assert key({"tasks": "ner+rt", "sharing": "soft", "soft_l2": 0.1}) != two["soft"]
    assert key({"tasks": "ner+rt", "sharing": "soft", "branch_layer": 1}) == two["soft"]
    assert key({"tasks": "ner+rt", "sharing": "partial", "branch_layer": 1}) != two["partial"]
    # the weight of a task the subset leaves out; temperature under another schedule
    assert key({"tasks": "ner+rt", "task_weight.vader": 5.0}) == two["hard"]
    assert key({"tasks": "ner+rt", "task_weight.rt": 5.0}) != two["hard"]
    assert key({"tasks": "ner+rt", "temperature": 5.0}) == two["hard"]
    assert key({"tasks": "ner+rt", "schedule": "temperature", "temperature": 5.0}) != \
        key({"tasks": "ner+rt", "schedule": "temperature"})
    assert run["train"]["sharing"] == "hard" and "soft_l2" in run["train"]  # the config's dict is not modified


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lrr: {float: [1, 2]}", "lrr: unknown parameter"),
        ("lr: {float: [0.1, 0.01]}", "lr: low must be below high"),
        ("lr: {float: [0, 0.1], log: true}", "log scale needs low > 0"),
        ("lr: {float: [0.1]}", "float needs [low, high] numbers"),
        ("lr: {float: [1.0e-5, 1.0e-3], logg: true}", "unknown key(s) ['logg']"),
        ("lr: {float: [1.0e-5, 1.0e-3], choice: [1]}", "exactly one of"),
        ("sharing: {choice: [hard, medium]}", "value 'medium' is not a valid train.sharing"),
        ("val_fraction: {float: [0.5, 2.0]}", "value 2.0 is not a valid train.val_fraction"),
        ("branch_layer: {int: [1.5, 3]}", "int bounds must be integers"),
        ("soft_l2: {float: [0.1, 1], when: {sharingg: soft}}", "when refers to 'sharingg'"),
        ("task_weight: {float: [0.1, 10]}", "needs per_task: true"),
        ("lr: {float: [1.0e-5, 1.0e-3], per_task: true}", "per_task applies to task_weight only"),
        ("tasks: {subset: [rt, xyz]}", "unknown task(s) ['xyz']"),
        ("tasks: {subset: all, min_size: 4}", "no subset of 3 task(s)"),
        ("seed: {int: [0, 5]}", "seed: not searchable"),
        ("weighting_options.cagrad: {float: [0.1, 0.5]}", "is weighting_options.<method>.<option>"),
        ("weighting_options.cagard.c: {float: [0.1, 0.5]}", "no weighting 'cagard' (valid: static,"),
        ("lr: 0.001", "expected a mapping"),
        ("- a", "expected a mapping of parameter names"),
    ],
)
def test_malformed_spaces_name_file_and_key(text, message):
    with pytest.raises(SpaceError) as err:
        space_of(text)
    assert message in str(err.value) and str(err.value).startswith("s.yaml") and "\n" not in str(err.value)


def test_unknown_space_name_lists_shipped_ones():
    with pytest.raises(SpaceError, match="shipped: architecture, combinations, default, weighting, weights"):
        load_space("nope", config_dir=Path("."), tasks=TASKS, base_train={})
