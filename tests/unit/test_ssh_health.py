"""The hub's check that a workspace's sshd answers: banner check, cache decision, probes of local listeners,
and what the probe may connect to (only the spawner's own target, never the request's)."""

import asyncio
import contextlib
import socket
from types import SimpleNamespace

import pytest

from mlhubspawner import ssh_health
from mlhubspawner.ssh_health import SSHHealth, SSHStatus, banner_status, fresh, probe, probe_targets

TARGET = ("t1-ws-ann", 22)


@pytest.mark.parametrize(
    "lines",
    [
        [b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"],
        [b"SSH-1.99-Cisco-1.25\r\n"],
        [b"welcome, this is a preamble\r\n", b"SSH-2.0-dropbear\r\n"],
    ],
)
def test_ssh_banners_are_ssh(lines):
    assert banner_status(lines, TARGET) == SSHStatus(True)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "sent no SSH banner"),
        ([b""], "sent no SSH banner"),
        ([b"SSH-1.5-OldServer\r\n"], "unsupported SSH version (SSH-1.5-OldServer)"),
        ([b"HTTP/1.1 400 Bad Request\r\n"], "not an SSH server"),
        ([b"+OK POP3 ready\r\n"] * 6 + [b"SSH-2.0-late\r\n"], "not an SSH server"),
    ],
)
def test_other_answers_are_not_ssh(lines, reason):
    status = banner_status(lines, TARGET)
    assert not status.ok and reason in status.reason and "t1-ws-ann:22" in status.reason


def test_cache_decision():
    key = ("ann", "", "2026-12-02 03:00:00", (TARGET,))
    entry = (key, 100.0, SSHStatus(True))
    assert fresh(entry, key, 129.9, 30)
    assert not fresh(entry, key, 130.0, 30)  # expired
    assert not fresh(entry, key, 99.0, 30)  # clock went back: probe again
    assert not fresh(entry, key, 100.0, 0)  # no caching
    assert not fresh(None, key, 100.0, 30)
    restarted = ("ann", "", "2026-12-02 03:05:00", (TARGET,))
    assert not fresh(entry, restarted, 101.0, 30)  # a restarted workspace is probed anew
    # a failure stands for a short time only: sshd may have been starting still
    failed = (key, 100.0, SSHStatus(False, "nothing listens"))
    assert fresh(failed, key, 102.9, 30, failure_ttl=3)
    assert not fresh(failed, key, 103.0, 30, failure_ttl=3)
    assert fresh(entry, key, 110.0, 30, failure_ttl=3)  # successes keep the long duration
    assert not fresh(failed, key, 100.5, 0.5, failure_ttl=3)  # never longer than the success's


@contextlib.asynccontextmanager
async def listener(greeting=None, close=False):
    """A TCP server on 127.0.0.1 that sends ``greeting`` (or nothing) to each client; yields its port."""

    async def serve(reader, writer):
        if greeting is not None:
            writer.write(greeting)
            await writer.drain()
        if close:
            writer.close()
            return
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.read(1)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_of_local_listeners():
    async def run():
        async with listener(b"SSH-2.0-OpenSSH_9.2\r\n") as port:
            assert await probe("127.0.0.1", port, 2) == SSHStatus(True)
        async with listener(b"HTTP/1.1 400 Bad Request\r\n\r\n", close=True) as port:
            status = await probe("127.0.0.1", port, 2)
            assert not status.ok and "not an SSH server" in status.reason
        async with listener(None) as port:  # accepts, says nothing: bounded by the timeout
            loop = asyncio.get_running_loop()
            start = loop.time()
            status = await probe("127.0.0.1", port, 0.3)
            assert not status.ok and "no SSH banner" in status.reason
            assert loop.time() - start < 1.5
        async with listener(b"x" * 5000, close=True) as port:  # endless line
            assert not (await probe("127.0.0.1", port, 2)).ok
        status = await probe("127.0.0.1", free_port(), 2)
        assert not status.ok and "nothing listens on 127.0.0.1:" in status.reason
        assert status.reason.endswith(" (connection refused)"), status.reason
        with pytest.raises(socket.gaierror):
            await probe("mlhub-no-such-host.invalid", 22, 2)

    asyncio.run(run())


class FakeSpawner:
    """What SSHHealth reads of a spawner: ``ssh_target()``, ``server.ip``, the user, name and start."""

    def __init__(self, target, ip="", started="s1", user_options=None):
        self.target = target
        self.server = SimpleNamespace(ip=ip, port=8888) if ip is not None else None
        self.user = SimpleNamespace(name="ann")
        self.name = ""
        self.orm_spawner = SimpleNamespace(started=started)
        self.user_options = user_options or {}

    def ssh_target(self):
        return self.target


def recording_connections(monkeypatch, answer=b"SSH-2.0-test\r\n"):
    """Replace asyncio.open_connection: record every (host, port) and answer ``answer`` as a server would."""
    calls = []

    async def fake_open_connection(host, port, **kwargs):
        calls.append((host, port))
        if host.endswith(".invalid"):
            raise socket.gaierror(-2, "Name or service not known")
        reader = asyncio.StreamReader(limit=kwargs.get("limit", 2**16))
        reader.feed_data(answer)
        reader.feed_eof()
        return reader, SimpleNamespace(close=lambda: None)

    monkeypatch.setattr(ssh_health.asyncio, "open_connection", fake_open_connection)
    return calls


def test_the_probe_goes_only_to_the_spawners_target(monkeypatch):
    """Attack: whatever a user put in their options (host, port, ip), the hub probes ssh_target() only, and
    the server's own address when that name does not resolve from the hub."""
    calls = recording_connections(monkeypatch)
    sneaky = {"host": "169.254.169.254", "port": 80, "ssh_host": "10.0.0.1", "hostname": "db:5432"}
    spawner = FakeSpawner(("t1-ws-ann.invalid", 22), ip="10.208.0.5", user_options=sneaky)
    assert probe_targets(spawner) == [("t1-ws-ann.invalid", 22), ("10.208.0.5", 22)]
    assert asyncio.run(SSHHealth().check(spawner)).ok
    assert calls == [("t1-ws-ann.invalid", 22), ("10.208.0.5", 22)]
    # a name that resolves: only it
    calls.clear()
    resolved = FakeSpawner(("t1-ws-ann", 2222), ip="10.208.0.5", user_options=sneaky)
    assert asyncio.run(SSHHealth().check(resolved)).ok
    assert calls == [("t1-ws-ann", 2222)]
    # no server address (or a wildcard one): no second target
    assert probe_targets(FakeSpawner(("x", 22), ip=None)) == [("x", 22)]
    assert probe_targets(FakeSpawner(("x", 22), ip="0.0.0.0")) == [("x", 22)]
    # nothing resolves: not running, and why
    calls.clear()
    status = asyncio.run(SSHHealth().check(FakeSpawner(("t1-ws-ann.invalid", 22), ip=None)))
    assert not status.ok and "cannot resolve t1-ws-ann.invalid" in status.reason


def test_results_are_cached_per_server(monkeypatch):
    calls = recording_connections(monkeypatch)
    health = SSHHealth(cache_seconds=30)
    spawner = FakeSpawner(("t1-ws-ann", 22))

    async def burst():
        return await asyncio.gather(*(health.check(spawner) for _ in range(20)))

    assert all(status.ok for status in asyncio.run(burst()))
    assert len(calls) == 1  # a burst of lookups: one probe
    assert asyncio.run(health.check(spawner)).ok and len(calls) == 1
    spawner.orm_spawner.started = "s2"  # restarted: probed anew
    assert asyncio.run(health.check(spawner)).ok and len(calls) == 2
    uncached = SSHHealth(cache_seconds=0)
    for _ in range(3):
        asyncio.run(uncached.check(spawner))
    assert len(calls) == 5


def test_health_uses_the_hubs_config():
    from traitlets.config import Config

    config = Config()
    config.SSHHealth.cache_seconds = 1.5
    settings = {"config": config}
    first = ssh_health.health(settings)
    assert first.cache_seconds == 1.5 and first.timeout_seconds == 2.0
    assert ssh_health.health(settings) is first
