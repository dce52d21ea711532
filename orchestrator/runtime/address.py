"""The Ray a driver runs on: a new local one, or the cluster at ``--address`` / ``ray.address``.

Settled before Ray is imported, because Ray reads two of its settings once, at import:

- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for a new local Ray, and for a cluster whose node
  on this machine runs on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head
  --node-ip-address=127.0.0.1``): without it Ray 2.60 rewrites a loopback address to the
  machine's interface address, which such a cluster does not listen on, and retries for
  minutes without a word;
- ``RAY_AUTH_MODE=token`` when a Ray token is at hand (``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, which ``ray start`` and a local
  ``ray.init`` create): ``ray start`` turns token authentication on when one exists, and Ray
  sends the token only in token mode, which it enables by itself for ``auto`` but not for an
  explicit address ("Authentication token is missing or incorrect").

A driver on a node of the cluster joins as that node: ``ray.init`` is given the node's IP
(``node_ip``), so that ``--address 127.0.0.1:PORT`` works for a head that a plain ``ray
start --head`` put on the interface address as well. A variable the user set is left alone.
An address that names no running cluster fails here in seconds (exit 2), not after Ray's
own minutes of retries.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import sys
from pathlib import Path

from orchestrator.errors import ConfigError

CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE = "RAY_AUTH_MODE"
CONNECT_TIMEOUT_S = 5.0


def prepare(address: str | None, field: str) -> str | None:
    """The address to give ``ray.init`` (None: a new local Ray), Ray's environment set for it.
    ``field`` names where the address came from (``--address`` or ``ray.address``) in errors."""
    if not address:  # whatever the user's environment says: a local Ray is never reachable from outside
        os.environ[CLUSTER_SWITCH] = "0"
        return None
    target = address
    if address == "auto":
        found = os.environ.get("RAY_ADDRESS") or current_cluster()
        if found is None:
            raise ConfigError(f"{field}: auto, but no Ray cluster runs on this machine (no RAY_ADDRESS, no "
                              f"{address_file()}, no Ray process): start one with `ray start --head`, "
                              "or give the head's HOST:PORT")
        target = found
    elif os.environ.get("RAY_ADDRESS"):
        target = os.environ["RAY_ADDRESS"]  # Ray itself prefers it to the address it is given
    client = target.startswith("ray://")
    host, port = split(target, field)
    check_reachable(host, port, field, target)
    node = None if client else node_ip(target)
    if node is None and is_loopback(host) and not client:
        raise ConfigError(f"{field}: {target} answers, but no Ray node of this machine serves it: a Ray cluster "
                          "on this machine is started with `ray start --head --port PORT`")
    if not speaks_grpc(host, port):
        raise ConfigError(f"{field}: {target} answers, but not as a Ray head does (gRPC); give the head's GCS port "
                          "(`ray start --head --port`, 6379 by default)")
    if node is not None and is_loopback(node):  # this machine's node of the cluster is on loopback
        os.environ.setdefault(CLUSTER_SWITCH, "0")
    if not client and AUTH_MODE not in os.environ and token_available():
        os.environ[AUTH_MODE] = "token"
    return target


def split(address: str, field: str) -> tuple[str, int]:
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{field}: '{address}' is not HOST:PORT (a Ray head, e.g. 10.0.0.5:6379), "
                          "ray://HOST:PORT or auto")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP, IPv4 mapped into IPv6 (``::ffff:127.0.0.1``) included."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def check_reachable(host: str, port: int, field: str, address: str) -> None:
    """Something listens at ``host:port``; else one line naming the address, in seconds."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return
    except socket.gaierror as exc:
        why = f"unknown host ({exc.strerror or exc})"
    except TimeoutError:
        why = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    except OSError as exc:
        why = (exc.strerror or type(exc).__name__).lower()
    raise ConfigError(f"{field}: no Ray cluster answers at {address} ({why}); start it with `ray start --head`, "
                      "or check the head's address and port")


def speaks_grpc(host: str, port: int) -> bool:
    """Whether ``host:port`` answers an HTTP/2 connection preface with a SETTINGS frame, as the
    gRPC server of a Ray head does (and a web server or a database does not)."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
            sock.sendall(preface)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS


def token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser().is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


@functools.lru_cache(maxsize=8)  # read by prepare() and again by ray_init(): one scan of the processes
def node_ip(address: str) -> str | None:
    """The IP of this machine's node of the cluster at ``address`` (HOST:PORT of its GCS), from
    the command line of the raylet that serves it, as Ray's own ``auto`` finds clusters; None
    when this machine is not one of its nodes. Only raylets in this process's network
    namespace count (a container's or another namespace's cluster may use the same port)."""
    import psutil

    host, port = split(address, "address")
    here = _netns(os.getpid())
    found: list[tuple[bool, str]] = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        args = proc.info.get("cmdline") or ()
        if proc.info.get("name") != "raylet" and not (args and args[0].endswith("/raylet")):
            continue
        flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        gcs, ip = flags.get("gcs-address") or flags.get("gcs_address"), flags.get("node_ip_address")
        if not gcs or not ip or _netns(proc.pid) != here:
            continue
        gcs_host, _, gcs_port = gcs.rpartition(":")
        if gcs_port == str(port) and (gcs_host == host or is_loopback(host) or host == ip):
            found.append((gcs_host == host, ip))
    return max(found)[1] if found else None  # the raylet of the very address given, if any


def _netns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None  # not Linux, or not ours to read


def address_file() -> Path:
    """Where ``ray start --head`` (without ``--temp-dir``) writes its address, as Ray reads it."""
    if "RAY_TMPDIR" in os.environ:
        tmp = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        tmp = os.environ["TMPDIR"]
    else:
        tmp = "/tmp"
    return Path(tmp) / "ray" / "ray_current_cluster"


def current_cluster() -> str | None:
    """The cluster ``auto`` means, as Ray finds it: the address file of the last ``ray start
    --head``, else the GCS address a running Ray process of this machine was started with."""
    path = address_file()
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import psutil

    found, here = [], _netns(os.getpid())
    for proc in psutil.process_iter(["cmdline"]):
        if _netns(proc.pid) != here:
            continue
        for arg in proc.info.get("cmdline") or ():
            if arg.startswith("--gcs-address="):
                found.append(arg.split("=", 1)[1])
    return found[0] if found else None
