"""Which `Host` headers the server answers: the defence against DNS rebinding.

A page of evil.example can make its own name resolve to 127.0.0.1 after it has loaded; its
scripts then reach this server as same-origin requests and can read the answers. The one thing
such a request cannot hide is its `Host` header (`evil.example:8000`), so every request whose
host is not one of ours is refused before anything else runs (see `server.py`).

Ours: `localhost`, `127.0.0.1`, `[::1]` and the bound `HOST`; when `HOST` binds every address
(`0.0.0.0` or `::`), also this machine's hostname, FQDN and interface addresses; and the names in
`ALLOWED_HOSTS` (`*` turns the check off). The port is ignored: a rebinding page cannot choose the
host name it sends, whatever the port, and port forwarding (`-p 9000:8000`) changes only the port.
A request with no `Host` at all passes: browsers always send one.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable

import psutil

from errors import HostNotAllowed

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
EVERY_ADDRESS = ("0.0.0.0", "[::]")


def host_name(authority: str) -> str:
    """The host of a `Host` header (or a setting): lower case, no port, no trailing dot, IPs canonical."""
    value = authority.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        inside, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return value
        value = inside
    elif value.count(":") == 1:  # name:port; more colons is a bare IPv6 address (from HOST or an interface)
        name, _, port = value.partition(":")
        if not port.isdigit():
            return value
        value = name
    value = value.rstrip(".")
    try:
        address = ipaddress.ip_address(value.split("%")[0])  # fe80::1%eth0: browsers send no zone
    except ValueError:
        return value
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def allowed_hosts(bind_host: str, extra: Iterable[str], machine_names: Callable[[], Iterable[str]]) -> frozenset[str] | None:
    """The host names to answer, or None (`*` in `extra`) for all; `machine_names` is asked only for 0.0.0.0 / ::."""
    extra = list(extra)
    if "*" in extra:
        return None
    names = [*LOOPBACK_NAMES, bind_host, *extra]
    if host_name(bind_host) in EVERY_ADDRESS:
        names.extend(machine_names())
    return frozenset(name for name in map(host_name, names) if name)


def is_allowed(host_header: str, allowed: frozenset[str] | None) -> bool:
    return allowed is None or not host_header or host_name(host_header) in allowed


def check_host(host_header: str, allowed: frozenset[str] | None) -> None:
    if not is_allowed(host_header, allowed):
        raise HostNotAllowed(f"Host {host_header[:200]!r} is not allowed; add it to ALLOWED_HOSTS")


def local_names() -> list[str]:
    """This machine's hostname, fully qualified name and the addresses of its interfaces."""
    names = [socket.gethostname(), socket.getfqdn()]
    for addresses in psutil.net_if_addrs().values():
        names.extend(a.address for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6))
    return names
