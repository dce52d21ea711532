"""Data-source kinds (``tasks.<name>.source: KIND:LOCATION``): each one class registered in
:data:`SOURCES` that owns how its data is read, which files identify its content (the
tokenization cache's key) and how a relative location is resolved against the config's
folder. A new kind is one class registered with ``@SOURCES.register``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from trainables.data.raw import RawTask
from trainables.errors import InputError
from trainables.registry import Registry
from trainables.spec import TaskSpec

Resolve = Callable[[str], str]  # a path made absolute against the config's folder


class SourceKind:
    name: ClassVar[str]
    shape: ClassVar[str] = "FILE"  # what follows 'KIND:' (the error for a bad source shows it)

    def read(self, location: str, spec: TaskSpec, *, task: str) -> RawTask:
        raise NotImplementedError

    def files(self, location: str, spec: TaskSpec) -> list[str]:
        """The files whose size and modification time identify the data (cache key)."""
        return [location] + ([spec.test] if spec.test else [])

    def resolve(self, location: str, resolve: Resolve, base: Path) -> str:
        """``location`` as the data will be read, wherever mtlo runs (a file: absolute)."""
        return resolve(location)


class Builtin(SourceKind):
    name = "builtin"
    shape = "NAME"

    def read(self, location: str, spec: TaskSpec, *, task: str) -> RawTask:
        from trainables.data.builtin import builtin_task

        raw = builtin_task(location, task=task).load(task=task)
        if spec.type is not None and spec.type != raw.type:
            raise InputError(f"task '{task}': tasks.{task}.type: builtin:{location} is {raw.type}, not {spec.type}")
        return raw

    def files(self, location: str, spec: TaskSpec) -> list[str]:
        from trainables.data.builtin import BUILTIN_TASKS

        bt = BUILTIN_TASKS.get(location)
        path = bt.path() if bt else None
        return [str(path)] if path else []

    def resolve(self, location: str, resolve: Resolve, base: Path) -> str:
        return location


class HuggingFace(SourceKind):
    name = "hf"
    shape = "PATH"

    def read(self, location: str, spec: TaskSpec, *, task: str) -> RawTask:
        from trainables.data.sources import read_hf

        return read_hf(location, spec, task=task)

    def files(self, location: str, spec: TaskSpec) -> list[str]:
        if spec.data_files is not None:
            df = spec.data_files
            vals = df.values() if isinstance(df, dict) else [df]
            return [f for v in vals for f in ([v] if isinstance(v, str) else v)]
        if Path(location).exists():
            return sorted(str(p) for p in Path(location).rglob("*") if p.is_file())
        return []

    def resolve(self, location: str, resolve: Resolve, base: Path) -> str:
        # a local dataset folder; a hub name stays a name
        return resolve(location) if location.startswith((".", "/", "~")) or (base / location).exists() else location


class LocalFile(SourceKind):
    """A local file read by ``trainables/data/sources.py`` (``read_local``)."""

    def read(self, location: str, spec: TaskSpec, *, task: str) -> RawTask:
        from trainables.data.sources import read_local

        return read_local(self.name, location, spec, task=task)


class Csv(LocalFile):
    name = "csv"


class Json(LocalFile):
    name = "json"


class Parquet(LocalFile):
    name = "parquet"


class Conll(LocalFile):
    name = "conll"


SOURCES: Registry[SourceKind] = Registry("source kind")
for _k in (Builtin(), HuggingFace(), Csv(), Json(), Parquet(), Conll()):
    SOURCES.register(_k)


def source_kind(source: str, *, task: str) -> tuple[SourceKind, str]:
    """The kind and location of ``source`` ('KIND:LOCATION'); one line naming the task for a
    malformed one or an unknown kind."""
    kind, sep, location = source.partition(":")
    if not sep or not location:
        shapes = ", ".join(f"'{k.name}:{k.shape}'" for k in SOURCES.values())
        raise InputError(f"task '{task}': tasks.{task}.source: expected one of {shapes}, got {source!r}")
    if kind not in SOURCES:
        raise InputError(f"task '{task}': tasks.{task}.source: unknown source kind '{kind}' "
                         f"(valid: {', '.join(SOURCES)})")
    return SOURCES[kind], location
