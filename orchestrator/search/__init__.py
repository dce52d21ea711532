"""``mtlo search``: what to try (objectives, the Optuna searcher) on the shared runtime."""
