import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (none is reachable here)
# before anything imports Ray (which reads it once): the tests' own local Rays listen on loopback,
# as mtlo's do (orchestrator/runtime/address.py), whatever the environment says
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Ray starts its workers at niceness 15: beside the other test worker's training (niceness 0) a
# trial then gets a few percent of a core, and a test with a trial timeout or a deadline waits on
# the other test, not on its trial. The tests' Rays (and the commands' own) run their trials at 0
os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray reads this exact, lower-case name)


# fixtures that start a real service (Ray, a search on it, PostgreSQL, an MLflow server): a test
# that uses one is end to end, marked slow wherever it is (make test-fast leaves it out)
SERVICE_FIXTURES = {"ray_local", "searched", "postgres", "mlflow_on_postgres", "server", "cluster", "loopback_head"}


# ``make test``'s two workers take a file at a time (``--dist loadfile``) in the order collected
# (``--no-loadscope-reorder``): the longest first, by durations.json (seconds per file, summed
# over its tests, from a run on a 2-core machine; a file not in it counts as 1 s), so that both
# workers end on short files, not one on a minute-long test while the other waits
DURATIONS: dict[str, float] = json.loads((Path(__file__).parent / "durations.json").read_text())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if getattr(config.option, "loadscopereorder", True) is False:  # make test (make test-fast: xdist orders)
        items.sort(key=lambda item: -DURATIONS.get(item.nodeid.split("::")[0], 1))  # stable: a file keeps its order


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # a fresh tokenization cache per test session: tests see the real build path first
    os.environ["MTLO_CACHE_DIR"] = str(tmp_path_factory.mktemp("mtlo-cache"))


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store with every table made, once per test process. MLflow builds
    a new store's tables through its migrations (1.3-1.7 CPU-s a store on this 2-core machine,
    against 0.05-0.07 s to open one that has them); a test whose subject is not the making of
    a store copies this one in (``mlflow_db``, ``copy_store``). A store made by a first run is
    still what ``mtlo train``'s tests (test_cli.py), the refused inputs and reports
    (test_bad_inputs.py), the PostgreSQL store and ``make demo`` start from."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("store-template")
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")).engine.dispose()
    return folder / "mlflow.db"


def copy_store(template: Path, folder: Path, name: str = "mlflow.db") -> Path:
    """``folder``/``name``: a copy of the ``store_template`` (``sqlite:///mlflow.db`` there; an
    ``mlflow server``'s ``server.db``)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(template, folder / name))


@pytest.fixture
def mlflow_db(tmp_path: Path, store_template: Path) -> Path:
    """``tmp_path``/mlflow.db, an empty MLflow store with its tables (``store_template``)."""
    return copy_store(store_template, tmp_path)


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's start or connect (``session.ray_init``) made a tripwire: a command run in this
    process that gets as far as asking Ray fails the test (a refusal must come before it)."""
    from orchestrator.runtime import session

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was asked to start or connect")

    monkeypatch.setattr(session, "ray_init", tripwire)


def run_mtlo(workdir: Path, *args: str, fault: str | None = None, timeout: int = 600,
             sockets: set | None = None, ray: str | None = None) -> subprocess.CompletedProcess:
    """``mtlo ARGS`` in its own process group, ``MTLO_FAULT=fault`` (a driver fault kills the
    group, as ``kill -9`` would); Ray's processes left behind are killed with the group.
    ``sockets``: filled with the listening sockets of the command's process tree, every 0.3 s.
    ``ray``: the address of a running Ray (``ray_local``) the command joins with ``--address``."""
    args = (*args, "--address", ray) if ray else args
    env = {k: v for k, v in os.environ.items() if k != "MTLO_FAULT"}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AIR_NEW_OUTPUT": "0"})
    if fault:
        env["MTLO_FAULT"] = fault
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # no pipe to fill up
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=workdir, env=env,
                                stdout=out, stderr=err, text=True, start_new_session=True)
        try:
            if sockets is not None:
                from tests.services import listening

                root, deadline = psutil.Process(proc.pid), time.time() + timeout
                while proc.poll() is None and time.time() < deadline:
                    sockets |= listening(root)
                    time.sleep(0.3)
            proc.wait(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):  # Ray's processes share the killed driver's fate
                os.killpg(proc.pid, signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def mtlo_main(*args: str, cwd: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``mtlo ARGS`` in this process: (exit code, stdout, stderr). For arguments that are
    refused before anything starts; a real process costs seconds of imports per case."""
    from orchestrator import cli

    capsys.readouterr()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            rc = cli.main(list(args))
        except SystemExit as exc:  # argparse's own errors
            rc = int(exc.code or 0)
    finally:
        os.chdir(old)
    out = capsys.readouterr()
    return rc, out.out, out.err


TINY_TOKENS = 16  # the tests' inputs: their training is matrix products that grow with the tokens


def tiny_encoder(max_length: int = TINY_TOKENS) -> dict:
    return {"model": "builtin:tiny-random", "max_length": max_length}


def tiny_config(**train: object) -> dict:
    """Three built-in tasks of the three types, small slices, the tiny random encoder."""
    return {
        "encoder": tiny_encoder(),
        "tasks": {
            "rt": {"source": "builtin:rt_polarity"},
            "vader": {"source": "builtin:vader_movies"},
            "ner": {"source": "builtin:wnut_ner"},
        },
        "train": {"epochs": 2, "batch_size": 16, "max_train_examples": 64, "max_eval_examples": 48,
                  "lr": 1e-3, "num_threads": 1, **train},
    }


BUILTIN = {"rt": "rt_polarity", "vader": "vader_movies", "ner": "wnut_ner", "sms": "sms_spam"}


def named_config(name: str, tasks: tuple[str, ...] = ("rt", "vader"), *, max_length: int = TINY_TOKENS,
                 train: dict | None = None, **sections: object) -> dict:
    """The end-to-end tests' config: built-in ``tasks`` in small slices (48 training and 32
    evaluation examples each), the tiny random encoder, 2 epochs, an MLflow sqlite store in the
    working folder with an experiment named ``name``; ``train`` and ``sections`` on top."""
    return {
        "name": name,
        "encoder": tiny_encoder(max_length),
        "tasks": {t: {"source": f"builtin:{BUILTIN[t]}"} for t in tasks},
        "train": {"epochs": 2, "batch_size": 16, "max_train_examples": 48, "max_eval_examples": 32, "lr": 1e-3,
                  **(train or {})},
        "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": name},
        **sections,
    }


# a transfer study's tests: three tasks, one run at a time (each study stage starts its trial
# workers anew, seconds of CPU each)
STUDY = named_config("study", ("rt", "vader", "sms"), search={"max_concurrent": 1}, resources={"cpus_per_trial": 1})


def study_file(tmp_path: Path, **over: object) -> Path:
    """``STUDY`` with ``over``'s sections on top, written to ``tmp_path``/c.yaml."""
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**json.loads(json.dumps(STUDY)), **over}))
    return path


def search_config(name: str, *, tracking_uri: str = "sqlite:///mlflow.db", examples: int = 96,
                  log_model: bool = False, **search: object) -> dict:
    """A small end-to-end ``mtlo search`` config: rt + vader, the tiny encoder, 3 epochs, FIFO,
    ``search`` on top of 3 trials one at a time (the fault, resume and outage tests). The best
    trial's model is logged and registered only where ``log_model`` (a test that reads it): the
    driver otherwise imports the model's code and rebuilds it, seconds of CPU a search."""
    return {
        "name": name,
        "encoder": tiny_encoder(),
        "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"}},
        "train": {"epochs": 3, "batch_size": 16, "max_train_examples": examples, "max_eval_examples": 32,
                  "lr": 1e-3},
        "search": {"space": "weights", "num_samples": 3, "objective": "mean_score", "max_concurrent": 1,
                   "scheduler": "fifo", **search},
        "mlflow": {"tracking_uri": tracking_uri, "experiment": name},
        "model": {"log": log_model},
    }


@pytest.fixture(scope="session")
def ray_local() -> Iterator[str]:
    """A local Ray on loopback, started once per test process (an xdist worker) and shared by
    every in-process search and study it runs, and by the ``mtlo search``/``transfer``
    processes given its address (``--address``, the value of this fixture): each would
    otherwise start and stop a Ray of its own (seconds of CPU on a 2-core machine)."""
    import ray

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    from tests.services import is_loopback, listening

    seen = listening(psutil.Process())  # this process and Ray's servers, its children
    assert seen and all(is_loopback(host) for host, _, _ in seen), f"the fixture's Ray listens beyond loopback: {seen}"
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny() -> dict:
    return tiny_config()


REPO = Path(__file__).resolve().parent.parent
