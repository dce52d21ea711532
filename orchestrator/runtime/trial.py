"""The Ray Tune trainable: a searched trial = the config's run dict + the suggested params.

Everything the trial needs beyond Optuna's suggestions travels in a :class:`TrialContext`
through ``tune.with_parameters`` (put in the object store once, not copied per trial).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainables.imports import collector_paused

with collector_paused():  # a trial worker imports this module first: torch (trainables/imports.py)
    from search_spaces import apply_params

# keys Ray adds or that are ours, never Optuna suggestions
CONTEXT_KEYS = ("__mtlo_fixed",)


class Scorer(Protocol):
    """What a trial reports as its objective(s) each epoch (``search.objectives``)."""

    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]: ...


@dataclass(frozen=True)
class TrialContext:
    run: dict[str, Any]  # the config's run dict (encoder, tasks, train)
    objective: Scorer | None  # None: the training loop's own (mean signed main metric)
    cpus_per_trial: float
    checkpoint: bool = True
    faults: tuple = ()  # test-only (runtime/faults.py, MTLO_FAULT)


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The searched parameters of a trial (Optuna's suggestions, or fixed ones such as a
    baseline's task)."""
    params = {k: v for k, v in config.items() if k not in CONTEXT_KEYS}
    params.update(config.get("__mtlo_fixed") or {})
    return params


def trial_run(ctx: TrialContext, config: dict[str, Any]) -> dict[str, Any]:
    run = apply_params(ctx.run, trial_params(config))
    run["train"]["num_threads"] = max(1, int(ctx.cpus_per_trial or 1))
    return run


def ended_early(result: dict[str, Any]) -> tuple[str, str] | None:
    """(status, error) of a trial that ended by itself with nothing to rank, not retried: a
    NaN or infinite loss (DIVERGED: it would diverge again), a GPU out of memory (FAILED: the
    same batch on the same share would run out again)."""
    if result.get("diverged"):
        return "DIVERGED", str(result.get("error") or "loss diverged")
    if result.get("oom"):
        return "FAILED", str(result.get("error") or "GPU out of memory")
    return None


def oom_message(batch_size: int, exc: BaseException) -> str:
    """What a user does about a trial's GPU out of memory, with the device's figures."""
    import torch

    from trainables.errors import first_line

    where = ""
    if torch.cuda.is_available():
        used = torch.cuda.memory_reserved() / 2**30
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
        where = f", {used:.1f} of {total:.1f} GiB reserved on the device"
    return (f"GPU out of memory at batch size {batch_size}{where}; lower train.batch_size or give the trial a "
            f"larger GPU share (resources.gpus_per_trial) ({first_line(exc)})")


STATE_FILE = "state.pt"  # everything a trial needs to continue (trainables.state)
MODEL_FILE = "model.pt"  # the trial's best-epoch weights: what a search keeps of its best trials


def best_score(ctx: TrialContext, tasks: list[str]) -> Any:
    """How a trial ranks its epochs: the search's objective where it is one number (the same
    number the searcher and the best-trial choice use), else the loop's own."""
    def score(row: dict[str, Any]) -> float:
        value = ctx.objective.compute(row, tasks).get("objective") if ctx.objective is not None else None
        return float(row["objective"] if value is None else value)
    return score


def release_memory() -> None:
    """Give back to the system what the last trial freed. Ray runs trial after trial in one
    worker (``reuse_actors``), and glibc keeps the memory a trial freed in its heaps; nothing
    in Python holds it, yet a MiniLM worker grew by about 300 MB a trial (9.3 GB after 15
    trials of a six-task study, until Ray's memory monitor killed workers). So every trial
    trims the heaps as it starts and as it ends. A no-op where the C library has no
    ``malloc_trim`` (macOS, musl).

    The first call in a worker, after its imports, moves what is alive then (modules, classes:
    half a million objects, alive as long as the process) out of the collector's sight
    (``gc.freeze``): a full collection then takes microseconds, not the 0.1-0.2 s of CPU it
    took twice a trial."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    if gc.get_freeze_count() == 0:  # the first call in this process
        gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _restored_state() -> dict[str, Any] | None:
    """The training state of the checkpoint Ray restores the trial from (a resumed search, a
    retried failure), with the best epoch's weights; None for a fresh trial."""
    from pathlib import Path

    import torch
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        state: dict[str, Any] = torch.load(Path(folder) / STATE_FILE, weights_only=True)
        if (Path(folder) / MODEL_FILE).is_file():
            state["best_weights"] = torch.load(Path(folder) / MODEL_FILE, weights_only=True)
    return state


def tune_row(row: dict[str, Any], ctx: TrialContext, tasks: list[str], node_id: str) -> dict[str, Any]:
    """What a trial reports to Ray Tune for an epoch: the loop's row, the search's objective(s),
    its task set and node; an undefined metric left out (missing, never NaN, for the searcher and
    the scheduler)."""
    out = dict(row)
    if ctx.objective is not None:
        out.update(ctx.objective.compute(row, tasks))
    out = {k: v for k, v in out.items() if not (isinstance(v, float) and not math.isfinite(v))}
    out["tasks"] = "+".join(tasks)
    out["node_id"] = node_id
    return out


def trainable(config: dict[str, Any], ctx: TrialContext) -> None:
    """Train one configuration and report every epoch to Ray Tune with the objective.

    Every epoch's report carries a checkpoint of the whole training state (``state.pt``) and
    the best epoch's weights (``model.pt``); a trial that Ray restarts (a resumed search, a
    retried failure) continues from its last epoch.
    A loss that turns NaN or infinite ends the trial with a last report ``{"diverged": 1,
    "error": ...}`` and no objective: not retried (it would diverge again), recorded as
    DIVERGED, and the searcher never sees a NaN. A GPU out of memory ends it the same way
    (``{"oom": 1, "error": ...}``, recorded FAILED with what to change), its memory given back
    so that a trial sharing the GPU goes on.
    """
    import tempfile
    from pathlib import Path

    import ray
    import torch
    from ray import tune

    from orchestrator.runtime.faults import TrialFaults, trial_number
    from trainables import DivergedError, build, fit

    # When the scheduler stops a trial, Ray reuses its worker for the next one only if this
    # function has ended within TUNE_FUNCTION_THREAD_TIMEOUT_S (Ray's default: 2 s), and else
    # fails the *next* trial ("Could not re-use actor"). Ending includes freeing the model
    # (above all on a busy machine), so allow a minute; Ray reads it in this process at reuse.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    release_memory()  # what an earlier trial in this worker left in the heaps
    run = trial_run(ctx, config)
    tasks = list(run["tasks"])
    node_id = ray.get_runtime_context().get_node_id()
    state = _restored_state()
    pending: dict[str, Any] = {}
    done = [0]  # the last epoch reported

    def report(row: dict[str, Any]) -> None:
        out = tune_row(row, ctx, tasks, node_id)
        done[0] = int(row.get("epoch") or 0)
        saved = pending.pop("state", None)
        if saved is None:
            tune.report(out)
        else:
            with tempfile.TemporaryDirectory(prefix="mtlo-ckpt-") as folder:
                torch.save(saved.pop("best_weights"), Path(folder) / MODEL_FILE)
                torch.save(saved, Path(folder) / STATE_FILE)
                tune.report(out, checkpoint=tune.Checkpoint.from_directory(folder))
        if faults is not None:
            faults.after_epoch(int(row.get("epoch") or 0))

    def save_state(st: dict[str, Any]) -> None:
        if ctx.checkpoint:
            pending["state"] = st

    faults = None
    if ctx.faults:  # test-only (MTLO_FAULT)
        tc = tune.get_context()
        faults = TrialFaults(ctx.faults, tc.get_trial_id(), trial_number(tc.get_trial_id(), tc.get_trial_dir()),
                             tasks)
    experiment = build(run)
    if faults is not None:
        faults.install(experiment)
    oom: str | None = None
    try:
        fit(experiment, report, state=state, save_state=save_state, score=best_score(ctx, tasks))
    except DivergedError as exc:
        tune.report({"diverged": 1, "error": str(exc), "epoch": done[0], "tasks": "+".join(tasks),
                     "node_id": node_id})
    except torch.cuda.OutOfMemoryError as exc:  # recorded once, not retried
        oom = oom_message(int(run["train"]["batch_size"]), exc)
    finally:
        del experiment, state  # the model, optimizer and restored checkpoint: freed, then given back
        release_memory()
        if faults is not None:
            faults.on_exit()
    if oom is not None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the GPU's cached blocks back: a trial sharing the GPU goes on
        tune.report({"oom": 1, "error": oom, "epoch": done[0], "tasks": "+".join(tasks), "node_id": node_id})


def trial_error(trial: Any) -> str:
    """The last line of the error Ray kept for a failed ``trial``."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace").strip().splitlines()
        return text[-1] if text else "trial failed"
    return str(getattr(trial, "error_msg", None) or "trial failed")
