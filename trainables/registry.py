"""One registry per kind of plug-in (a weighting, a schedule, a sharing mode, a data-source
kind; the driver's objectives and grouping methods use the same class): a plug-in is a class
with a ``name``, registered once with ``@REGISTRY.register``, and owns all of its behaviour.
Config validation, search spaces and CLI choices read the registry, so a new plug-in needs
no other edit. Adding one is one file (imported before the config is read) plus its test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from trainables.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind by name, in the order they were registered. ``field``: the config
    key (or flag) that names one, for the one-line error of an unknown name."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._items: dict[str, T] = {}

    def register(self, plugin: T) -> T:
        """Register ``plugin`` (a class or an instance with a ``name``); usable as a decorator."""
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.field} plug-in needs a non-empty 'name'")
        self._items[name] = plugin
        return plugin

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise InputError(f"{self.field}: unknown '{name}' (valid: {', '.join(self._items)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests that register a toy one)."""
        self._items.pop(name, None)

    def check(self, value: Any) -> Any:
        """A pydantic after-validator: the value names a registered plug-in."""
        if value not in self._items:
            raise ValueError(f"unknown '{value}' (valid: {', '.join(self._items)})")
        return value
