"""Adding a plug-in is one class and one registration, with no other file touched: a toy
weighting, schedule, sharing mode, objective, grouping method (with its own estimator) and
data-source kind, each defined here, pass config validation, appear among the valid names and
do their work end to end (the tiny encoder trains with them; the study's analysis uses the
toy estimator; the toy source's data is read, split and tokenized)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.config import load_config
from orchestrator.domain import Run
from orchestrator.search.objectives import OBJECTIVES, Objective, make_objective
from orchestrator.transfer.methods import METHODS, Method, method
from orchestrator.transfer.predict import step_shares
from orchestrator.transfer.results import analyse
from orchestrator.transfer.study import Study
from tests.conftest import tiny_config
from trainables import train
from trainables.data.kinds import SOURCES, SourceKind
from trainables.data.raw import RawSplit, RawTask
from trainables.schedules import SCHEDULES, Schedule
from trainables.sharing import SHARING, Hard
from trainables.weighting import WEIGHTING, Static, Weighting


class Halves(Static):
    """Every task's loss at half its static weight."""

    name = "halves"

    def backward(self, losses, model):  # type: ignore[no-untyped-def]
        w = {t: 0.5 * self.static[t] for t in losses}
        self._weighted_backward(losses, w)
        return w


class Backwards(Schedule):
    """One task a step, the last task first."""

    name = "backwards"
    reads = ("temperature",)  # a search sees train.temperature matter under this schedule too

    def plan(self, batches, rng, *, temperature):  # type: ignore[no-untyped-def]
        tasks = list(batches)[::-1]
        return [[tasks[i % len(tasks)]] for i in range(sum(batches.values()))]

    def shares(self, batches, group, *, temperature):  # type: ignore[no-untyped-def]
        return {t: 0.25 for t in group}


class HardAgain(Hard):
    name = "hard_again"


class Worst(Objective):
    """The worst task's signed main metric."""

    name = "worst"

    def compute(self, row, trial_tasks):  # type: ignore[no-untyped-def]
        return {"objective": min(self.signed(t, row) for t in trial_tasks)}


class Pessimist(Method):
    """Every task alone and all together; any group never trained is estimated to lose 5%."""

    name = "pessimist"
    label = "pessimist (estimated)"
    source = "a fixed pessimism"

    def subsets(self, tasks):  # type: ignore[no-untyped-def]
        return [(t,) for t in tasks] + [tuple(sorted(tasks))]

    def estimate(self, study, runs, gains, matrix, affinity):  # type: ignore[no-untyped-def]
        return (lambda t, g: -0.05), {"constant": -0.05}


class Lines(SourceKind):
    """``lines:FILE``: one example a line, 'label<TAB>text'."""

    name = "lines"

    def read(self, location, spec, *, task):  # type: ignore[no-untyped-def]
        rows = [line.split("\t", 1) for line in Path(location).read_text().splitlines() if line.strip()]
        return RawTask("classification", RawSplit([t for _, t in rows], [lab for lab, _ in rows]), None, location)


@pytest.fixture
def plugins() -> Iterator[None]:
    registered = [(WEIGHTING, Halves), (SCHEDULES, Backwards()), (SHARING, HardAgain()), (OBJECTIVES, Worst),
                  (METHODS, Pessimist), (SOURCES, Lines())]
    for registry, plugin in registered:
        registry.register(plugin)
    yield
    for registry, plugin in registered:
        registry.unregister(plugin.name)


def test_a_toy_weighting_schedule_and_sharing_train_end_to_end(plugins, tmp_path):
    cfg = tiny_config(weighting="halves", schedule="backwards", sharing="hard_again", epochs=1)
    cfg = {"name": "toys", **cfg, "search": {"objective": "worst"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    checked = load_config(str(tmp_path / "c.yaml"), [])  # validated against the registries
    assert (checked.train.weighting, checked.train.schedule, checked.train.sharing) == \
        ("halves", "backwards", "hard_again")
    rows: list[dict] = []
    result = train(checked.run_dict(), rows.append)
    assert result.epochs == 1 and rows and all(v == v for v in result.metrics["rt"].values())
    assert rows[-1]["weight/rt"] == pytest.approx(0.5)  # the toy weighting's weights were used
    assert step_shares("backwards", {"a": 3, "b": 1}, ["a", "b"]) == {"a": 0.25, "b": 0.25}
    from search_spaces.space import RunKey, read_only_where

    assert read_only_where()["temperature"] == ("schedule", {"temperature", "backwards"})
    key = RunKey(checked.run_dict())
    assert key({"temperature": 1.0}) != key({"temperature": 3.0})  # read under the toy schedule
    assert key({"temperature": 1.0, "schedule": "joint"}) == key({"temperature": 3.0, "schedule": "joint"})


def test_unregistered_names_are_refused_and_registered_ones_listed(plugins, tmp_path):
    for key, value in (("weighting", "halves"), ("schedule", "backwards"), ("sharing", "hard_again")):
        bad = {"name": "x", **tiny_config(**{key: value + "_not"})}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(Exception, match=rf"train.{key}: unknown '{value}_not' \(valid: .*{value}"):
            load_config(str(tmp_path / "c.yaml"), [])
    from orchestrator import cli

    with pytest.raises(SystemExit):  # --method's choices come from the registry: the toy is one
        cli.parser().parse_args(["transfer", "c.yaml", "--method", "pessimist_not"])
    assert cli.parser().parse_args(["transfer", "c.yaml", "--method", "pessimist"]).method == "pessimist"


def test_a_toy_objective_scores_a_row(plugins):
    obj = make_objective("worst", ("a", "b"), {"a": "accuracy", "b": "mse"}, {"a": True, "b": False})
    assert obj.compute({"val/a/accuracy": 0.8, "val/b/mse": 0.3}, ["a", "b"]) == {"objective": -0.3}


def test_a_toy_grouping_method_estimates_what_it_did_not_train(plugins):
    tasks = ["a", "b", "c"]
    assert method("pessimist").subsets(tasks) == [("a",), ("b",), ("c",), ("a", "b", "c")]
    runs = [Run(g, s, {t: 1.0 + (0.1 if len(g) > 1 else 0.0) + 0.01 * s for t in g})
            for g in method("pessimist").subsets(tasks) for s in range(3)]
    study = Study("s", "p", tasks, {t: "acc" for t in tasks}, {t: True for t in tasks}, "pessimist", [0, 1, 2], 2)
    res = analyse(study, runs)
    assert res["proposed"] is not None and res["proposed"]["method"] == "pessimist (estimated)"
    assert res["estimate_source"] == "a fixed pessimism"
    estimated = {(tuple(g["group"]), g["task"]): g["delta"] for g in res["estimated_gains"]}
    assert estimated and set(estimated.values()) == {-0.05}  # the pairs, never trained: the toy's estimate
    assert ("a", "b", "c") in {tuple(g) for g in res["proposed"]["groups"]}  # the one group that gains


def test_a_toy_source_kind_is_read_split_and_tokenized(plugins, tmp_path):
    from trainables.data import load_task_data
    from trainables.encoder import load_tokenizer, tokenizer_id
    from trainables.spec import EncoderSpec, TaskSpec, TrainSpec

    data = tmp_path / "d.txt"
    data.write_text("".join(f"{'pos' if i % 2 else 'neg'}\tsentence number {i}\n" for i in range(40)))
    tok = load_tokenizer(EncoderSpec(model="builtin:tiny-random"))
    d = load_task_data("mine", TaskSpec(source=f"lines:{data}"), TrainSpec(), tok, tokenizer_id=tokenizer_id(tok),
                       max_length=16)
    assert len(d.train) + len(d.val) + len(d.test) == 40 and d.num_labels == 2
    assert isinstance(d.train.ids, torch.Tensor) and d.train.ids.numel() > 0
    cfg = {"name": "x", **tiny_config(), "tasks": {"mine": {"source": "lines:d.txt"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    # a relative file is resolved against the config's folder, as for the built-in file kinds
    assert load_config(str(tmp_path / "c.yaml"), []).tasks["mine"].source == f"lines:{data}"


def test_without_the_registration_the_toy_names_are_unknown():
    assert "halves" not in WEIGHTING and "pessimist" not in METHODS and "lines" not in SOURCES
    assert issubclass(Halves, Weighting)
