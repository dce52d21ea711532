"""``mtlo search``: Ray Tune runs the trials, Optuna proposes them, MLflow records them."""
