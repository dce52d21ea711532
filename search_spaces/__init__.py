"""Declarative search spaces (YAML) and their one translator to Optuna; built with `mtlo search`."""
