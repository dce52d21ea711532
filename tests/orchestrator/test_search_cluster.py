"""A search on a two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): trials
land on both nodes and every trial reaches MLflow; a storage folder the workers cannot
share is refused before any trial starts."""

import json
import os

import pytest
import yaml

from orchestrator.config import ConfigError, load_config

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "cluster",
    "encoder": {"model": "builtin:tiny-random", "max_length": 32},
    "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"}},
    "train": {"epochs": 2, "batch_size": 16, "max_train_examples": 48, "max_eval_examples": 32, "lr": 1e-3},
    "search": {"space": "weights", "num_samples": 4, "objective": "mean_score", "scheduler": "fifo"},
    "resources": {"cpus_per_trial": 1},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "cluster"},
}


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes(timeout=120)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_run_on_both_nodes_and_all_reach_mlflow(two_nodes, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from orchestrator.search.runner import run_search

    monkeypatch.chdir(tmp_path)
    data = json.loads(json.dumps(CONFIG))
    data["ray"] = {"storage": str(tmp_path / "shared")}  # one machine: every node sees this folder
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    out = run_search(load_config(tmp_path / "c.yaml"), tmp_path / "c.yaml", address=two_nodes.address)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = [client.get_run(t["run_id"]) for t in out.trials]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["mtlo.node_id"] for r in children}) == 2  # both nodes ran trials
    for r in children:
        assert len(client.get_metric_history(r.info.run_id, "val/vader/pearson")) == 2
        assert {a.path for a in client.list_artifacts(r.info.run_id)} == {"trial_config.yaml", "final_metrics.json"}


def test_driver_local_storage_is_refused_on_a_multi_node_cluster(two_nodes, tmp_path, monkeypatch):
    from orchestrator.search.runner import run_search

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**CONFIG, "name": "refused"}))
    with pytest.raises(ConfigError, match="ray.storage: the Ray cluster has 2 nodes"):
        run_search(load_config(tmp_path / "c.yaml"), tmp_path / "c.yaml", address=two_nodes.address)
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was recorded
