"""What runs inside the hub image and on which ports, and the config files that say so (pure).

One public port (8080) carries HTTP(S) and SSH:

* TLS on:  nginx ``stream`` on :8080 reads the TLS ClientHello (``ssl_preread``). TLS goes to nginx's
  HTTPS server (with the PROXY protocol, so the hub sees the client's address); anything else goes to
  sslh, which hands SSH to sshd and plain HTTP to a server that redirects to HTTPS.
* TLS off: sslh on :8080 hands SSH to sshd and everything else to nginx's HTTP server.

Everything behind the public port listens on loopback only; the hub API (8081) is the one port a
workspace can reach, on the user networks the hub container joins.

Started as root (Docker mode), supervisord runs each program as its own account. Started as another user
(``unprivileged``: the chart's pods under Pod Security ``restricted``), everything runs as that user: no
``user`` switches, nginx's pid and temp files in the run directory, and sshd can only log in the account it
runs as, so the proxy pod runs as the jump account ``tunnel`` itself.
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..base_url import hub_path

PUBLIC_PORT = 8080
HUB_PORT = 8081
CHP_PORT = 8000
CHP_API_PORT = 8001
HTTP_PORT = 8090  # nginx, plain HTTP (TLS off)
REDIRECT_PORT = 8091  # nginx, plain HTTP → HTTPS redirect (TLS on)
HTTPS_PORT = 8443  # nginx, TLS with the PROXY protocol
SSLH_PORT = 8444  # sslh behind the stream splitter (TLS on)
PLAIN_PORT = 8445  # stream server that drops the PROXY header before sslh (TLS on)
SSHD_PORT = 2222
TUNNEL_USER = "tunnel"
KEYS_USER = "mlhub-keys"

RUN_DIR = Path("/run/mlhub")
TEMPLATES = Path(__file__).with_name("templates")
_jinja = Environment(
    loader=FileSystemLoader(TEMPLATES),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


@dataclass(frozen=True)
class Layout:
    """The processes and listeners of one hub container, decided from the settings."""

    ssl: bool
    nginx: bool
    ssh: bool
    jhub: bool
    chp: bool
    listen: tuple = ("0.0.0.0",)  # public addresses (the container's front networks), plus loopback
    chp_args: tuple = ()
    hub_url: str = f"http://127.0.0.1:{HUB_PORT}"  # the hub API: here, or the hub's Service (chart)
    proxy_api_ip: str = "127.0.0.1"  # where the proxy's API listens: loopback, or the pod (chart)
    cert: str = ""  # where nginx reads the pair (a validated copy, see cert_reload.py)
    key: str = ""
    cert_source: str = ""  # the directory the watcher looks at: mounted (operator's) or generated
    cert_self_signed: bool = False  # the generated pair: the watcher renews it before it expires
    cert_reload_seconds: int = 60
    run_dir: str = str(RUN_DIR)
    data_dir: str = "/data"
    host_keys: tuple = field(default_factory=tuple)
    unprivileged: bool = False  # not started as root: every program runs as the current user
    base_url: str = "/"  # JupyterHub's base_url as MLHUB_BASE_URL says (mlhubspawner/base_url.py)

    @property
    def sslh(self):
        """Whether sslh runs: it tells SSH from HTTP on a plain connection."""
        return self.nginx and self.ssh

    @property
    def public_listen(self):
        if "0.0.0.0" in self.listen:  # already covers loopback: a second bind of the port would fail
            return ("0.0.0.0",)
        return tuple(dict.fromkeys((*self.listen, "127.0.0.1")))

    @property
    def sslh_listen(self):
        """Where sslh listens: the public port (TLS off) or a loopback port behind the splitter."""
        if self.ssl:
            return (f"127.0.0.1:{SSLH_PORT}",)
        return tuple(f"{a}:{PUBLIC_PORT}" for a in self.public_listen)

    @property
    def http_target(self):
        """Where sslh sends plain HTTP: the redirect to HTTPS (TLS on) or the HTTP server."""
        return f"127.0.0.1:{REDIRECT_PORT if self.ssl else HTTP_PORT}"


def layout_from_settings(
    settings,
    listen=("0.0.0.0",),
    cert="",
    key="",
    host_keys=(),
    data_dir="/data",
    cert_watch=None,
    unprivileged=False,
):
    """``cert_watch``: ``(source directory, self-signed, seconds)`` of the certificate watcher, or None.

    ``unprivileged``: the entrypoint does not run as root (``os.geteuid() != 0``).
    """
    if not (settings.start_nginx or settings.start_ssh or settings.start_jhub or settings.start_chp):
        raise ValueError("START_NGINX, START_SSH, START_JHUB and START_CHP are all off: nothing to run")
    if settings.ssl_enabled and settings.start_nginx and not (cert and key):
        raise ValueError("SSL_ENABLED=true needs a certificate and key")
    return Layout(
        ssl=settings.ssl_enabled,
        nginx=settings.start_nginx,
        ssh=settings.start_ssh,
        jhub=settings.start_jhub,
        chp=settings.start_chp,
        listen=tuple(listen),
        chp_args=tuple(settings.additional_args),
        hub_url=settings.hub_service_url or Layout.hub_url,
        proxy_api_ip=settings.proxy_api_listen,
        cert=cert,
        key=key,
        cert_source=cert_watch[0] if cert_watch else "",
        cert_self_signed=bool(cert_watch and cert_watch[1]),
        cert_reload_seconds=cert_watch[2] if cert_watch else Layout.cert_reload_seconds,
        host_keys=tuple(host_keys),
        data_dir=data_dir,
        unprivileged=unprivileged,
        base_url=settings.base_url,
    )


def chp_command(layout):
    """configurable-http-proxy as its own process (START_CHP), the hub behind nginx."""
    return [
        "configurable-http-proxy",
        "--ip=127.0.0.1",
        f"--port={CHP_PORT}",
        f"--api-ip={layout.proxy_api_ip}",
        f"--api-port={CHP_API_PORT}",
        # the hub answers while routes are missing (after a restart of the proxy alone)
        f"--default-target={layout.hub_url}",
        f"--error-target={layout.hub_url}{hub_path(layout.base_url, 'error')}",
        "--no-x-forward",
        *layout.chp_args,
    ]


def sslh_command(layout):
    args = ["sslh", "--foreground", "--numeric", "--timeout=3"]
    args += [f"--listen={a}" for a in layout.sslh_listen]
    args += [
        f"--ssh=127.0.0.1:{SSHD_PORT}",
        f"--http={layout.http_target}",
        f"--anyprot={layout.http_target}",
    ]
    return args


_UNSAFE = re.compile(r"([^\w@+=:,./-])")


def _supervisor_command(args):
    # supervisord splits with shlex, cuts " ;" / " #" comments even inside quotes, and expands
    # %(...)s: escape every special character with a backslash, and double every %
    return " ".join(_UNSAFE.sub(r"\\\1", a) if a else "''" for a in args).replace("%", "%%")


def cert_reload_command(layout):
    """The certificate watcher (cert_reload.py): reloads nginx when the certificate changes."""
    args = [
        sys.executable,
        "-m",
        "mlhubspawner.front.cert_reload",
        f"--source={layout.cert_source}",
        f"--target={Path(layout.cert).parent}",
        f"--nginx-conf={layout.run_dir}/nginx.conf",
        f"--interval={layout.cert_reload_seconds}",
    ]
    args += ["--nginx-stderr"] if layout.unprivileged else []
    return args + (["--self-signed"] if layout.cert_self_signed else [])


def nginx_command(layout):
    # -e stderr: not root, nginx could not open its built-in error log (before it reads the config)
    log = ["-e", "stderr"] if layout.unprivileged else []
    return ["nginx", *log, "-c", f"{layout.run_dir}/nginx.conf", "-g", "daemon off;"]


def programs(layout, hub_command):
    """The supervisord programs: ``[(name, command, user)]``, in start order.

    ``user`` is None when unprivileged: the program runs as the current user.
    """
    result = []
    if layout.jhub:
        result.append(("jupyterhub", hub_command, "root"))
    if layout.chp:
        result.append(("configurable-http-proxy", chp_command(layout), "nobody"))
    if layout.ssh:
        result.append(("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", f"{layout.run_dir}/sshd_config"], "root"))
    if layout.nginx:
        result.append(("nginx", nginx_command(layout), "root"))
    if layout.sslh:
        result.append(("sslh", sslh_command(layout), "sslh"))
    if layout.nginx and layout.ssl and layout.cert_source:
        result.append(("cert-reload", cert_reload_command(layout), "root"))
    if layout.unprivileged:
        return [(name, command, None) for name, command, _ in result]
    return result


def render_supervisord(layout, hub_command):
    progs = [(n, _supervisor_command(c), u) for n, c, u in programs(layout, hub_command)]
    return _jinja.get_template("supervisord.conf.j2").render(layout=layout, programs=progs)


def render_nginx(layout):
    return _jinja.get_template("nginx.conf.j2").render(
        layout=layout,
        public_port=PUBLIC_PORT,
        chp_port=CHP_PORT,
        http_port=HTTP_PORT,
        https_port=HTTPS_PORT,
        redirect_port=REDIRECT_PORT,
        plain_port=PLAIN_PORT,
        sslh_port=SSLH_PORT,
    )


def render_sshd(layout, keys_command):
    return _jinja.get_template("sshd_config.j2").render(
        layout=layout,
        port=SSHD_PORT,
        tunnel_user=TUNNEL_USER,
        # sshd not root runs the lookup as itself: the tunnel account (the proxy pod runs as it)
        keys_user=TUNNEL_USER if layout.unprivileged else KEYS_USER,
        keys_command=keys_command,
    )
