"""Declarative search spaces (YAML) and the one pure translator to an Optuna define-by-run space."""

from search_spaces.space import (
    Param,
    RunKey,
    SearchSpace,
    SpaceError,
    Subset,
    apply_params,
    define_by_run,
    load_space,
    parse_space,
)

__all__ = ["Param", "RunKey", "SearchSpace", "SpaceError", "Subset", "apply_params", "define_by_run", "load_space",
           "parse_space"]
