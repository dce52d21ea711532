"""Listing the listening sockets of a process tree, and telling loopback addresses apart.

The check itself runs inside the busiest end-to-end search of the suite: 8 trials at once,
tests/orchestrator/test_faults.py (every socket of ``mtlo search``'s process tree on loopback)."""

import ipaddress

import psutil


def listening(root: psutil.Process) -> set[tuple[str, int, str]]:
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


def test_a_local_ray_is_loopback_whatever_the_users_environment(monkeypatch):
    """A user's own ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` (which would bind Ray's servers to
    the machine's interface) is overridden for a local Ray, for search and transfer alike; a
    cluster address leaves it alone."""
    import os

    from orchestrator.commands import loopback_unless

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    loopback_unless(None)
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    loopback_unless("10.0.0.5:6379")
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
