"""Where generated ssh configs jump through: the SSH front's public host and port.

Behind the chart's Service (80, 443 or proxy.service.sshPort) the request's Host header names the right host but
not the SSH port (a browser on https://hub.example.org sends no port at all, which used to mean 8080):
MLHUB_SSH_PUBLIC_PORT gives the port, the host still comes from the request. A port in the Host header reached
the public listener, which serves SSH too (NodePort, kubectl port-forward): it stays.
"""

import pytest

from mlhubspawner import sshkeys


@pytest.mark.parametrize(
    "request_host, public_port, expected",
    [
        # the chart with TLS: browsers send no port; the SSH front is the Service's 443
        ("hub.example.org", 443, ("hub.example.org", 443)),
        ("hub.example.org", 80, ("hub.example.org", 80)),
        # proxy.service.sshPort=22: browsers on https://hub.example.org send no port
        ("hub.example.org", 22, ("hub.example.org", 22)),
        ("[fd00::7]", 22, ("fd00::7", 22)),
        # a port the request came in on reaches the same listener: kubectl port-forward, a NodePort
        ("localhost:8080", 80, ("localhost", 8080)),
        ("node-1.example.org:30080", 443, ("node-1.example.org", 30080)),
        # no public port (make run): the Host header's port, else 8080 as before
        ("hub.example.org", None, ("hub.example.org", 8080)),
        ("127.0.0.1:9000", None, ("127.0.0.1", 9000)),
    ],
)
def test_ssh_front_from_the_request_host_and_the_public_port(request_host, public_port, expected):
    assert sshkeys.ssh_front_address(request_host, public_port=public_port) == expected


def test_a_configured_public_host_wins():
    assert sshkeys.ssh_front_address("internal:8080", ("ssh.example.org", 2222), 443) == (
        "ssh.example.org",
        2222,
    )


def test_the_jump_of_a_chart_hub_without_ssh_public_host():
    host, port = sshkeys.ssh_front_address("hub.example.org", public_port=443)
    jump = sshkeys.jump_host("tunnel", host, port)
    assert jump == "tunnel@hub.example.org:443"
    assert "ProxyJump tunnel@hub.example.org:443\n" in sshkeys.ssh_config("a", "ws", 22, "jovyan", jump)


def test_a_bad_request_host_is_refused():
    with pytest.raises(ValueError):
        sshkeys.ssh_front_address("a b", public_port=443)


@pytest.mark.parametrize("value, expected", [("443", 443), (" 22 ", 22), ("65535", 65535)])
def test_parse_public_port(value, expected):
    assert sshkeys.parse_public_port(value) == expected


@pytest.mark.parametrize("value", ["", "0", "65536", "http", "-1", "4 43"])
def test_parse_public_port_refuses_junk(value):
    with pytest.raises(ValueError):
        sshkeys.parse_public_port(value)
