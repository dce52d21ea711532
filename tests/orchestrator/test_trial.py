"""What a trial does in its Ray worker besides training (orchestrator/runtime/trial.py)."""

import json
import subprocess
import sys


def test_the_first_release_in_a_worker_freezes_what_its_imports_made_and_later_ones_freeze_nothing():
    """In a process of its own (a freeze would hold this one's objects): after the first call the
    collector skips the objects alive then; the second call collects without freezing more."""
    code = ("import gc, json\nfrom orchestrator.runtime.trial import release_memory\n"
            "before = gc.get_freeze_count()\nrelease_memory()\nfirst = gc.get_freeze_count()\n"
            "garbage = [[i] for i in range(1000)]\ndel garbage\nrelease_memory()\n"
            "print(json.dumps([before, first, gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    before, first, second = json.loads(out.stdout)
    assert before == 0 and first > 1000 and second == first, (before, first, second)
