"""Listing the listening sockets of a process tree, and telling loopback addresses apart.

The check itself runs inside the busiest end-to-end search of the suite: 8 trials at once,
tests/orchestrator/test_faults.py (every socket of ``mtlo search``'s process tree on loopback)."""

import pytest

from orchestrator.runtime import address
from tests.services import is_loopback


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")


def test_a_local_ray_is_loopback_whatever_the_users_environment(monkeypatch):
    """A user's own ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` (which would bind Ray's servers to
    the machine's interface) is overridden for a local Ray, for search and transfer alike (both
    go through ``address.prepare``)."""
    import os

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    assert address.prepare(None, "--address") is None
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


@pytest.mark.parametrize(("node", "switch"), [("127.0.0.1", "0"), ("10.0.0.5", None), (None, None)])
def test_a_cluster_address_sets_the_loopback_switch_only_for_a_loopback_node(monkeypatch, node, switch):
    """Joining a cluster: Ray's loopback switch is set only when this machine's node of the
    cluster is on loopback (a head bound to 127.0.0.1); the token is sent when one is at hand."""
    import os

    for var in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(address, "check_reachable", lambda *a: None)
    monkeypatch.setattr(address, "speaks_grpc", lambda *a: True)
    monkeypatch.setattr(address, "node_ip", lambda a: node)
    monkeypatch.setattr(address, "token_available", lambda: True)
    assert address.prepare("10.0.0.5:6379", "--address") == "10.0.0.5:6379"
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == switch
    assert os.environ["RAY_AUTH_MODE"] == "token"
