"""What to record: one MLflow child run per Ray Tune trial, nested under the search's parent.

Runs on the driver (one writer: no sqlite locking; workers need no access to the store). Child
runs carry ``mlflow.parentRunId`` (the UI nests them) and ``mtlo.trial_id`` (resumed, continued).

Writes go through ``WRITERS`` writer threads, each trial's on one of them in the order of Ray
Tune's events: a slow tracking server never holds up the controller (nor the trials waiting
for it between epochs). What is still queued when the trials end is written before ``sync``.

MLflow may stop answering mid-search (a server restarted, a network cut): a failed write never
stops the search. Ray keeps every result on disk, the recorder stops writing until MLflow
answers a probe again, and :meth:`MlflowTrials.sync` (after the search, and on ``--resume``)
writes whatever MLflow lacks: child runs, metrics at their epochs (each point once), final
status and artifacts. Existing child runs are read once (each read loads all of them), and
again only after a failed write.
"""

from __future__ import annotations

import functools
import json
import queue
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from ray.tune import Callback

from orchestrator.display import err_console
from orchestrator.runtime.trial import TrialContext, ended_early, trial_error, trial_params, trial_run
from orchestrator.store import tracking
from orchestrator.store.datasets import log_datasets
from orchestrator.store.runs import closing_metrics
from orchestrator.store.tracking import as_outage, flatten, log_metrics, log_params, metric_row, set_tag, store_problem

ROW_KEY = "examples"  # in every epoch's row, which is written in one batch: its points are the rows written
_SKIP = {"epoch", "done", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
         "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint"}
# writer threads (a trial's writes in order on one); 0: in Ray Tune's thread (benchmarks/slow_mlflow.py)
WRITERS = 4
FINAL = ("FINISHED", "STOPPED", "FAILED", "DIVERGED")


def _tolerant(method: Any) -> Any:
    """An MLflow write that may fail without stopping the search (see the module doc)."""
    @functools.wraps(method)
    def wrapper(self: MlflowTrials, *args: Any, **kwargs: Any) -> Any:
        if not self.online():
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any store failure: go offline, Ray keeps the results
            self.went_offline(exc)
            return None
    return wrapper


class MlflowTrials(Callback):
    def __init__(self, tracking_uri: str, *, experiment_id: str, parent_run_id: str, ctx: TrialContext,
                 role: str, base_tags: dict[str, str], datasets: dict[str, Any] | None = None,
                 retry_every_s: float = 10.0) -> None:
        self.tracking_uri, self.retry_every_s = tracking_uri, retry_every_s  # retry: MLflow down, how often to probe
        self.datasets = datasets or {}  # task -> its MLflow dataset input (store/datasets.py)
        self._client: Any = None
        self.experiment_id = experiment_id
        self.parent = parent_run_id
        self.ctx = ctx
        self.role = role
        self.base_tags = base_tags
        self.runs: dict[str, str] = self._existing(self._children())
        self._stale = False  # MLflow may hold child runs self.runs lacks: read them at the next new trial
        self.results: dict[str, dict[str, Any]] = {}  # last result per trial id
        self.status: dict[str, str] = {}
        self.best: dict[str, dict[str, Any]] = {}  # the result with the best objective per trial id
        self.nodes: dict[str, str] = {}  # the node each trial's mtlo.node_id tag names
        self.retries: dict[str, int] = {}  # failures Ray recovered from, per trial id
        self.logged: dict[str, set[int]] = {}  # steps whose metrics were written, per trial id
        self.closed: set[str] = set()  # trial ids whose child run has its final status
        self.ended: dict[str, tuple[str, str | None]] = {}  # trial id -> final status and error, as Ray ended it
        self.seen: dict[str, Any] = {}  # trial id -> Ray's trial (its result.json: what MLflow missed)
        self.offline_since: float | None = None
        self.last_probe = 0.0
        self.sync_seconds = 0.0
        self.synced_points = 0  # metric points the end-of-search sync wrote (MLflow had missed them)
        # trial ids whose child run this process made: MLflow holds what it wrote (not kept across a resume)
        self._created: set[str] = set()
        self._checked: set[str] = set()  # older child runs whose logged steps were read once
        self._lock = threading.Lock()  # the writer threads share the online/offline state
        self._queues: list[queue.Queue] | None = None  # the writer threads' work, in the order of Ray's events

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def online(self) -> bool:
        with self._lock:
            if self.offline_since is None:
                return True
            if time.time() - self.last_probe < self.retry_every_s:
                return False
            self.last_probe = time.time()
            if store_problem(self.tracking_uri, timeout=2.0) is not None:
                return False
            err_console.print(f"MLflow answers again after {time.time() - self.offline_since:.0f}s: recording "
                              f"resumes, and what it missed of {len(self.seen)} trial(s) is written now")
            self.offline_since = None
        for trial in list(self.seen.values()):  # queued behind each trial's own writes
            self._submit(self._catch_up, trial)
        return True

    def went_offline(self, exc: Exception) -> None:
        with self._lock:
            if self.offline_since is None:
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                err_console.print(f"MLflow write failed ({type(exc).__name__}: {first}); the search goes on, Ray "
                                  "keeps every result, and they are written to MLflow when it answers again")
                self.offline_since = time.time()
            self.last_probe = time.time()
            self._stale = True  # a write that failed may have made a child run all the same

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the Tuner, before the search
        return {k: v for k, v in self.__dict__.items() if k != "_lock"} | {
            "_client": None, "_created": set(), "_checked": set(), "_queues": None, "seen": {}, "_stale": True}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- the writer thread -------------------------------------------------------------
    _writing: weakref.WeakSet[MlflowTrials] = weakref.WeakSet()  # recorders with a writer thread

    def _submit(self, write: Any, trial: Any, *args: Any, **kwargs: Any) -> None:
        """Queue a write of ``trial`` (a ``_tolerant`` method: it never raises) for its writer thread."""
        if WRITERS < 1:
            write(trial, *args, **kwargs)
            return
        if self._queues is None:
            MlflowTrials._writing.add(self)
            self._queues = [queue.Queue() for _ in range(WRITERS)]
            for i, work in enumerate(self._queues):
                threading.Thread(target=self._work, args=(work,), name=f"mtlo-mlflow-writer-{i}", daemon=True).start()
        self._queues[hash(trial.trial_id) % WRITERS].put((write, (trial, *args), kwargs))

    @staticmethod
    def _work(work: queue.Queue) -> None:
        while True:
            write, args, kwargs = work.get()
            try:
                write(*args, **kwargs)
            finally:
                work.task_done()

    def drain(self) -> None:
        """Wait until every queued write is done (or given up: MLflow did not answer), this
        recorder's and any other's: after ``--resume``, Ray Tune calls the copy it saved with
        the experiment, not the recorder the driver made."""
        for recorder in [self, *MlflowTrials._writing]:
            for work in recorder._queues or ():
                work.join()

    def _children(self) -> dict[str, Any]:  # this parent's child runs in MLflow, by trial id (resumed, reused)
        found = self.client.search_runs([self.experiment_id], max_results=50000,
                                        filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}'")
        return {r.data.tags["mtlo.trial_id"]: r for r in found if "mtlo.trial_id" in r.data.tags}

    def _existing(self, children: dict[str, Any]) -> dict[str, str]:  # the run ids of _children(), by trial id
        return {tid: r.info.run_id for tid, r in children.items()}

    def run_id(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid not in self.runs and self._stale:  # made before this copy was saved (a resumed search)
            self.runs.update(self._existing(self._children()))
            self._stale = False
        if tid not in self.runs:
            params = trial_params(trial.config)
            run = trial_run(self.ctx, trial.config)
            tr = run["train"]
            tags = {**self.base_tags, "mlflow.parentRunId": self.parent, "mtlo.trial_id": tid,
                    "mtlo.role": self.role, "mtlo.tasks": ",".join(sorted(run["tasks"])),
                    "mtlo.num_tasks": str(len(run["tasks"])), "mtlo.sharing": tr["sharing"],
                    "mtlo.weighting": tr["weighting"], "mtlo.schedule": tr["schedule"],
                    "mtlo.seed": str(tr["seed"]), "mtlo.status": "RUNNING"}
            created = self.client.create_run(self.experiment_id, run_name=f"{self.role}-{tid}", tags=tags)
            rid = created.info.run_id
            flat = {f"param.{k}": v for k, v in params.items()}
            flat.update(flatten({"train": tr}))
            flat.update({f"task.{t}.source": s["source"] for t, s in run["tasks"].items()})
            log_params(self.client, rid, flat)
            log_datasets(self.client, rid, self.datasets, run["tasks"])
            self.runs[tid] = rid
            self._created.add(tid)
        return self.runs[tid]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.status[trial.trial_id] = "RUNNING"
        self.seen[trial.trial_id] = trial
        self._submit(self._start, trial)

    _start = _tolerant(run_id)  # the child run, made as the trial starts

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._remember(trial.trial_id, result)
        self.seen[trial.trial_id] = trial
        self._submit(self._write_result, trial, dict(result))

    def _remember(self, tid: str, result: dict[str, Any]) -> None:
        self.results[tid] = dict(result)
        best = self.best.get(tid)
        if result.get("objective") is not None and (best is None or result["objective"] > best["objective"]):
            self.best[tid] = dict(result)

    @staticmethod
    def _step(result: dict[str, Any]) -> int:
        return int(result.get("epoch") or result.get("training_iteration") or 0)

    @_tolerant
    def _write_result(self, trial: Any, result: dict[str, Any]) -> None:
        rid = self.run_id(trial)
        step = self._step(result)
        if step in self._steps_in_mlflow(trial.trial_id, rid):
            return  # a resumed trial repeating an epoch it had reported before a kill: logged once
        log_metrics(self.client, rid, metric_row({k: v for k, v in result.items() if k not in _SKIP and v is not None}),
                    step=step)
        self.logged.setdefault(trial.trial_id, set()).add(step)
        node = str(result.get("node_id") or "")
        if node and self.nodes.get(trial.trial_id) != node:  # once per trial (again if Ray moved it)
            self.client.set_tag(rid, "mtlo.node_id", node)
            self.nodes[trial.trial_id] = node

    def _steps_in_mlflow(self, tid: str, rid: str) -> set[int]:
        """Steps of this trial already in MLflow (read once per driver process, and only for a
        child run an earlier driver process made)."""
        logged = self.logged.setdefault(tid, set())
        if tid not in self._checked and tid not in self._created:
            logged.update(m.step for m in self.client.get_metric_history(rid, ROW_KEY))
            self._checked.add(tid)
        return logged

    def _close(self, trial: Any, status: str, error: str | None = None) -> None:
        """Final status, best-epoch metrics and artifacts of a trial's child run (once)."""
        self.status[trial.trial_id] = status
        rid = self.run_id(trial)
        if trial.trial_id in self.closed:
            return
        if trial.trial_id not in self._created and _is_closed(self.client.get_run(rid)):
            self.closed.add(trial.trial_id)  # closed before a kill; Ray's saved state did not know yet
            return
        last = self.results.get(trial.trial_id, {})
        with tempfile.TemporaryDirectory(prefix="mtlo-") as tmp:
            run = trial_run(self.ctx, trial.config)
            Path(tmp, "trial_config.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
            final = {k: v for k, v in last.items() if k.startswith(("val/", "test/", "objective", "obj/"))}
            Path(tmp, "final_metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True))
            self.client.log_artifacts(rid, tmp)
        best = self.best.get(trial.trial_id)
        if best is not None:
            log_metrics(self.client, rid, closing_metrics(best, last))
        self.client.set_tag(rid, "mtlo.status", status)
        if error:
            set_tag(self.client, rid, "mtlo.error", error)
        # MLflow's run status: FINISHED for a trial that trained to its end (or was stopped early
        # by the scheduler or patience), FAILED for a failed or diverged one (mtlo.status says which)
        self.client.set_terminated(rid, "FINISHED" if status in ("FINISHED", "STOPPED") else "FAILED")
        self.closed.add(trial.trial_id)

    _finish = _tolerant(_close)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = self.results.get(trial.trial_id, {})
        ray_last = getattr(trial, "last_result", None) or {}
        if int(ray_last.get("epoch") or 0) > int(last.get("epoch") or 0) or ended_early(ray_last):
            last = ray_last  # Ray's restored record is newer than ours (a resumed search)
        ended = self.ended[trial.trial_id] = self._final_status(last)
        self._submit(self._finish, trial, *ended)

    def _final_status(self, last: dict[str, Any]) -> tuple[str, str | None]:
        early = ended_early(last)  # NaN or infinite loss, GPU out of memory: ended, not retried
        if early is not None:
            return early
        # fewer epochs than configured: the scheduler (ASHA) or patience stopped it early
        return ("STOPPED" if int(last.get("epoch") or 0) < int(self.ctx.run["train"]["epochs"]) else "FINISHED"), None

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ended = self.ended[trial.trial_id] = ("FAILED", trial_error(trial))
        self._submit(self._finish, trial, *ended)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A failure Ray retries (search.max_failures): recorded on the child run, which goes on."""
        n = self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        self._submit(self._write_retry, trial, n, trial_error(trial))

    @_tolerant
    def _write_retry(self, trial: Any, n: int, error: str) -> None:
        rid = self.run_id(trial)
        self.client.set_tag(rid, "mtlo.retries", str(n))
        set_tag(self.client, rid, f"mtlo.retry.{n}.error", error)

    # -- after the search -----------------------------------------------------------------
    def sync(self, grid: Any, *, interrupted: bool = False) -> None:
        """Write to MLflow what it lacks of the finished grid (Ray's on-disk results): child
        runs, metric points (each (metric, epoch) once), final status. ``interrupted`` (Ctrl-C):
        the trials that had not ended stay open for ``--resume``, and the parent run is marked
        KILLED until then. Raises ServiceError when MLflow does not answer."""
        started = time.perf_counter()
        self.drain()
        down = self.offline_since is not None and tracking.still_down(self.tracking_uri, "when the trials ended")
        if down:  # said now, not after the store's own timeouts (a locked sqlite file's: 20 s a read)
            raise down
        self.offline_since = None
        try:
            self._sync(grid, interrupted)
            if interrupted:
                self.client.set_terminated(self.parent, "KILLED")
            if self.synced_points:
                err_console.print(f"MLflow had missed {self.synced_points} metric point(s): written now from Ray's "
                                  "results", markup=False, highlight=False)
        except Exception as exc:
            error = as_outage(self.tracking_uri, exc)
            if error is None:
                raise  # not the store: a bug, with its traceback in the log
            raise error from exc
        finally:
            self.sync_seconds = time.perf_counter() - started  # after the trials: queued writes, then gaps

    def _sync(self, grid: Any, interrupted: bool) -> None:
        children = self._children()
        self.runs.update(self._existing(children))  # made by any copy of this
        for result in grid:
            frame = result.metrics_dataframe
            # a key some rows lack is NaN in the frame: drop it (the live path never logs NaN)
            rows = [{k: v for k, v in r.items() if v == v} for r in frame.to_dict("records")] if frame is not None \
                else []
            tid = (result.metrics or {}).get("trial_id") or (rows[-1].get("trial_id") if rows else None)
            if not tid or result.config is None:  # a trial that never reported: nothing to write yet
                continue
            child = children.get(tid)
            done = child is not None and _is_closed(child)
            # closed, with every step: nothing to write (a trial closed after MLflow missed some of
            # its epochs is not: what this driver wrote is known, an earlier driver's read once)
            if child is not None and done and {self._step(r) for r in rows} <= self._steps_in_mlflow(
                    tid, child.info.run_id):
                continue
            trial = SimpleNamespace(trial_id=tid, config=result.config)
            self.synced_points += self._fill(trial, rows)
            for r in rows:
                self._remember(tid, r)
            if interrupted and tid not in self.ended:
                continue  # stopped mid-way by Ctrl-C: --resume goes on with it
            if not done:  # errors propagate here (sync turns them into one line)
                error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
                self._close(trial, *(("FAILED", error) if error else self._final_status(self.results.get(tid, {}))))

    def _fill(self, trial: Any, rows: list[dict[str, Any]]) -> int:
        """Write the metric points of Ray's ``rows`` of ``trial`` that its child run lacks; how many."""
        rid = self.run_id(trial)
        whole = {m.step for m in self.client.get_metric_history(rid, ROW_KEY)}
        have: set[tuple[str, int]] | None = None  # point by point, for a row without it (an error report)
        written = 0
        for r in rows:
            step = self._step(r)
            missing = metric_row({k: v for k, v in r.items() if k not in _SKIP and v is not None})
            if ROW_KEY not in missing:
                have = self._points(rid) if have is None else have
                missing = {k: v for k, v in missing.items() if (k, step) not in have}
            elif step in whole:
                missing = {}
            if missing:
                log_metrics(self.client, rid, missing, step=step)
                written += len(missing)
            self.logged.setdefault(trial.trial_id, set()).add(step)
        return written

    @_tolerant
    def _catch_up(self, trial: Any) -> None:
        """Once MLflow answers again mid-search: what it missed of ``trial`` (from Ray's
        result.json of the trial), and its final status if it ended meanwhile."""
        path = Path(trial.local_path or "") / "result.json"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        self._fill(trial, rows)
        ended = self.ended.get(trial.trial_id)
        if ended is not None and trial.trial_id not in self.closed:
            self._close(trial, *ended)

    def _points(self, rid: str) -> set[tuple[str, int]]:
        keys = self.client.get_run(rid).data.metrics
        return {(k, m.step) for k in keys for m in self.client.get_metric_history(rid, k)}


def _is_closed(run: Any) -> bool:
    return run.data.tags.get("mtlo.status") in FINAL and run.info.status != "RUNNING"

