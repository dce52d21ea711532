"""Fault injection for tests and drills: the ``MTLO_FAULT`` environment variable (test-only).

Read once by the driver (``mtlo search`` / ``mtlo transfer``); trial faults travel to the
trials with the trial context, so they work on any node. ``;`` separates faults; each is
``KIND@WHEN`` followed by options::

    MTLO_FAULT="raise@2 trial=0; kill@1 trial=1 times=1; nan@1 trial=2"
    MTLO_FAULT="driver@report"

Trial faults (``WHEN`` = an epoch: the fault fires after that epoch's result and checkpoint
are reported, at the first report of an epoch >= WHEN in each attempt of the trial):

- ``raise``: the trial raises ``RuntimeError`` (Ray retries it up to ``search.max_failures``
  times from its last checkpoint, then records it FAILED);
- ``kill``: the trial's worker process kills itself with SIGKILL (same);
- ``nan`` / ``inf``: every later training loss is multiplied by NaN (inf), so the real
  divergence check of the training loop stops the trial, recorded as DIVERGED;
- ``oom``: the trial raises ``torch.cuda.OutOfMemoryError`` from inside its training loop (a
  GPU out of memory, without a GPU): recorded FAILED with what to change, not retried;
- ``hang``: the trial sleeps for ever (a hung trial: ``search.trial_timeout`` ends it);
- ``slow-exit`` (``WHEN`` ignored: ``slow-exit@0``): the trial's ending, however it ends
  (the scheduler's stop included), takes 2.5 s more (past Ray's default 2 s), as freeing a
  large model on a busy machine can.

Options: ``trial=N`` only the trial numbered N in its Ray folder name
(``trainable_<id>_<N>_...``: a search counts from 1, a grid of ``mtlo transfer`` from 0;
default: every trial); ``tasks=A+B`` only the trials of that task set (a study trains its tasks
alone in a grid of their own, before the groups);
``times=M`` at most M firings in all for that trial, counted in files under
``$MTLO_FAULT_DIR`` (required with ``times``; the default is to fire in every attempt).

Driver faults (the driver SIGKILLs its own process group, as ``kill -9`` of ``mtlo`` would):
``driver@first-result`` (the first epoch result of any trial), ``driver@trials=N`` (when N
trials have completed), ``driver@report`` (midway through writing the report: figures and
report.md written, half of report.json in its temporary file, the MLflow artifacts not yet).

``sigint@POINT`` (the points of ``driver``): the driver sends SIGINT to its process group, as
Ctrl-C in a terminal does: Ray Tune saves the search and stops, mtlo exits 130.

``tune-crash@trials=N``: when N trials have completed, Ray Tune's controller stops the
search with the exception Ray Tune 2.60 raises when Ray's memory monitor kills a trial's
worker (``RuntimeError("Caught unexpected exception: ...")`` from ``OutOfMemoryError``, out
of ``Tuner.fit``); ``times=M`` as for trial faults (counted for the whole search).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

ENV = "MTLO_FAULT"
TRIAL_KINDS = ("raise", "kill", "nan", "inf", "oom", "hang", "slow-exit")
SLOW_EXIT_S = 2.5
DRIVER_POINTS = ("first-result", "report")
TUNE_CRASH = "tune-crash"


@dataclass(frozen=True)
class Fault:
    kind: str
    when: str  # an epoch (trial faults) or a driver point
    trial: int | None = None
    times: int | None = None
    state_dir: str | None = None
    tasks: str | None = None  # a task set, '+'-joined in sorted order

    def matches(self, number: int | None, tasks: list[str] | None = None) -> bool:
        return (self.trial is None or self.trial == number) and \
            (self.tasks is None or tasks is None or self.tasks == "+".join(sorted(tasks)))

    def take(self, trial_id: str) -> bool:
        """Count one firing for this trial; False once ``times`` firings were made."""
        if self.times is None:
            return True
        assert self.state_dir is not None
        path = Path(self.state_dir) / f"{trial_id}-{self.kind}"
        done = int(path.read_text()) if path.is_file() else 0
        if done >= self.times:
            return False
        path.write_text(str(done + 1))
        return True


@dataclass(frozen=True)
class Faults:
    trial: tuple[Fault, ...] = ()
    driver: tuple[Fault, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.trial or self.driver)


def parse(text: str | None) -> Faults:
    if not text or not text.strip():
        return Faults()
    trial, driver = [], []
    state_dir = os.environ.get("MTLO_FAULT_DIR")
    for part in filter(None, (p.strip() for p in text.split(";"))):
        head, *opts = part.split()
        kind, _, when = head.partition("@")
        options: dict[str, int] = {}
        tasks = None
        for o in opts:
            key, _, value = o.partition("=")
            if key == "tasks" and value:
                tasks = "+".join(sorted(value.split("+")))
                continue
            if key not in ("trial", "times") or not value.isdigit():
                raise ConfigError(f"{ENV}: '{o}' in '{part}' is not trial=N, times=N or tasks=A+B")
            options[key] = int(value)
        if kind in ("driver", "sigint"):
            if when not in DRIVER_POINTS and not (when.startswith("trials=") and when[7:].isdigit()):
                raise ConfigError(f"{ENV}: {kind}@{when}: the point must be one of "
                                  f"{', '.join(DRIVER_POINTS)} or trials=N")
            driver.append(Fault(kind, when))
            continue
        if kind == TUNE_CRASH:
            if not (when.startswith("trials=") and when[7:].isdigit()) or "trial" in options:
                raise ConfigError(f"{ENV}: '{part}' is not {TUNE_CRASH}@trials=N [times=M]")
            if "times" in options and not state_dir:
                raise ConfigError(f"{ENV}: '{part}': times=N needs MTLO_FAULT_DIR (a folder to count firings in)")
            driver.append(Fault(kind, when, None, options.get("times"), state_dir))
            continue
        if kind not in TRIAL_KINDS or not when.isdigit():
            raise ConfigError(f"{ENV}: '{part}' is not KIND@EPOCH with KIND one of {', '.join(TRIAL_KINDS)} "
                              f"(or driver@POINT, {TUNE_CRASH}@trials=N)")
        if "times" in options and not state_dir:
            raise ConfigError(f"{ENV}: '{part}': times=N needs MTLO_FAULT_DIR (a folder to count firings in)")
        trial.append(Fault(kind, when, options.get("trial"), options.get("times"), state_dir, tasks))
    return Faults(tuple(trial), tuple(driver))


def from_env() -> Faults:
    return parse(os.environ.get(ENV))


# -- trial side ------------------------------------------------------------------------------
class _PoisonedLoss:
    """A task type whose loss is multiplied by ``factor`` once ``armed`` (NaN or inf)."""

    def __init__(self, inner: Any, armed: list[bool], factor: float) -> None:
        self._inner, self._armed, self._factor = inner, armed, factor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def loss(self, *args: Any, **kwargs: Any) -> Any:
        value = self._inner.loss(*args, **kwargs)
        return value * self._factor if self._armed[0] else value


class TrialFaults:
    """The faults of one trial attempt: ``after_epoch`` is called after each epoch's report."""

    def __init__(self, faults: tuple[Fault, ...], trial_id: str, number: int | None,
                 tasks: list[str] | None = None) -> None:
        self.faults = [f for f in faults if f.matches(number, tasks)]
        self.trial_id = trial_id
        self.fired: set[int] = set()
        self.armed = [False]
        self.slow_exit = any(f.kind == "slow-exit" for f in self.faults)

    def install(self, experiment: Any) -> None:
        poison = [f for f in self.faults if f.kind in ("nan", "inf")]
        if poison:
            factor = float("nan") if poison[0].kind == "nan" else float("inf")
            experiment.types = {t: _PoisonedLoss(tt, self.armed, factor) for t, tt in experiment.types.items()}

    def after_epoch(self, epoch: int) -> None:
        for i, f in enumerate(self.faults):
            if i in self.fired or epoch < int(f.when) or f.kind == "slow-exit":
                continue
            self.fired.add(i)
            if not f.take(self.trial_id):
                continue
            if f.kind == "raise":
                raise RuntimeError(f"injected fault ({ENV}): raise after epoch {epoch} in trial {self.trial_id}")
            if f.kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if f.kind == "oom":
                import torch

                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: injected fault ({ENV}): oom after epoch "
                                                  f"{epoch} in trial {self.trial_id}")
            if f.kind == "hang":
                while True:
                    time.sleep(60)
            self.armed[0] = True  # nan / inf: the next training step's loss

    def on_exit(self) -> None:
        """Called as the trial ends, however it ends (the scheduler's stop included)."""
        if self.slow_exit:
            time.sleep(SLOW_EXIT_S)


def trial_number(trial_id: str, trial_dir: str) -> int | None:
    """N of Ray's trial folder ``trainable_<trial_id>_<N>_<params>_<date>``."""
    rest = Path(trial_dir).name.split(f"_{trial_id}_", 1)
    head = rest[1].split("_", 1)[0] if len(rest) == 2 else ""
    return int(head) if head.isdigit() else None


# -- driver side -----------------------------------------------------------------------------
_FIRED: set[Fault] = set()


def driver_point(faults: Faults, point: str, settle: Any = None) -> None:
    """SIGKILL (``driver``) or SIGINT (``sigint``) the driver, its whole process group when it
    leads one, at ``point``, once ``settle()`` returned (the MLflow recorder's queued writes
    done: the point is "once that event was recorded")."""
    for f in faults.driver:
        if f.kind in ("driver", "sigint") and f.when == point and f not in _FIRED:
            _FIRED.add(f)  # once a driver process: SIGINT, unlike SIGKILL, lets the driver go on
            if settle is not None:
                settle()
            sig = signal.SIGKILL if f.kind == "driver" else signal.SIGINT
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpgrp(), sig)
            else:
                os.kill(os.getpid(), sig)
            return


def point(name: str) -> Any:
    """A callable that fires the driver faults at ``name`` (None where MTLO_FAULT names none):
    the seam for a fault point outside Ray Tune's events (``driver@report``)."""
    found = from_env()
    if not any(f.when == name for f in found.driver):
        return None
    return lambda: driver_point(found, name)


def tune_crash(faults: Faults, point: str) -> None:
    """Raise, at ``point``, what Ray Tune's controller raises when Ray's memory monitor kills
    a trial's worker (``tune-crash``; called where the controller's own step would raise it)."""
    for f in faults.driver:
        if f.kind == TUNE_CRASH and f.when == point and f.take("search"):
            from ray.exceptions import OutOfMemoryError

            raise RuntimeError(f"Caught unexpected exception: injected fault ({ENV}): {TUNE_CRASH}@{point}") \
                from OutOfMemoryError(f"injected fault ({ENV}): a worker killed by Ray's memory monitor")


def driver_callback(recorder: Any = None) -> Any:
    """A Ray Tune callback that fires the driver faults tied to trial events, once ``recorder``
    (the MLflow recorder, which writes from a thread of its own) has written them. It reads
    ``MTLO_FAULT`` when an event comes, not when it is made: a resumed search runs with the
    callbacks Ray saved with the experiment, which must follow the resumed run's switch."""
    from ray.tune import Callback

    class DriverFaults(Callback):
        def __init__(self) -> None:
            self.completed = 0
            self.crash: str | None = None
            self.recorder = recorder

        def settle(self) -> None:
            if self.recorder is not None:
                self.recorder.drain()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            driver_point(from_env(), "first-result", self.settle)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.completed += 1
            driver_point(from_env(), f"trials={self.completed}", self.settle)
            self.crash = f"trials={self.completed}"  # Ray Tune catches what a trial's callback raises

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            point, self.crash = self.crash, None
            if point:
                tune_crash(from_env(), point)  # out of the controller's step, as Ray's own crash

        def __getstate__(self) -> dict[str, Any]:  # counts start again in each run of the driver
            return {"completed": 0, "crash": None, "recorder": self.recorder}

    return DriverFaults()
