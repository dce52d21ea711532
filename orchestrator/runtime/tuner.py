"""Build, fit and restore a Ray Tune ``Tuner`` over the trial function (``runtime.trial``).

Shared by ``mtlo search`` (Optuna proposes, a scheduler stops) and ``mtlo transfer`` (a
fixed grid of task sets x seeds): the same callbacks (MLflow recorder, live table, test-only
faults, checkpoint clean-up), checkpoints, failure retries, ``--resume`` and in-process
restore after a Ray system error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from orchestrator.config import Config
from orchestrator.display import err_console
from orchestrator.errors import Interrupted
from orchestrator.runtime import faults
from orchestrator.runtime.progress import Progress
from orchestrator.runtime.trial import Scorer, TrialContext, trainable
from trainables.errors import first_line

RESTORES = 3  # in-process restores of a search that Ray Tune stopped on a Ray system error


def trial_context(cfg: Config, run: dict[str, Any], objective: Scorer | None) -> TrialContext:
    """What every trial needs beyond its parameters; ``objective`` None: the training loop's
    own (the mean signed main metric)."""
    return TrialContext(run, objective, cfg.resources.cpus_per_trial, faults=faults.from_env().trial)


def ray_system_error(exc: BaseException) -> BaseException | None:
    """The Ray system error (a worker killed by Ray's memory monitor, a lost object or node)
    behind an exception out of ``Tuner.fit``, if one is: Ray Tune 2.60 retries a trial whose
    worker died, but stops the whole search on Ray's ``OutOfMemoryError`` ("Caught unexpected
    exception"). An error of a trial's own code (``RayTaskError``) is not one."""
    from ray.exceptions import RayError, RayTaskError

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, RayError) and not isinstance(e, RayTaskError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class _SigintWatch:
    """Ctrl-C during ``fit``: the first SIGINT asks Ray Tune to stop the way its own handler
    would (SIGUSR1, which Ray Tune always listens to: it saves the search's state and ends the
    loop, and ``fit`` returns the partial grid), and is remembered, so the search is not taken
    for finished; a second one stops at once. Ray Tune's own SIGINT handler is turned off
    meanwhile (it would end the loop the same way, but leave no sign of it)."""

    ENV = "TUNE_DISABLE_SIGINT_HANDLER"

    def __init__(self) -> None:
        self.installed = False
        self.before: Any = None
        self.usr1: Any = None
        self.env: str | None = None
        self.seen = False

    def __call__(self, sig: int, frame: Any) -> None:
        if self.seen:
            raise KeyboardInterrupt
        self.seen = True
        os.kill(os.getpid(), signal.SIGUSR1)

    def __enter__(self) -> _SigintWatch:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            self.installed = True
            self.before = signal.getsignal(signal.SIGINT)
            # until Ray Tune installs its own: a SIGUSR1 that no one handles would end the process
            self.usr1 = signal.signal(signal.SIGUSR1, lambda sig, frame: None)
            self.env = os.environ.get(self.ENV)
            os.environ[self.ENV] = "1"
            signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.installed:
            return
        signal.signal(signal.SIGINT, self.before if self.before is not None else signal.default_int_handler)
        signal.signal(signal.SIGUSR1, self.usr1 if self.usr1 is not None else signal.SIG_DFL)
        if self.env is None:
            os.environ.pop(self.ENV, None)
        else:
            os.environ[self.ENV] = self.env


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def restore(path: Path, trainable_res: Any, *, errored: bool) -> Any:
    """A Tuner that goes on with the search saved at ``path``: unfinished trials from their
    last checkpoints; ``errored`` (``--resume``): failed trials once more too."""
    from ray import tune

    return tune.Tuner.restore(str(path), trainable=trainable_res, resume_unfinished=True, resume_errored=errored)


def fit_tuner(tuner: Any, as_json: bool, progress: Progress, path: Path, trainable_res: Any) -> Any:
    """``tuner.fit()``; when Ray Tune stops on a Ray system error, the search is restored from
    its saved state (``path``) and goes on, up to ``RESTORES`` times, as ``--resume`` would."""
    from ray import tune

    # Ray writes some notices to stdout; with --json, stdout carries only our JSON
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    restores = 0
    try:
        while True:
            sigint = _SigintWatch()
            try:
                with redirect, sigint:
                    grid = tuner.fit()
            except Exception as exc:
                cause = ray_system_error(exc)
                if cause is None or not tune.Tuner.can_restore(str(path)):
                    raise
                if restores == RESTORES:
                    raise RuntimeError(f"Ray Tune stopped on a Ray error {RESTORES + 1} times, the last: "
                                       f"{_first_line(cause)}; run the same command with --resume to go on") from exc
                restores += 1
                progress.close()
                err_console.print(f"Ray Tune stopped on a Ray error ({_first_line(cause)}); "
                                  f"going on from the saved state, as --resume would ({restores} of {RESTORES})",
                                  markup=False, highlight=False)
                tuner = restore(path, trainable_res, errored=False)
                continue
            if sigint.seen:
                raise Interrupted(grid)
            return grid
    finally:
        progress.close()  # the live table ends on Ctrl-C too


def callbacks(recorder: Any, progress: Progress, keep: int) -> list[Any]:
    """MLflow first (a result is queued for MLflow's writer thread before anything else sees
    it), then the live table, then the test-only driver faults (MTLO_FAULT; nothing happens
    without it; a fault fires once the recorder wrote what came before it), last the removal
    of a finished trial's checkpoints but for the ``keep`` best trials' weights
    (runtime/checkpoints.py)."""
    from orchestrator.runtime.checkpoints import DropFinishedCheckpoints

    return [recorder, progress, faults.driver_callback(recorder), DropFinishedCheckpoints(keep)]


def run_tuner(cfg: Config, ctx: TrialContext, *, name: str, storage: Path, recorder: Any, progress: Progress,
              resume: bool, as_json: bool, param_space: dict[str, Any] | None = None, keep: int = 0,
              **tune_config: Any) -> Any:
    """Fit a Tuner named ``name`` under ``storage`` (restored from there with ``resume``), its
    trials recorded by ``recorder``, the weights of its ``keep`` best trials kept;
    ``tune_config``: ``TuneConfig`` options (searcher, scheduler, ``num_samples``). Returns
    Ray's ``ResultGrid`` once MLflow has every result."""
    from ray import tune

    res = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    if cfg.search.trial_timeout is not None:
        from ray.tune.schedulers import FIFOScheduler

        from orchestrator.runtime.timeouts import TrialTimeouts

        inner = tune_config.get("scheduler") or FIFOScheduler()
        tune_config["scheduler"] = TrialTimeouts(inner, cfg.search.trial_timeout)
    trainable_res = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), res)
    path = storage / name
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = restore(path, trainable_res, errored=True)
    else:
        tuner = tune.Tuner(
            trainable_res,
            param_space=param_space,
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=cfg.search.max_concurrent,
                                        **tune_config),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      callbacks=callbacks(recorder, progress, keep),
                                      failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures)),
        )
    try:
        grid = fit_tuner(tuner, as_json, progress, path, trainable_res)
    except Interrupted as stop:
        if stop.args:  # what finished is in MLflow before the command ends; the rest waits for --resume
            recorder.sync(stop.args[0], interrupted=True)
        raise
    recorder.sync(grid)
    return grid


def run_grid(cfg: Config, ctx: TrialContext, points: list[dict[str, Any]], *, name: str, storage: Path,
             recorder: Any, role: str, resume: bool, as_json: bool) -> Any:
    """Train a fixed list of trials (``points``: parameters such as ``tasks`` or ``seed``) on
    Ray Tune, recorded by ``recorder``; a resumed run restores the same grid."""
    from ray import tune

    progress = Progress(len(points), role, None, epochs=int(ctx.run["train"]["epochs"]))
    return run_tuner(cfg, ctx, name=name, storage=storage, recorder=recorder, progress=progress, resume=resume,
                     as_json=as_json, param_space={"__mtlo_fixed": tune.grid_search(points)})
