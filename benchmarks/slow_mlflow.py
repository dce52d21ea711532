"""A slow tracking server: does Ray Tune's loop wait for MLflow?

    .venv/bin/python -m benchmarks.slow_mlflow [--delay 2] [--trials 8] [--out benchmarks/results/slow_mlflow.json]

A real ``mlflow server`` (sqlite) on 127.0.0.1 behind a proxy on 127.0.0.1 that holds every
request ``--delay`` seconds before passing it on. One ``mtlo search`` per row (the tiny
encoder, rt + vader, 3 epochs, ``--trials`` trials all at once at 0.25 CPU each), with the
recorder's writer threads (``recorder.WRITERS``: 4, the default; 0: every write in Ray
Tune's own thread, as mtlo wrote before 2026-12-02), against the server with and without
the delay. Reported: the trials' phase (Ray Tune's loop, until the last trial ends), MLflow's
catch-up after it (queued writes, then gaps), the whole command, and the requests the
server saw. Every row also checks that MLflow holds every epoch of every trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowProxy:
    """127.0.0.1:PORT -> ``upstream``, each request held ``delay`` seconds first."""

    def __init__(self, upstream: str, delay: float) -> None:
        import requests

        self.requests = 0
        proxy = self
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.requests += 1
                time.sleep(delay)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                answer = session.request(self.command, upstream + self.path, data=body, headers=headers,
                                         timeout=120, allow_redirects=False)
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                             "--artifacts-destination", str(folder / "artifacts")], env=env, cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(360):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("mlflow server did not start")


def config(name: str, uri: str, trials: int) -> dict:
    return {"name": name, "encoder": {"model": "builtin:tiny-random", "max_length": 32},
            "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"}},
            "train": {"epochs": 3, "batch_size": 16, "max_train_examples": 64, "max_eval_examples": 32, "lr": 1e-3},
            "search": {"space": "weights", "num_samples": trials, "objective": "mean_score", "scheduler": "fifo",
                       "max_concurrent": trials},
            "resources": {"cpus_per_trial": 0.25}, "model": {"log": False},
            "mlflow": {"tracking_uri": uri, "experiment": name}}


def complete(uri: str, name: str, trials: int) -> bool:
    """MLflow holds epochs 1-3 of the objective of every trial, each once."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return False
    runs = client.search_runs([exp.experiment_id], "tags.`mtlo.role` = 'trial'")
    return len(runs) == trials and all(
        sorted(m.step for m in client.get_metric_history(r.info.run_id, "objective")) == [1, 2, 3] for r in runs)


# ``mtlo ARGS`` with the recorder's writer threads set to argv[1] (0: every write in Ray Tune's own
# thread, how mtlo wrote before): a benchmark's switch, not the product's
WITH_WRITERS = ("import sys; import orchestrator.store.recorder as r; r.WRITERS = int(sys.argv[1]); "
                "from orchestrator.cli import main; raise SystemExit(main(sys.argv[2:]))")


def one(delay: float, writers: int, trials: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mtlo-slow-"))
    server, upstream = start_server(work)
    proxy = SlowProxy(upstream, delay)
    name = f"slow-{writers}-{int(delay * 1000)}"
    try:
        (work / "c.yaml").write_text(yaml.safe_dump(config(name, proxy.uri, trials)))
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", WITH_WRITERS, str(writers), "search", "c.yaml", "--json"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        try:
            phases = json.loads(out.stdout)["phases"]
        except ValueError:
            raise RuntimeError(f"not JSON on stdout: {out.stdout[:500]!r}; stderr: {out.stderr[-2000:]}") from None
        row = {"delay_s": delay, "writers": writers, "trials": trials, "wall_s": round(wall, 1),
               "trials_phase_s": round(phases["trials"], 1), "mlflow_catch_up_s": round(phases["mlflow catch-up"], 1),
               "requests": proxy.requests, "complete": complete(upstream, name, trials)}
        print(json.dumps(row), flush=True)
        return row
    finally:
        proxy.close()
        os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "slow_mlflow.json"))
    args = ap.parse_args()
    rows = [one(delay, writers, args.trials) for delay in (0.0, args.delay) for writers in (4, 0)]
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
