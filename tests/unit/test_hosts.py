"""The `Host` check against DNS rebinding: which names a server answers to, and how a header is read."""

from __future__ import annotations

import pytest

from api import hosts
from errors import HostNotAllowed


def never_called():
    raise AssertionError("the machine's names are looked up only when HOST binds every address")


def test_loopback_names_and_the_bound_host_are_allowed_with_or_without_a_port():
    allowed = hosts.allowed_hosts("127.0.0.1", [], never_called)
    for header in ("localhost", "localhost:8000", "LOCALHOST:8000", "localhost.", "127.0.0.1", "127.0.0.1:8000",
                   "[::1]", "[::1]:8000", "[0:0::1]:8000"):
        assert hosts.is_allowed(header, allowed), header


@pytest.mark.parametrize("header", [
    "evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io:8000", "[::2]:8000",
    "localhost:8000@evil.example", "127.0.0.1:80:80", "0.0.0.0:8000", "192.168.1.20:8000",
])
def test_other_hosts_are_refused(header):
    assert not hosts.is_allowed(header, hosts.allowed_hosts("127.0.0.1", [], never_called))


def test_a_missing_host_header_is_allowed_since_no_browser_sends_one():
    assert hosts.is_allowed("", hosts.allowed_hosts("127.0.0.1", [], never_called))


def test_a_specific_bound_address_is_allowed():
    allowed = hosts.allowed_hosts("192.168.1.20", [], never_called)
    assert hosts.is_allowed("192.168.1.20:8000", allowed)
    assert not hosts.is_allowed("192.168.1.21:8000", allowed)
    assert hosts.is_allowed("[fe80::1]", hosts.allowed_hosts("fe80::1", [], never_called))


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_binding_every_address_adds_the_machine_names_and_addresses(bind):
    machine = lambda: ["box", "box.lan", "192.168.1.20", "fe80::1%eth0"]  # noqa: E731
    allowed = hosts.allowed_hosts(bind, [], machine)
    for header in ("box:8000", "BOX.lan", "192.168.1.20:8000", "[fe80::1]:8000", "localhost:8000"):
        assert hosts.is_allowed(header, allowed), header
    assert not hosts.is_allowed("evil.example:8000", allowed)


def test_allowed_hosts_adds_names_and_star_turns_the_check_off():
    allowed = hosts.allowed_hosts("127.0.0.1", ["llm.internal", "Proxy.Example:443", "10.0.0.7"], never_called)
    for header in ("llm.internal", "llm.internal:8000", "proxy.example", "10.0.0.7:8000"):
        assert hosts.is_allowed(header, allowed), header
    assert not hosts.is_allowed("evil.example", allowed)
    assert hosts.allowed_hosts("127.0.0.1", ["*"], never_called) is None
    assert hosts.is_allowed("evil.example:8000", None)


def test_the_refusal_names_the_host_and_the_setting():
    with pytest.raises(HostNotAllowed) as info:
        hosts.check_host("evil.example:8000", hosts.allowed_hosts("127.0.0.1", [], never_called))
    error = info.value
    assert error.status == 421 and error.code == "host_not_allowed"
    assert error.message == "Host 'evil.example:8000' is not allowed; add it to ALLOWED_HOSTS"
    hosts.check_host("localhost:8000", hosts.allowed_hosts("127.0.0.1", [], never_called))  # no error


def test_the_machine_names_include_the_hostname_and_loopback_address():
    names = set(hosts.local_names())
    assert "127.0.0.1" in names
    import socket

    assert socket.gethostname() in names
