"""Whether a running workspace's own sshd answers, as the hub sees it.

The hub hands out ssh configs and lets its SSH front forward only to workspaces whose sshd answers: a
short TCP connection to the spawner's own ``ssh_target()`` that must read an SSH banner (``SSH-2.0-``),
so another listener on the port does not count. Results are cached per server for a short time, so a
burst of front lookups costs one probe. The address probed is only ever the spawner's: never anything
of the request.
"""

import asyncio
import socket
import time
from dataclasses import dataclass

from traitlets import Float, Integer
from traitlets.config import LoggingConfigurable

BANNER_PREFIXES = (b"SSH-2.0-", b"SSH-1.99-")  # RFC 4253 4.2; 1.99: a server speaking 2.0 and 1
MAX_LINE = 255  # RFC 4253: the identification line, CR LF included
MAX_LINES = 5  # lines a server may send before its identification (RFC 4253 allows some)
NOT_RUNNING_HINT = "images without sshd cannot be reached over SSH"


@dataclass(frozen=True)
class SSHStatus:
    """The answer of one probe: ``ok`` and, when not, why (for humans)."""

    ok: bool
    reason: str = ""


def banner_status(lines, target):
    """The status of a server that sent ``lines`` (bytes, first ones first) on connection to ``target``."""
    host, port = target
    for line in lines[:MAX_LINES]:
        if line.startswith(BANNER_PREFIXES):
            return SSHStatus(True)
        if line.startswith(b"SSH-"):
            version = line.rstrip(b"\r\n").decode("ascii", "replace")[:60]
            return SSHStatus(False, f"{host}:{port} speaks an unsupported SSH version ({version})")
    if not any(line.strip() for line in lines):
        return SSHStatus(False, f"{host}:{port} accepted the connection but sent no SSH banner")
    return SSHStatus(False, f"{host}:{port} answers, but it is not an SSH server")


def fresh(entry, key, now, ttl, failure_ttl=None):
    """Whether a cached ``(key, checked_at, status)`` answers for ``key`` at ``now`` (monotonic seconds):
    a success for ``ttl`` seconds, a failure for ``failure_ttl`` (at most ``ttl``)."""
    if entry is None:
        return False
    cached_key, checked_at, status = entry
    if not status.ok and failure_ttl is not None:
        ttl = min(ttl, failure_ttl)
    return ttl > 0 and cached_key == key and 0 <= now - checked_at < ttl


def probe_targets(spawner):
    """``[(host, port), ...]`` to try for ``spawner``'s sshd: its ``ssh_target()``, then, should that name
    not resolve from the hub (a hub run on the Docker host rather than on the user networks), the address
    the hub reaches the same workspace's Jupyter server at, with the same port. Nothing else."""
    host, port = spawner.ssh_target()
    targets = [(str(host), int(port))]
    server = getattr(spawner, "server", None)
    ip = getattr(server, "ip", "") if server is not None else ""
    if ip and ip not in ("0.0.0.0", "::", str(host)):
        targets.append((str(ip), int(port)))
    return targets


async def probe(host, port, timeout):
    """Connect to ``host:port`` and read its first lines (bounded by ``timeout`` seconds in all).

    Raises ``socket.gaierror`` when ``host`` does not resolve; other failures are an ``SSHStatus``.
    """
    deadline = time.monotonic() + timeout
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_LINE + 1), timeout
        )
    except socket.gaierror:
        raise
    except TimeoutError:
        return SSHStatus(False, f"{host}:{port} did not accept a connection within {timeout:g} s")
    except OSError as e:
        why = (
            "connection refused" if isinstance(e, ConnectionRefusedError) else e.strerror or type(e).__name__
        )
        return SSHStatus(False, f"nothing listens on {host}:{port} ({why})")
    lines = []
    try:
        while len(lines) < MAX_LINES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), remaining)
            except asyncio.IncompleteReadError as e:
                lines.append(e.partial)
                break
            except asyncio.LimitOverrunError:
                lines.append(b"?")  # a line longer than any identification line
                break
            lines.append(line)
            if line.startswith(b"SSH-"):
                break
    except TimeoutError:
        pass
    except OSError as e:
        return SSHStatus(False, f"{host}:{port} closed the connection ({e.strerror or e})")
    finally:
        writer.close()
    if not lines:
        return SSHStatus(False, f"{host}:{port} accepted the connection but sent no SSH banner")
    return banner_status(lines, (host, port))


class SSHHealth(LoggingConfigurable):
    """Probes of workspaces' sshd for the SSH keys API, cached per server."""

    timeout_seconds = Float(
        2.0,
        help="""Seconds the hub waits for a workspace's sshd to accept a connection and send its banner.""",
    ).tag(config=True)

    cache_seconds = Float(
        30.0,
        help="""Seconds a probe's result stands for its server (0: probe at every request).

        A workspace restarted since is probed anew at once.
        """,
    ).tag(config=True)

    failure_cache_seconds = Float(
        3.0,
        help="""Seconds a failed probe stands (at most ``cache_seconds``): short, so that a workspace whose sshd
        was still starting when first asked is offered soon after.""",
    ).tag(config=True)

    max_entries = Integer(
        10000, help="""Most servers whose results are kept; older results are dropped beyond it."""
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._cache = {}
        self._pending = {}

    @staticmethod
    def key(spawner):
        """The cache key of ``spawner``: its server, start time and targets (a restart is a new key)."""
        orm = getattr(spawner, "orm_spawner", None)
        started = getattr(orm, "started", None)
        return (spawner.user.name, spawner.name, str(started), tuple(probe_targets(spawner)))

    async def check(self, spawner):
        """The :class:`SSHStatus` of ``spawner``'s sshd, from the cache when fresh."""
        key = self.key(spawner)
        slot = key[:2]
        if fresh(
            self._cache.get(slot), key, time.monotonic(), self.cache_seconds, self.failure_cache_seconds
        ):
            return self._cache[slot][2]
        pending = self._pending.get(key)
        if pending is None:  # one probe at a time per server: concurrent lookups share it
            pending = self._pending[key] = asyncio.ensure_future(self._probe(key[3]))
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        status = await asyncio.shield(pending)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[slot] = (key, time.monotonic(), status)
        if not status.ok:
            self.log.info("SSH: %s/%s: %s", spawner.user.name, spawner.name or "default", status.reason)
        return status

    async def _probe(self, targets):
        unresolved = []
        for host, port in targets:
            try:
                return await probe(host, port, self.timeout_seconds)
            except socket.gaierror as e:
                unresolved.append(f"{host} ({e.strerror or e})")
        return SSHStatus(False, "the hub cannot resolve " + ", ".join(unresolved))


def health(settings, log=None):
    """The application's :class:`SSHHealth`, made on first use with the hub's config (``settings``:
    the tornado application's settings, where JupyterHub puts its ``config``)."""
    found = settings.get("mlhub_ssh_health")
    if found is None:
        kwargs = {"config": settings["config"]} if settings.get("config") is not None else {}
        if log is not None:
            kwargs["log"] = log
        found = settings["mlhub_ssh_health"] = SSHHealth(**kwargs)
    return found
