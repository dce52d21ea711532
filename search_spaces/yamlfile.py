"""Reading a YAML file a user wrote (a config, a search space): ``yaml.safe_load`` with every
problem as one sentence: not UTF-8, not valid YAML (with its line), or a key given twice in
one mapping (which plain YAML loading would silently resolve to the last one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlProblem(ValueError):
    """What is wrong with the file, as a sentence (the caller names the file)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise YamlProblem(f"duplicate key '{key}' (line {key_node.start_mark.line + 1}); "
                                  "give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise YamlProblem("not a UTF-8 text file") from None
    except IsADirectoryError:
        raise YamlProblem("is a folder, not a file") from None
    loader = _UniqueKeyLoader(text)  # a SafeLoader (what yaml.safe_load uses): no arbitrary objects
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(f"not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
