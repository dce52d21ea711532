"""A run's peak memory, for its epoch rows: on a GPU, the most torch allocated on it; on CPU,
the process's resident-set peak (Linux ``VmHWM``), both reset when the run starts, so that a
worker that ran an earlier trial reports this one's peak alone."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _rss_peak_kib() -> int | None:
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in _STATUS.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1])
    return None


class PeakMemory:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset = False
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.reset = True
        else:
            with contextlib.suppress(OSError):  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
                self.reset = True

    def row(self) -> dict[str, float]:
        """``memory/peak_gpu_mib`` or ``memory/peak_rss_mib`` since the start; nothing where the
        peak could not be reset (it would be an earlier run's)."""
        if not self.reset:
            return {}
        if self.device.type == "cuda":
            return {"memory/peak_gpu_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}
        kib = _rss_peak_kib()
        return {} if kib is None else {"memory/peak_rss_mib": round(kib / 1024, 1)}
