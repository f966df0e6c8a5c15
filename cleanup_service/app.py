"""The cleanup service: a JupyterHub-managed tornado app with a REST API and periodic sweeps.

Routes under ``$JUPYTERHUB_SERVICE_PREFIX`` (``/services/cleanup-service/``):

====================  ======================================================================
``GET  /``            status: last and next run, counts, last error
``GET  users``        dry run: what the ``users`` sweep would remove, and why
``POST users``        remove resources of deleted users, stopped containers of deleted servers
``GET  expired``      dry run of the ``expired`` sweep
``POST expired``      stop and delete expired servers, remove their containers
``GET  metrics``      Prometheus text
====================  ======================================================================

Callers authenticate through the hub with a token, and are authorized by its scopes (never by the
owner's ``admin`` flag): ``custom:mlhub-cleanup:read`` (GET), ``custom:mlhub-cleanup:write`` (GET and
POST), or unfiltered ``admin:servers`` (what an admin's full token holds: it may stop and delete every
server anyway). Anonymous requests get 401, others 403.
"""

import asyncio
import ipaddress
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth
from tornado import web
from tornado.log import LogFormatter
from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import Application

from mlhubspawner.naming import validate_hub_name
from mlhubspawner.settings import EXECUTION_MODES

from . import planner, sweep
from .backends import backend_class
from .hub import HubClient, HubError

READ_SCOPE = "custom:mlhub-cleanup:read"
WRITE_SCOPE = "custom:mlhub-cleanup:write"
ADMIN_SCOPE = "admin:servers"  # unfiltered: stop and delete every server, which a sweep does


def may_use(scopes, write):
    """Whether a token with ``scopes`` (the hub's expanded list) may read, or also ``write``."""
    scopes = set(scopes or ())
    needed = {WRITE_SCOPE, ADMIN_SCOPE} if write else {READ_SCOPE, WRITE_SCOPE, ADMIN_SCOPE}
    return bool(scopes & needed)


SWEEPS = (planner.SWEEP_USERS, planner.SWEEP_EXPIRED)


class Status:
    """What the service did: shown by ``GET /`` and ``GET metrics``."""

    def __init__(self):
        self.started = time.time()
        self.last_run = {}  # sweep -> {"time", "duration", "counts", "result"}
        self.next_run = None
        self.last_error = None
        self.sweeps = {s: 0 for s in SWEEPS}
        self.errors = 0
        self.removed = {}  # resource kind -> count
        self.seen = {}  # resource kind -> count in the last listing
        self.duration_sum = 0.0
        self.hub_calls = 0

    def record(self, name, actions, result, duration, resources_seen):
        self.sweeps[name] += 1
        self.duration_sum += duration
        self.errors += result["failed"]
        self.seen = resources_seen
        for action in actions:
            if action.kind in (planner.REMOVE, planner.DELETE_SERVER):
                kind = action.resource.kind if action.resource else "server"
                self.removed[kind] = self.removed.get(kind, 0) + 1
        if result["errors"]:
            self.last_error = result["errors"][-1]
        self.last_run[name] = {
            "time": time.time(),
            "duration_seconds": round(duration, 3),
            "counts": planner.summarize(actions),
            "done": result["done"],
            "failed": result["failed"],
        }

    def to_dict(self):
        return {
            "started": self.started,
            "last_run": self.last_run,
            "next_run": self.next_run,
            "last_error": self.last_error,
            "sweeps": self.sweeps,
            "removed": self.removed,
        }

    def metrics(self):
        lines = [
            "# HELP mlhub_cleanup_sweeps_total Sweeps run, by sweep.",
            "# TYPE mlhub_cleanup_sweeps_total counter",
            *(f'mlhub_cleanup_sweeps_total{{sweep="{k}"}} {v}' for k, v in self.sweeps.items()),
            "# HELP mlhub_cleanup_removed_total Resources removed (servers deleted), by kind.",
            "# TYPE mlhub_cleanup_removed_total counter",
            *(f'mlhub_cleanup_removed_total{{kind="{k}"}} {v}' for k, v in sorted(self.removed.items())),
            "# HELP mlhub_cleanup_resources Resources of this hub seen in the last listing, by kind.",
            "# TYPE mlhub_cleanup_resources gauge",
            *(f'mlhub_cleanup_resources{{kind="{k}"}} {v}' for k, v in sorted(self.seen.items())),
            "# HELP mlhub_cleanup_hub_api_calls_total Requests made to the Hub API.",
            "# TYPE mlhub_cleanup_hub_api_calls_total counter",
            f"mlhub_cleanup_hub_api_calls_total {self.hub_calls}",
            "# HELP mlhub_cleanup_errors_total Items that failed to clean up.",
            "# TYPE mlhub_cleanup_errors_total counter",
            f"mlhub_cleanup_errors_total {self.errors}",
            "# HELP mlhub_cleanup_sweep_seconds_sum Total time spent sweeping.",
            "# TYPE mlhub_cleanup_sweep_seconds_sum counter",
            f"mlhub_cleanup_sweep_seconds_sum {self.duration_sum:.3f}",
        ]
        return "\n".join(lines) + "\n"


class Cleaner:
    """Plans and runs sweeps, one at a time."""

    def __init__(self, hub, backend, rules, log, concurrency=8):
        self.hub = hub
        self.backend = backend
        self.rules = rules
        self.log = log
        self.concurrency = concurrency
        self.status = Status()
        self.lock = asyncio.Lock()

    async def report(self, name):
        actions, _ = await sweep.plan(name, self.hub, self.backend, self.rules)
        return planner.as_report(name, actions, sweep.utcnow())

    async def run(self, name):
        async with self.lock:
            start = time.monotonic()
            try:
                actions, resources = await sweep.plan(name, self.hub, self.backend, self.rules)
                result = await sweep.execute(actions, self.hub, self.backend, self.log, self.concurrency)
            except Exception as e:
                self.status.last_error = f"{name}: {e}"
                self.status.errors += 1
                raise
            seen = {}
            for resource in resources:
                seen[resource.kind] = seen.get(resource.kind, 0) + 1
            self.status.record(name, actions, result, time.monotonic() - start, seen)
            self.log.info(
                "Sweep %s: %s, %d done, %d failed",
                name,
                planner.summarize(actions),
                result["done"],
                result["failed"],
            )
            report = planner.as_report(name, actions, sweep.utcnow())
            report.update(done=result["done"], failed=result["failed"], errors=result["errors"])
            return report

    async def periodic(self, interval, first_delay=30):
        """Run both sweeps soon after start, then every ``interval`` seconds, forever.

        Starting early means a hub restarted more often than ``interval`` still gets swept.
        Errors are logged, never fatal.
        """
        delay = min(interval, first_delay)
        while True:
            self.status.next_run = time.time() + delay
            await asyncio.sleep(delay)
            delay = interval
            for name in SWEEPS:
                try:
                    await self.run(name)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 (the loop must never die)
                    self.log.exception("Sweep %s failed; the next one runs in %ss", name, interval)


class APIHandler(web.RequestHandler):
    """JSON errors, and authorization through the hub."""

    write_methods = ("POST",)

    def initialize(self, cleaner, hub_auth):
        self.cleaner = cleaner
        self.hub_auth = hub_auth

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.finish(json.dumps({"status": status_code, "message": message}))

    async def prepare(self):
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            raise web.HTTPError(401, "authenticate with a hub token or cookie")
        if not may_use(model.get("scopes"), write=self.request.method in self.write_methods):
            raise web.HTTPError(
                403, f"{model.get('kind', 'user')} {model.get('name')} may not use the cleanup service"
            )
        self.current_user = model

    def json_body(self):
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return body


class StatusHandler(APIHandler):
    def get(self):
        data = self.cleaner.status.to_dict()
        data["rules"] = vars(self.cleaner.rules)
        self.finish(json.dumps(data))


class SweepHandler(APIHandler):
    async def get(self, name):
        self.finish(json.dumps(await self._do(self.cleaner.report, name)))

    async def post(self, name):
        body = self.json_body()
        unknown = set(body) - {"dry_run"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        if not isinstance(body.get("dry_run", False), bool):
            raise web.HTTPError(400, "dry_run must be true or false")
        action = self.cleaner.report if body.get("dry_run") else self.cleaner.run
        self.cleaner.log.info(
            "%s asked for the %s sweep (dry_run=%s)",
            self.current_user.get("name"),
            name,
            bool(body.get("dry_run")),
        )
        self.finish(json.dumps(await self._do(action, name)))

    async def _do(self, action, name):
        try:
            return await action(name)
        except HubError as e:
            raise web.HTTPError(502, f"the hub did not answer completely, nothing was removed: {e}") from None


class MetricsHandler(APIHandler):
    def set_default_headers(self):
        self.set_header("Content-Type", "text/plain; version=0.0.4")

    def get(self):
        self.cleaner.status.hub_calls = self.cleaner.hub.calls
        self.finish(self.cleaner.status.metrics())


class NotFoundHandler(APIHandler):
    async def prepare(self):
        raise web.HTTPError(404, "no such endpoint")


def create_application(cleaner, hub_auth, prefix="/"):
    """The tornado application (a factory, so tests can build one with fakes)."""
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    args = {"cleaner": cleaner, "hub_auth": hub_auth}
    return web.Application(
        [
            (prefix, StatusHandler, args),
            (prefix + r"(users|expired)", SweepHandler, args),
            (prefix + "metrics", MetricsHandler, args),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
    )


def listen_address(value):
    """The IP address the API listens on (``listen``, ``$MLHUB_CLEANUP_LISTEN``), or ValueError naming it."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"MLHUB_CLEANUP_LISTEN={value!r}: expected an IP address, e.g. 0.0.0.0") from None


class CleanupService(Application):
    """``python -m cleanup_service``: started by JupyterHub as the ``cleanup-service`` service."""

    name = "mlhub-cleanup"
    description = "Removes expired ML Hub workspaces and what deleted users left behind."
    _log_formatter_cls = LogFormatter

    @default("log_format")
    def _default_log_format(self):
        # tornado's LogFormatter knows %(color)s, not traitlets' %(highlevel)s
        return "%(color)s[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s %(module)s:%(lineno)d]%(end_color)s %(message)s"

    @default("log_level")
    def _default_log_level(self):
        return "INFO"  # sweeps and who asked for them are the audit trail

    hub_name = Unicode(help="Only resources labelled mlhub.origin=<hub_name> are touched ($HUB_NAME).").tag(
        config=True
    )
    execution_mode = Unicode(help="docker (alias local) or k8s ($EXECUTION_MODE).").tag(config=True)
    interval = Int(help="Seconds between periodic sweeps; -1 disables them ($CLEANUP_INTERVAL_SECONDS).").tag(
        config=True
    )
    min_age = Float(help="Never touch resources younger than this ($CLEANUP_MIN_AGE_SECONDS).").tag(
        config=True
    )
    volume_grace = Float(
        help="Keep orphaned volumes this long before removing them ($CLEANUP_VOLUME_GRACE_SECONDS)."
    ).tag(config=True)
    concurrency = Int(8, help="Removals and hub requests running at once.").tag(config=True)
    state_dir = Unicode(help="Where the service keeps its small state file ($MLHUB_DATA_DIR).").tag(
        config=True
    )
    listen = Unicode(
        help="Address the REST API listens on ($MLHUB_CLEANUP_LISTEN): loopback, where the proxy runs beside "
        "the hub; 0.0.0.0 in the helm chart, whose proxy pod reaches it through the hub's Service."
    ).tag(config=True)

    user_namespaces = Bool(
        False,
        help="Kubernetes: also clean the hub's namespaces of users (KubeSpawner's enable_user_namespaces; the "
        "hub sets it from the spawner's config): objects in every namespace labelled mlhub.origin=<hub_name>.",
    ).tag(config=True)

    @default("hub_name")
    def _default_hub_name(self):
        return os.environ.get("HUB_NAME", "mlhub")

    @default("execution_mode")
    def _default_mode(self):
        return os.environ.get("EXECUTION_MODE", "docker")

    @default("interval")
    def _default_interval(self):
        return int(os.environ.get("CLEANUP_INTERVAL_SECONDS", 3600))

    @default("min_age")
    def _default_min_age(self):
        return float(os.environ.get("CLEANUP_MIN_AGE_SECONDS", 600))

    @default("volume_grace")
    def _default_volume_grace(self):
        return float(os.environ.get("CLEANUP_VOLUME_GRACE_SECONDS", 7 * 86400))

    @default("state_dir")
    def _default_state_dir(self):
        return os.environ.get("MLHUB_DATA_DIR", ".")

    @default("listen")
    def _default_listen(self):
        return os.environ.get("MLHUB_CLEANUP_LISTEN", "127.0.0.1")

    def build(self):
        """The cleaner with its real hub client and backend."""
        validate_hub_name(self.hub_name)
        mode = EXECUTION_MODES.get(self.execution_mode.lower())
        if mode is None:
            raise ValueError(f"EXECUTION_MODE={self.execution_mode!r}: expected docker or k8s")
        hub = HubClient(
            os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], self.concurrency
        )
        state_path = Path(self.state_dir) / f"cleanup-{self.hub_name}.json"
        extra = {"user_namespaces": True} if self.user_namespaces else {}
        if extra and mode != "k8s":
            raise ValueError("CleanupService.user_namespaces needs EXECUTION_MODE=k8s")
        backend = backend_class(mode)(self.hub_name, self.log, state_path=state_path, **extra)
        rules = planner.Rules(self.hub_name, self.min_age, self.volume_grace)
        return Cleaner(hub, backend, rules, self.log, self.concurrency)

    def start(self):
        try:
            asyncio.run(self.serve())
        except KeyboardInterrupt:
            self.log.info("Cleanup service stopped")

    async def serve(self):
        address = listen_address(self.listen)  # checked before anything starts
        cleaner = self.build()
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8002"))
        app = create_application(cleaner, HubAuth(), os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
        # the URL's port on `listen` (loopback unless told), whatever host the URL names
        self.http_server = app.listen(url.port, address=address)
        self.log.info(
            "Cleanup service for hub %s on %s:%s, every %ss", self.hub_name, address, url.port, self.interval
        )
        if self.interval > 0:
            periodic = asyncio.create_task(cleaner.periodic(self.interval))
        try:
            await asyncio.Event().wait()
        finally:
            if self.interval > 0:
                periodic.cancel()
            await cleaner.backend.close()


def main(argv=None):
    CleanupService.launch_instance(argv)
