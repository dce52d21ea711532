"""The search-space language: YAML data -> a typed :class:`SearchSpace` -> Optuna define-by-run.

A key names a ``train`` field, ``task_weight`` (one parameter per task, into
``train.task_weights``) or ``tasks`` (the task-combination search)::

    lr:           {float: [1.0e-5, 5.0e-4], log: true}
    sharing:      {choice: [hard, soft, partial]}
    soft_l2:      {float: [1.0e-4, 1.0e-1], log: true, when: {sharing: soft}}
    branch_layer: {int: [1, 5], when: {sharing: partial}}
    task_weight:  {float: [0.1, 10.0], log: true, per_task: true, when: {weighting: static}}
    tasks:        {subset: all, min_size: 1}
    weighting_options.cagrad.c: {float: [0.1, 0.9], when: {weighting: cagrad}}

``weighting_options.<method>.<option>`` searches one option of one weighting (into
``train.weighting_options``). What the space does not name keeps the config's value. ``when`` compares with parameters
defined above it, or with the config's own value of a field the space does not search.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from search_spaces.yamlfile import YamlProblem, read_yaml
from trainables.errors import InputError
from trainables.schedules import SCHEDULES
from trainables.sharing import SHARING, Hard
from trainables.spec import TrainSpec
from trainables.weighting import WEIGHTING

PACKAGE_DIR = Path(__file__).resolve().parent
TRAIN_FIELDS = {f.name for f in fields(TrainSpec)}
TASKS_PARAM = "tasks"
OPTION_PREFIX = "weighting_options."  # weighting_options.<method>.<option>: one option of one weighting
SUBSET_SEP = "+"


class SpaceError(InputError):
    """A malformed search space: exit 2, naming the file and the key."""


@dataclass(frozen=True)
class Param:
    name: str  # a train field, or "task_weight.<task>" for per-task weights
    kind: str  # "float" | "int" | "choice"
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    step: float | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def active(self, values: dict[str, Any]) -> bool:
        return all(values.get(key) in allowed for key, allowed in self.when)


@dataclass(frozen=True)
class Subset:
    """Task-combination search: which of ``candidates`` train together (``always`` are kept)."""

    candidates: tuple[str, ...]
    min_size: int = 1
    max_size: int | None = None
    always: tuple[str, ...] = ()

    def options(self) -> list[str]:
        """Every allowed subset as a readable string, e.g. ``ner+rt`` (sorted names)."""
        free = [t for t in self.candidates if t not in self.always]
        hi = self.max_size or len(self.candidates)
        out = []
        for k in range(len(free) + 1):
            for combo in itertools.combinations(free, k):
                group = sorted((*self.always, *combo))
                if self.min_size <= len(group) <= hi:
                    out.append(SUBSET_SEP.join(group))
        return out


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    subset: Subset | None = None
    source: str = "<space>"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params] + ([TASKS_PARAM] if self.subset else [])


def _err(source: str, key: str, msg: str) -> SpaceError:
    return SpaceError(f"{source}: {key}: {msg}")


def _bounds(source: str, key: str, spec: dict[str, Any], kind: str) -> tuple[float, float]:
    pair = spec[kind]
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                              for v in pair)):
        raise _err(source, key, f"{kind} needs [low, high] numbers, got {pair!r}")
    low, high = pair
    if kind == "int" and not all(float(v).is_integer() for v in pair):
        raise _err(source, key, f"int bounds must be integers, got {pair!r}")
    if low >= high:
        raise _err(source, key, f"low must be below high, got [{low}, {high}]")
    if spec.get("log") and low <= 0:
        raise _err(source, key, f"log scale needs low > 0, got {low}")
    return low, high


_KEYS = {"float", "int", "choice", "log", "step", "when", "per_task"}


def _check_option_key(source: str, key: str) -> None:
    """``weighting_options.<method>.<option>`` names a weighting and one of its options."""
    parts = key.split(".")
    if len(parts) != 3:
        raise _err(source, key, f"a weighting option is {OPTION_PREFIX}<method>.<option>")
    if parts[1] not in WEIGHTING:
        raise _err(source, key, f"no weighting '{parts[1]}' (valid: {', '.join(WEIGHTING)})")
    if parts[2] not in WEIGHTING[parts[1]].OPTIONS:
        raise _err(source, key, f"{parts[1]} has no option '{parts[2]}' "
                                f"(its options: {', '.join(WEIGHTING[parts[1]].OPTIONS) or 'none'})")


def _check_values(source: str, key: str, field: str, values: list[Any], base_train: dict[str, Any], *,
                  option: bool = False) -> None:
    """Every value a parameter can take must make a valid TrainSpec (a weighting option: a valid
    value of that option)."""
    from pydantic import TypeAdapter, ValidationError

    if option:
        _, method, name = key.split(".")
        for v in values:
            try:
                WEIGHTING[method].options({name: v})
            except InputError as exc:
                raise _err(source, key, f"value {v!r}: {str(exc).split(': ', 1)[-1]}") from None
        return
    adapter = TypeAdapter(TrainSpec)
    for v in values:
        if field == "task_weights":
            probe = {**base_train, "task_weights": {"_": v}}
        else:
            probe = {**base_train, field: v}
        try:
            adapter.validate_python(probe)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise _err(source, key, f"value {v!r} is not a valid train.{field}: {msg}") from None


def parse_space(data: Any, *, source: str, tasks: list[str], base_train: dict[str, Any] | None = None,
                target: str | None = None) -> SearchSpace:
    """Validate a space (as loaded from YAML) against the config's tasks and train fields."""
    base_train = dict(base_train or {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping of parameter names to specs")
    params: list[Param] = []
    subset = None
    defined: set[str] = set()
    for key, spec in data.items():
        key = str(key)
        if not isinstance(spec, dict):
            raise _err(source, key, f"expected a mapping such as {{float: [low, high]}}, got {spec!r}")
        if key == TASKS_PARAM:
            subset = _parse_subset(source, spec, tasks, target)
            continue
        option = key.startswith(OPTION_PREFIX)
        if option:
            _check_option_key(source, key)
        elif key != "task_weight" and key not in TRAIN_FIELDS:
            raise _err(source, key, f"unknown parameter (valid: task_weight, tasks, {OPTION_PREFIX}<method>.<option>, "
                                    f"{', '.join(sorted(TRAIN_FIELDS))})")
        if key in ("task_weights", "seed"):
            raise _err(source, key, "not searchable" + (" (use task_weight with per_task: true)"
                                                        if key == "task_weights" else ""))
        unknown = set(spec) - _KEYS
        if unknown:
            raise _err(source, key, f"unknown key(s) {sorted(unknown)} (valid: {', '.join(sorted(_KEYS))})")
        kinds = [k for k in ("float", "int", "choice") if k in spec]
        if len(kinds) != 1:
            raise _err(source, key, "give exactly one of float: [low, high], int: [low, high], choice: [...]")
        kind = kinds[0]
        when = _parse_when(source, key, spec.get("when"), defined, base_train)
        field = "task_weights" if key == "task_weight" else key
        if kind == "choice":
            choices = spec["choice"]
            if not isinstance(choices, list) or not choices:
                raise _err(source, key, f"choice needs a non-empty list, got {choices!r}")
            _check_values(source, key, field, choices, base_train, option=option)
            made = [Param(key, "choice", choices=tuple(choices), when=when)]
        else:
            low, high = _bounds(source, key, spec, kind)
            step = spec.get("step")
            if step is not None and (not isinstance(step, (int, float)) or step <= 0 or spec.get("log")):
                raise _err(source, key, "step must be a positive number and cannot be combined with log")
            _check_values(source, key, field, [int(low), int(high)] if kind == "int" else [low, high], base_train,
                          option=option)
            made = [Param(key, kind, low=low, high=high, log=bool(spec.get("log")), step=step, when=when)]
        if spec.get("per_task"):
            if key != "task_weight":
                raise _err(source, key, "per_task applies to task_weight only")
            made = [Param(f"task_weight.{t}", m.kind, m.low, m.high, m.choices, m.log, m.step, m.when)
                    for m in made for t in tasks]
        elif key == "task_weight":
            raise _err(source, key, "task_weight needs per_task: true (one weight per task)")
        params.extend(made)
        defined.add(key)
    return SearchSpace(tuple(params), subset, source)


def _parse_when(source: str, key: str, when: Any, defined: set[str], base_train: dict[str, Any]
                ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise _err(source, key, f"when needs a mapping such as {{sharing: soft}}, got {when!r}")
    out = []
    for name, value in when.items():
        if name not in defined and name not in TRAIN_FIELDS:
            raise _err(source, key, f"when refers to '{name}', which is neither a parameter above nor a train field")
        out.append((str(name), tuple(value) if isinstance(value, list) else (value,)))
    return tuple(out)


def _parse_subset(source: str, spec: dict[str, Any], tasks: list[str], target: str | None) -> Subset:
    unknown = set(spec) - {"subset", "min_size", "max_size"}
    if unknown or "subset" not in spec:
        raise _err(source, TASKS_PARAM, "expected {subset: all | [task, ...], min_size: N, max_size: N}")
    cand = spec["subset"]
    if cand == "all":
        cand = list(tasks)
    if not isinstance(cand, list) or not cand:
        raise _err(source, TASKS_PARAM, f"subset must be 'all' or a list of tasks, got {cand!r}")
    missing = [t for t in cand if t not in tasks]
    if missing:
        raise _err(source, TASKS_PARAM, f"unknown task(s) {missing} (tasks: {', '.join(tasks)})")
    always = (target,) if target else ()
    if target and target not in cand:
        cand = [target, *cand]
    lo, hi = spec.get("min_size", 1), spec.get("max_size")
    if not isinstance(lo, int) or lo < 1 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
        raise _err(source, TASKS_PARAM, f"need 1 <= min_size <= max_size, got min_size={lo}, max_size={hi}")
    sub = Subset(tuple(cand), lo, hi, always)
    if not sub.options():
        raise _err(source, TASKS_PARAM, f"no subset of {len(cand)} task(s) has between {lo} and {hi} tasks")
    return sub


@dataclass(frozen=True)
class DefineByRun:
    """The Optuna define-by-run function of a space (a picklable callable: Ray ships it)."""

    space: SearchSpace
    base_train: dict[str, Any]

    def __call__(self, trial: Any) -> None:
        values: dict[str, Any] = dict(self.base_train)
        for p in self.space.params:
            key = p.name.split(".")[0]
            if not p.active(values):
                continue
            if p.kind == "choice":
                v = trial.suggest_categorical(p.name, list(p.choices))
            elif p.low is None or p.high is None:
                raise AssertionError(f"{p.name}: numeric parameter without bounds")
            elif p.kind == "int":
                v = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                v = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
            if key != "task_weight":
                values[key] = v
        if self.space.subset is not None:
            trial.suggest_categorical(TASKS_PARAM, self.space.subset.options())
        return None


def define_by_run(space: SearchSpace, base_train: dict[str, Any]) -> Callable[[Any], None]:
    """The Optuna define-by-run function for ``space`` (it only suggests; no computation).

    Conditional parameters are suggested only when their ``when`` holds, given the values
    suggested before them and, for fields the space does not search, the config's values.
    """
    return DefineByRun(space, dict(base_train))


def apply_params(run: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A trial's run dict: the config's run dict with the suggested parameters applied."""
    out = {"encoder": dict(run["encoder"]), "tasks": dict(run["tasks"]),
           "train": {**run["train"], "task_weights": dict(run["train"].get("task_weights") or {})}}
    for name, value in params.items():
        if name == TASKS_PARAM:
            keep = value.split(SUBSET_SEP) if isinstance(value, str) else list(value)
            unknown = set(keep) - set(run["tasks"])
            if unknown:
                raise SpaceError(f"tasks: unknown task(s) {sorted(unknown)} in subset {value!r}")
            out["tasks"] = {t: spec for t, spec in run["tasks"].items() if t in keep}  # config order
        elif name.startswith("task_weight."):
            out["train"]["task_weights"][name.split(".", 1)[1]] = value
        elif name.startswith(OPTION_PREFIX):
            _, method, option = name.split(".")
            options = {m: dict(o) for m, o in (out["train"].get("weighting_options") or {}).items()}
            options.setdefault(method, {})[option] = value
            out["train"]["weighting_options"] = options
        else:
            out["train"][name] = value
    out["train"]["task_weights"] = {t: w for t, w in out["train"]["task_weights"].items() if t in out["tasks"]}
    sharing = out["train"].get("sharing")
    if len(out["tasks"]) == 1 and isinstance(sharing, str) and sharing in SHARING and SHARING[sharing].one_task_is_hard:
        out["train"]["sharing"] = Hard.name  # one task: nothing to share, all modes coincide
    return out


def read_only_where() -> dict[str, tuple[str, set[str]]]:
    """Train fields that only some plug-ins read (each one's ``reads``): field -> (the train key
    that names the plug-in, the names that read it). Elsewhere two runs that differ in them
    train alike."""
    out: dict[str, tuple[str, set[str]]] = {}
    for key, registry in (("sharing", SHARING), ("schedule", SCHEDULES), ("weighting", WEIGHTING)):
        for name, plugin in registry.items():
            for field in getattr(plugin, "reads", ()):
                out.setdefault(field, (key, set()))[1].add(name)
    return out


@dataclass(frozen=True)
class RunKey:
    """What a trial with these parameters trains, as a string: equal for two parameter sets
    that train alike (a one-task subset under any sharing mode; ``soft_l2`` where sharing is
    not soft; the weight of a task the subset leaves out), so that the searcher does not train
    one configuration twice (orchestrator/search/searcher.py). Picklable: the searcher is saved
    with the search's state."""

    run: dict[str, Any]

    def __call__(self, params: dict[str, Any]) -> str:
        out = apply_params(self.run, params)
        train = out["train"]
        for name, (field, value) in read_only_where().items():
            if train.get(field) not in value:
                train.pop(name, None)
        # options of a weighting the run does not use change nothing
        train["weighting_options"] = {m: o for m, o in (train.get("weighting_options") or {}).items()
                                      if m == train.get("weighting")}
        return json.dumps(out, sort_keys=True, default=str)


def load_space(ref: str, *, config_dir: Path, tasks: list[str], base_train: dict[str, Any],
               target: str | None = None) -> SearchSpace:
    """A space by file path (relative to the config, then the working directory) or by the
    name of a shipped space (``default``, ``weights``, ``combinations``...)."""
    candidates = [Path(ref).expanduser()]
    if not Path(ref).is_absolute():
        candidates.insert(0, config_dir / ref)
    candidates.append(PACKAGE_DIR / (ref if ref.endswith(".yaml") else f"{ref}.yaml"))
    candidates.append(PACKAGE_DIR / Path(ref).name)
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        shipped = ", ".join(sorted(p.stem for p in PACKAGE_DIR.glob("*.yaml")))
        raise SpaceError(f"search.space: '{ref}' is neither a file nor a shipped space (shipped: {shipped})")
    try:
        data = read_yaml(path)
    except YamlProblem as exc:
        raise SpaceError(f"{path}: {exc}") from None
    return parse_space(data, source=str(path), tasks=tasks, base_train=base_train, target=target)
