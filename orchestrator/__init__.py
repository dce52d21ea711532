"""Driver side of mtl-orchestrator: config, CLI, MLflow tracking (search, transfer and reports to come)."""
