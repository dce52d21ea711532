"""Where a search or study runs: its folder, Ray (local on loopback, or a cluster) and its
parent run, opened once by :func:`open_parent` for ``mtlo search`` and ``mtlo transfer``. The
parent run lives in a store this module is handed (a :class:`ParentStore`: MLflow's is
``store/tracking.py``'s ``MlflowParents``); runtime never imports the store.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.config import Config
from orchestrator.errors import ConfigError
from orchestrator.runtime import faults, lock
from trainables.errors import first_line


def ray_init(address: str | None) -> bool:
    """Start a new local Ray on this machine (never another user's running one), or connect to
    ``address``. Loopback only where the CLI set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    before Ray was imported (``runtime/address.py``). False: Ray was up in this process already
    (its caller's, left running)."""
    import ray

    # Ray Tune's settings, read by the driver as the search runs (also when Ray was started
    # before, in this process)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress lines, not Ray's tables
    # a result without the objective (a diverged trial's last one) is allowed: the searcher
    # records it as pruned, ASHA ignores it
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # save the experiment state (what --resume restores) at least every 2 s, not Ray's
    # adaptive period: after a kill, fewer finished epochs are recomputed
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "ERROR", "configure_logging": True}
    if not address:  # a new local Ray: its node on loopback (with the switch the CLI sets, its servers too)
        kwargs["_node_ip_address"] = "127.0.0.1"
        ray.init(address="local", **kwargs)
        return True
    from orchestrator.runtime.address import node_ip

    node = None if address.startswith("ray://") else node_ip(address)
    if node is not None:  # a driver on a node of the cluster joins as that node
        kwargs["_node_ip_address"] = node
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # something answers there, but not a Ray cluster this driver may join
        raise ConfigError(f"ray address {address}: Ray could not join the cluster there: "
                          f"{type(exc).__name__}: {first_line(exc)}") from exc
    return True


def check_resources(cfg: Config) -> None:
    """Refuse, before any trial, a trial's resource request that no node of the Ray cluster can
    grant (Ray would wait for it forever): CPUs or a GPU share beyond the largest node's."""
    import ray

    res = cfg.resources
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpus = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
    gpus = max((float(n.get("GPU", 0)) for n in nodes), default=0.0)
    where = "this machine's Ray" if len(nodes) <= 1 else f"the largest of the cluster's {len(nodes)} nodes"
    if res.cpus_per_trial > cpus:
        raise ConfigError(f"resources.cpus_per_trial: {res.cpus_per_trial:g} CPUs a trial, but {where} has "
                          f"{cpus:g}: no trial could start")
    if res.gpus_per_trial > gpus:
        raise ConfigError(f"resources.gpus_per_trial: {res.gpus_per_trial:g} GPU a trial, but {where} has "
                          f"{gpus:g}: no trial could start")


def check_cluster(cfg: Config, storage: Path) -> None:
    """Refuse, before any trial starts, a setup whose trials cannot all reach their storage.

    Metrics and artifacts go to MLflow from the driver only, so any tracking store works;
    but trials write checkpoints to Ray's storage folder, which on a cluster of several
    nodes must be one every node mounts at the same path (the driver's ./ray_results is
    not). A marker file written here must be visible from every node.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    if cfg.ray.storage is None:
        raise ConfigError(
            f"ray.storage: the Ray cluster has {len(nodes)} nodes, but trial checkpoints would go to {storage}, "
            "a folder on the driver's machine that worker nodes cannot reach; set ray.storage to a folder "
            "every node mounts at the same path (NFS)")
    storage.mkdir(parents=True, exist_ok=True)
    marker = storage / f".mtlo-probe-{uuid.uuid4().hex}"
    marker.write_text("mtlo")

    @ray.remote(num_cpus=0)
    def visible(path: str) -> bool:
        return Path(path).is_file()

    try:
        probes = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: visible.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        blind = [name for name, ref in probes.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ConfigError(f"ray.storage: {storage} is not visible from node(s) {', '.join(blind)}; "
                          "set it to a folder every node mounts at the same path (NFS)")


class ParentStore(Protocol):
    """Where a search's or study's parent run lives (MLflow: ``store.tracking.MlflowParents``)."""

    def check(self) -> None:
        """Raise ConfigError for a store that cannot be used (before Ray starts)."""

    def warm(self) -> None:
        """Open the store ahead of :meth:`open`, writing nothing (MLflow: its client and
        database schema, seconds of work), on a thread while Ray starts."""

    def open(self, parent_id: str | None) -> tuple[Any, str, str]:
        """(client, experiment id, parent run id): continue ``parent_id``, or create a parent run."""
        ...


@dataclass
class Parent:
    """Where a search or study keeps its files, and its MLflow parent run."""

    client: Any
    experiment_id: str
    run_id: str
    exp_dir: Path
    storage: Path
    new: bool  # False: a resumed run
    owns_ray: bool = False  # Ray was started (or joined) for this search or study

    @contextmanager
    def ray_stopping(self) -> Iterator[None]:
        """Stop the Ray this search started (a local one: its processes take a second or more to
        exit; a cluster: this driver leaves it) on a thread while the block writes the results;
        wait for it at the block's end. For once no more trials will run."""
        if not self.owns_ray:
            yield
            return
        import ray

        thread = threading.Thread(target=ray.shutdown, name="mtlo-ray-stop", daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join()


def check_owned(folder: Path) -> None:
    """``--resume`` unpickles the search state Ray Tune and Optuna saved in ``folder`` (on a
    cluster, a shared folder): refuse one that another user owns or may write to, whose files
    could have been replaced (unpickling runs code)."""
    st = folder.stat()
    if st.st_uid != os.getuid():
        raise ConfigError(f"--resume: {folder} belongs to another user (uid {st.st_uid}); its saved state would be "
                          "unpickled: resume only what you wrote")
    if st.st_mode & 0o022:
        raise ConfigError(f"--resume: {folder} can be written by others (mode {oct(st.st_mode & 0o777)}); its "
                          f"saved state would be unpickled: check its files, then chmod go-w {folder}")


def open_parent(cfg: Config, config_path: Path, *, what: str, state_file: str, resume: bool,
                address: str | None, store: ParentStore, state: dict[str, Any] | None = None) -> Parent:
    """Check the name against earlier runs, start Ray, check the cluster, then continue the
    parent run of an interrupted ``what`` (``--resume``) or create it in ``store`` (with a
    state file that a later ``--resume`` reads)."""
    faults.from_env()  # test-only MTLO_FAULT: a malformed one stops here, before Ray
    storage = Path(cfg.ray.storage or "ray_results").expanduser().resolve()
    exp_dir = storage / cfg.name
    state_path = exp_dir / state_file
    if resume and not state_path.is_file():
        raise ConfigError(f"--resume: no interrupted {what} named '{cfg.name}' under {storage}")
    if resume:
        check_owned(exp_dir)
    if cfg.train.device == "cuda" and cfg.resources.gpus_per_trial == 0:
        raise ConfigError("train.device: cuda, but resources.gpus_per_trial is 0: a trial sees no GPU "
                          "without a GPU share")
    store.check()

    def fresh() -> None:
        if not resume and exp_dir.exists():
            raise ConfigError(f"{what} '{cfg.name}' already exists under {storage}: use --resume to continue it, "
                              "or give it another name (--set name=...)")

    fresh()
    lock.acquire(cfg, what)  # one driver per search or study (runtime/lock.py)
    fresh()  # again, locked: a fresh start that raced another one
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtlo-store") as pool:
        warming = pool.submit(store.warm)  # the store opens while Ray starts: each takes seconds
        owns_ray = ray_init(address or cfg.ray.address)
        warming.result()
    check_resources(cfg)
    check_cluster(cfg, storage)
    if resume:
        client, experiment_id, parent_id = store.open(json.loads(state_path.read_text())["parent_run_id"])
        return Parent(client, experiment_id, parent_id, exp_dir, storage, new=False, owns_ray=owns_ray)
    client, experiment_id, parent_id = store.open(None)
    exp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    exp_dir.chmod(0o700)  # --resume unpickles what Ray and Optuna save here: this user's alone
    state_path.write_text(json.dumps({"parent_run_id": parent_id, "experiment_id": experiment_id,
                                      "config": str(config_path.resolve()), **(state or {})}))
    return Parent(client, experiment_id, parent_id, exp_dir, storage, new=True, owns_ray=owns_ray)
