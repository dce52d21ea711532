"""The user's YAML config, validated once at the edge (pydantic).

Every error is one line that names the file and the dotted field, e.g.
``examples/quickstart.yaml: train.lr: Input should be greater than 0 (got -1)``.
Option defaults live in :mod:`trainables.spec`; this module adds the driver sections
(search, resources, ray, mlflow) and resolves relative file paths against the config's
folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Interval
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import ConfigError
from search_spaces.yamlfile import YamlProblem, read_yaml
from trainables.data.kinds import SOURCES
from trainables.spec import EncoderSpec, TaskSpec, TrainSpec

_TASK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchConfig(_Strict):
    space: str = "search_spaces/default.yaml"
    num_samples: Annotated[int, Ge(1)] = 24
    objective: str = "mean_delta"  # a name in search/objectives.py's registry (checked as a search starts)
    target: str | None = None
    scheduler: Literal["asha", "fifo"] = "asha"
    max_concurrent: Annotated[int, Ge(1)] | None = None
    max_failures: Annotated[int, Ge(0)] = 1
    time_budget: Annotated[float, Gt(0)] | None = None  # seconds: the search ends cleanly once past it
    trial_timeout: Annotated[float, Gt(0)] | None = None  # seconds: a trial past it is stopped, FAILED
    storage: str = Field(default="sqlite:///optuna.db", min_length=1)  # the Optuna study's RDB URL
    warm_start: str | None = Field(default=None, min_length=1)  # seed with this earlier study's finished trials


class ResourcesConfig(_Strict):
    cpus_per_trial: Annotated[float, Ge(0)] = 1
    gpus_per_trial: Annotated[float, Interval(ge=0)] = 0


class RayConfig(_Strict):
    address: str | None = None
    # where Ray Tune keeps trial checkpoints and experiment state; on a multi-node cluster a
    # folder every node mounts at the same path (NFS); default ./ray_results
    storage: str | None = None


class MlflowConfig(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None  # default: the config's name
    retry_every_s: Annotated[float, Gt(0)] = 10.0  # while the store does not answer: how often to try it again


class ModelConfig(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    keep: Annotated[int, Ge(1)] = 1  # a search keeps the weights of its top `keep` trials while it runs
    # the MLflow registered model's name (YAML key `register`; BaseModel owns the attribute name)
    register_as: str | None = Field(default=None, min_length=1, alias="register")
    log: bool = True  # log the best model (search) or the trained model (train) as an MLflow model


class Config(_Strict):
    name: str = Field(min_length=1)
    encoder: EncoderSpec = EncoderSpec()
    tasks: dict[str, TaskSpec] = Field(min_length=1)
    train: TrainSpec = TrainSpec()
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()
    model: ModelConfig = ModelConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:  # it names folders (ray_results/NAME, reports/NAME)
        if not _TASK_NAME.match(name) or name.strip(".") == "":
            raise ValueError(f"may use only letters, digits, '_', '-', '.' (it names folders), got {name!r}")
        return name

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
        for name in tasks:
            if not _TASK_NAME.match(name):
                raise ValueError(f"task name {name!r} may use only letters, digits, '_', '-', '.'")
        return tasks

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        unknown = sorted(set(self.train.task_weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"train.task_weights names unknown task(s) {unknown} "
                             f"(tasks: {', '.join(self.tasks)})")
        from trainables.weighting import check_weighting_options

        check_weighting_options(self.train.weighting_options)  # InputError: a ValueError, one line
        if self.search.target is not None and self.search.target not in self.tasks:
            raise ValueError(f"search.target '{self.search.target}' is not a task "
                             f"(tasks: {', '.join(self.tasks)})")
        return self

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment or self.name

    @property
    def registered_model(self) -> str:
        return self.model.register_as or self.name

    def run_dict(self) -> dict[str, Any]:
        """The trial function's config: encoder, tasks, train (plain data)."""
        dumped = self.model_dump(mode="json")
        return {k: dumped[k] for k in ("encoder", "tasks", "train")}


def parse_set(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not YAML: take it as a string
    return key.strip().split("."), value


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    for item in sets:
        path, value = parse_set(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{'.'.join(path[: i + 1])}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def _format(err: Any) -> tuple[str, str]:
    """(dotted location, what is wrong) of one pydantic error."""
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind in _UNKNOWN:
        return loc, "unknown key"
    if kind == "missing":
        return loc, "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return loc, f"{msg}{shown}"


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    beside = base / p
    return str(beside if beside.exists() or not p.exists() else p.resolve())


def _resolve_paths(cfg: Config, base: Path) -> Config:
    tasks = {}
    for name, t in cfg.tasks.items():
        kind, _, loc = t.source.partition(":")
        updates: dict[str, Any] = {}
        if kind in SOURCES and loc:
            updates["source"] = f"{kind}:{SOURCES[kind].resolve(loc, lambda p: _resolve(p, base), base)}"
        if t.test is not None:
            updates["test"] = _resolve(t.test, base)
        if t.data_files is not None:
            df = t.data_files
            if isinstance(df, str):
                updates["data_files"] = _resolve(df, base)
            elif isinstance(df, list):
                updates["data_files"] = [_resolve(f, base) for f in df]
            else:
                updates["data_files"] = {k: _resolve(v, base) if isinstance(v, str)
                                         else [_resolve(f, base) for f in v] for k, v in df.items()}
        tasks[name] = TaskSpec(**{**t.__dict__, **updates}) if updates else t
    encoder = cfg.encoder
    if not encoder.model.startswith("builtin:") and encoder.model.startswith((".", "/", "~")):
        encoder = EncoderSpec(**{**encoder.__dict__, "model": _resolve(encoder.model, base)})
    mlflow_cfg = cfg.mlflow.model_copy(update={"tracking_uri": resolve_tracking_uri(cfg.mlflow.tracking_uri)})
    return cfg.model_copy(update={"tasks": tasks, "encoder": encoder, "mlflow": mlflow_cfg})


def resolve_tracking_uri(uri: str, base: Path | None = None) -> str:
    """A relative ``sqlite:///x.db`` made absolute (against ``base``, default the working
    directory), once: MLflow caches stores by URI, and Ray workers run elsewhere."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        db = Path(uri.removeprefix("sqlite:///")).expanduser()
        return f"sqlite:///{(base / db if base else db).resolve()}"
    return uri


def was_set(path: str | Path, sets: list[str], dotted: str) -> bool:
    """Whether the config file or a ``--set`` gives ``dotted`` (e.g. ``train.max_train_examples``)
    a value itself, rather than leaving it to its default."""
    if any(".".join(parse_set(s)[0]) == dotted for s in sets):
        return True
    node: Any = read_yaml(Path(path))
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def load_config(path: str | Path, sets: list[str] | None = None) -> Config:
    """Read, override (``--set``) and validate a config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = read_yaml(path)
    except YamlProblem as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (name, encoder, tasks, train, ...)")
    data = apply_sets(data, sets or [])
    try:
        cfg = Config(**data)
    except ValidationError as exc:
        # a typo'd key usually also makes a required one "missing": name the typo first
        first = sorted(exc.errors(), key=lambda e: e["type"] not in _UNKNOWN)[0]
        loc, problem = _format(first)
        set_keys = {".".join(parse_set(s)[0]) for s in sets or []}
        if loc in set_keys:
            raise ConfigError(f"--set {loc}: {problem}") from None
        raise ConfigError(f"{path}: {loc}: {problem}" if loc else f"{path}: {problem}") from None
    except TypeError as exc:  # a section that is not a mapping, e.g. "train: 3"
        raise ConfigError(f"{path}: {exc}") from None
    return _resolve_paths(cfg, path.resolve().parent)
