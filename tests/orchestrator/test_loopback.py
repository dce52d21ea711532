"""The local Ray that ``mtlo search`` starts listens on loopback only (checked by listing the
listening sockets of the command's process tree while it runs)."""

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "loopback",
    "encoder": {"model": "builtin:tiny-random", "max_length": 32},
    "tasks": {"rt": {"source": "builtin:rt_polarity"}},
    "train": {"epochs": 3, "batch_size": 16, "max_train_examples": 400, "max_eval_examples": 32},
    "search": {"space": "weights", "num_samples": 2, "objective": "mean_score"},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db"},
}


def _listening(root: psutil.Process) -> set[tuple[str, int, str]]:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((c.laddr.ip, c.laddr.port, p.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on an IPv6 socket
    return (mapped or addr).is_loopback


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")


def test_local_search_listens_on_loopback_only(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    mtlo = Path(sys.executable).parent / "mtlo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen([str(mtlo), "search", "c.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    seen: set[tuple[str, int, str]] = set()
    while proc.poll() is None:
        seen |= _listening(root)
        time.sleep(0.3)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err[-2000:]
    assert len(seen) >= 3, seen  # Ray's GCS, raylet, workers... were seen, so the check below means something
    exposed = {s for s in seen if not is_loopback(s[0])}
    assert not exposed, f"listening beyond loopback: {sorted(exposed)}"
