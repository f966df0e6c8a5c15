"""``mlhub-entrypoint``: prepare the hub container, render its config files, exec supervisord.

Runs under tini at every container start. Config files are rendered from templates into
``/run/mlhub`` (never edited in place); data (database, cookie secret, SSH host keys, generated
certificate, SSH key registry) lives in ``$MLHUB_DATA_DIR`` (``/data``).

As root (Docker mode) each program runs as its own account. As any other user (the chart's pods: read-only
root filesystem, Pod Security ``restricted``) everything runs as that user and nothing is written outside
``/run/mlhub``, ``/tmp`` and the data directory; sshd then needs that user to be the jump account ``tunnel``.
"""

import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from pathlib import Path

from ..base_url import PUBLISHED, hub_path
from ..files import write_atomic
from ..settings import SettingsError, load_settings
from ..sshkeys_store import read_or_create_token
from . import layout as L

HUB_CONFIG = os.environ.get("MLHUB_HUB_CONFIG", "/etc/mlhub/jupyterhub_config.py")
SSL_DIR = os.environ.get("MLHUB_SSL_DIR", "/resources/ssl")
KEYS_COMMAND = "/usr/local/libexec/mlhub/front-authorized-keys"
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
LOOKUP_PATH = "api/mlhub/ssh/authorized-keys"  # under the hub's prefix (<base_url>hub/)


def log(message):
    print(f"mlhub-entrypoint: {message}", flush=True)


def ssh_host_keys(directory):
    """The front sshd's host keys, made once and kept in the data volume (clients' known_hosts stay valid)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = []
    for kind in HOST_KEY_TYPES:
        path = directory / f"ssh_host_{kind}_key"
        if not path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(path)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
            log(f"generated SSH host key {path}")
        paths.append(str(path))
    return paths


def whoami():
    """``uid N (name) gid M`` of this process, for error messages."""
    uid = os.geteuid()
    try:
        name = f" ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        name = ""
    return f"uid {uid}{name} gid {os.getegid()}"


def unreadable(path):
    """Why ``path`` cannot be read by this process, or None when it can (or does not exist)."""
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror or str(e)


def check_readable(paths):
    """Refuse to start naming the mounted files this process cannot read (a Secret's mode or group)."""
    problems = [f"{p} ({why})" for p in paths if (why := unreadable(p))]
    if problems:
        raise SystemExit(
            f"ML Hub cannot start: cannot read {', '.join(problems)} as {whoami()}. Mount them readable "
            "by this user or its group (Kubernetes: the pod's securityContext.fsGroup and the volume's "
            "defaultMode, e.g. 0440)"
        )


def mounted_host_keys(source, target):
    """Host keys handed in by the chart (a Secret): private copies owned by this process, as sshd requires."""
    keys = sorted(Path(source).glob("ssh_host_*_key"))
    if not keys:
        raise SystemExit(
            f"ML Hub cannot start: MLHUB_SSH_HOST_KEYS_DIR={source} holds no ssh_host_*_key file "
            f"readable by {whoami()}"
        )
    check_readable(keys)
    target = Path(target)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = []
    for key in keys:
        copy = target / key.name
        write_atomic(copy, key.read_text(), 0o600)
        paths.append(str(copy))
    return paths


def check_tunnel_account(uid, gid, tunnel):
    """Not root, sshd logs in only the account it runs as: that must be the jump account ``tunnel``.

    ``tunnel`` is its passwd entry (None when missing). Raises SystemExit naming the fix.
    """
    if tunnel is not None and (uid, gid) == (tunnel.pw_uid, tunnel.pw_gid):
        return
    ids = f"uid {tunnel.pw_uid} gid {tunnel.pw_gid}" if tunnel is not None else "missing from this image"
    raise SystemExit(
        f"ML Hub cannot start: START_SSH=true, but this container runs as uid {uid} gid {gid}. Not root, sshd "
        f"can only log in the account it runs as, which must be the SSH jump account {L.TUNNEL_USER!r} "
        f"({ids}). Run the proxy as that account (Helm: proxy.containerSecurityContext.runAsUser and "
        "runAsGroup), or set START_SSH=false"
    )


def tunnel_account():
    try:
        return pwd.getpwnam(L.TUNNEL_USER)
    except KeyError:
        return None


def home_dir(env, unprivileged):
    """The HOME programs get: kept as root or when writable, else /tmp (not root, read-only root filesystem)."""
    home = env.get("HOME", "")
    if not unprivileged or (home and os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)):
        return home
    return "/tmp"


def check_run_dir(run_dir):
    """The run directory must be writable (not root: an emptyDir or tmpfs mounted there)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SystemExit(
            f"ML Hub cannot start: {run_dir} is not writable by {whoami()} ({e.strerror or e}). Mount a "
            f"writable directory there (Kubernetes: an emptyDir; Docker: --tmpfs {run_dir})"
        ) from None


IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def check_ip_forward(path=IP_FORWARD):
    """Refuse to start when the container forwards IP packets between its networks.

    The hub container sits on every user network: with forwarding on, a workspace that sends
    packets to the hub's address could reach other users' networks through it.
    """
    try:
        value = Path(path).read_text().strip()
    except OSError as e:
        log(f"WARNING: cannot read {path} ({e}); make sure IP forwarding is off in this container")
        return
    if value != "0":
        raise SystemExit(
            f"ML Hub cannot start: IP forwarding is on in the hub container ({path} = {value}), so "
            "workspaces could route through it into other users' networks. Start the container with "
            "--sysctl net.ipv4.ip_forward=0"
        )


def private_data_dir(data_dir):
    """The data directory and the files in it readable by their owner only (the hub: root).

    The front's other accounts (nginx's workers, sslh, the SSH tunnel account, the key lookup)
    never read the database, tokens or keys. Left as is where this process does not own them.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    uid = os.geteuid()
    for path in (data_dir, *data_dir.iterdir()):
        info = path.lstat()
        if info.st_uid != uid or not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            continue
        if info.st_mode & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)


def docker_front(settings):
    """Join the user networks; return (container id, public listen addresses)."""
    import docker  # only the Docker mode needs the engine

    from .container import front_addresses, join_front_network, join_user_networks, own_container_id

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as e:
        raise SystemExit(
            "ML Hub cannot start: no Docker engine answers. Mount its socket: "
            f"-v /var/run/docker.sock:/var/run/docker.sock ({e})"
        ) from None
    container_id = own_container_id()
    try:
        # the front network first: it stays the gateway network (where -p publishes) whatever
        # the user networks are called; then the addresses, once every network is joined
        join_front_network(client, container_id, settings.hub_name, log=log)
        joined = join_user_networks(client, container_id, settings.hub_name, log=log)
        listen = front_addresses(client, container_id, joined)
    except docker.errors.NotFound:
        raise SystemExit(
            f"ML Hub cannot start: this container ({container_id!r}) is unknown to the engine"
        ) from None
    except ValueError as e:
        raise SystemExit(f"ML Hub cannot start: {e}") from None
    except docker.errors.APIError as e:
        raise SystemExit(f"ML Hub cannot start: the Docker engine refused: {e.explanation or e}") from None
    finally:
        client.close()
    return container_id, listen


def front_certificate(settings, listen, data_dir, run_dir, env):
    """The mounted or generated pair, installed where nginx reads it; returns (cert, key, watch).

    ``watch`` is ``(source directory, self-signed, seconds)`` for the certificate watcher.
    """
    from .cert_reload import check_pair, install, parse_interval
    from .certs import ensure_certificate

    dns = ["localhost", settings.hub_name, socket.gethostname(), *settings.public_hostnames]
    ips = ["127.0.0.1", *(a for a in listen if a != "0.0.0.0")]
    check_readable([Path(SSL_DIR) / "cert.crt", Path(SSL_DIR) / "cert.key"])
    try:
        interval = parse_interval(env.get("MLHUB_CERT_RELOAD_SECONDS"))
        cert, key = ensure_certificate(SSL_DIR, data_dir / "ssl", settings.hub_name, dns, ips, log=log)
        pair = Path(cert).read_bytes(), Path(key).read_bytes()
        check_pair(*pair)  # the bytes nginx gets (the files may have changed since)
    except ValueError as e:
        raise SystemExit(f"ML Hub cannot start: TLS certificate: {e}") from None
    source = Path(cert).parent
    served_cert, served_key = install(run_dir / "tls", *pair)
    return str(served_cert), str(served_key), (str(source), source != Path(SSL_DIR), interval)


def prepare(settings, env, unprivileged=None):
    if unprivileged is None:
        unprivileged = os.geteuid() != 0
    run_dir = L.RUN_DIR
    if unprivileged:
        if settings.start_ssh:
            check_tunnel_account(os.geteuid(), os.getegid(), tunnel_account())
        env["HOME"] = home_dir(env, unprivileged)
        check_run_dir(run_dir)
    if settings.start_jhub:
        from ..chart_values import values_path

        check_readable([HUB_CONFIG, values_path(env), settings.user_config])
    data_dir = Path(settings.data_dir)
    private_data_dir(data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    listen = ["0.0.0.0"]
    if settings.start_jhub and settings.execution_mode == "docker":
        check_ip_forward()
        container_id, addresses = docker_front(settings)
        listen = addresses or listen
        env["MLHUB_HUB_CONTAINER"] = container_id
        env["MLHUB_HUB_ADDRESS"] = settings.hub_name
        log(f"container {container_id[:12]}; public port {L.PUBLIC_PORT} on {', '.join(listen)}")

    cert = key = ""
    cert_watch = None
    if settings.ssl_enabled and settings.start_nginx:
        cert, key, cert_watch = front_certificate(settings, listen, data_dir, run_dir, env)

    host_keys = ()
    if settings.start_ssh:
        mounted = os.environ.get("MLHUB_SSH_HOST_KEYS_DIR")
        host_keys = (
            mounted_host_keys(mounted, run_dir / "ssh") if mounted else ssh_host_keys(data_dir / "ssh")
        )
    try:
        layout = L.layout_from_settings(
            settings,
            listen=listen,
            cert=cert,
            key=key,
            host_keys=host_keys,
            data_dir=str(data_dir),
            cert_watch=cert_watch,
            unprivileged=unprivileged,
        )
    except ValueError as e:
        raise SystemExit(f"ML Hub cannot start: {e}") from None

    # MLHUB_BASE_URL's value; the hub in this container rewrites it with the one it runs with (base_url.py)
    write_atomic(run_dir / PUBLISHED.name, layout.base_url + "\n", 0o644)
    hub_command = [sys.executable, "-m", "jupyterhub", "-f", HUB_CONFIG, "--upgrade-db"]
    write_atomic(run_dir / "supervisord.conf", L.render_supervisord(layout, hub_command), 0o600)
    if layout.nginx:
        write_atomic(run_dir / "nginx.conf", L.render_nginx(layout))
    if layout.ssh:
        write_atomic(run_dir / "sshd_config", L.render_sshd(layout, KEYS_COMMAND))
        token = settings.ssh_front_token or read_or_create_token(data_dir / "ssh-front.token")
        lookup = {
            "url": f"{layout.hub_url}{hub_path(layout.base_url, LOOKUP_PATH)}",
            # the lookup reads the base URL at every call: the hub may run with its config's base_url
            "hub_url": layout.hub_url,
            "path": f"hub/{LOOKUP_PATH}",
            "base_url_file": str(run_dir / PUBLISHED.name),
            "token": token,
            "user": L.TUNNEL_USER,
        }
        if unprivileged:  # the lookup runs as sshd's own account
            write_atomic(run_dir / "ssh-front.json", json.dumps(lookup), 0o600)
        else:
            write_atomic(run_dir / "ssh-front.json", json.dumps(lookup), 0o640, group=L.KEYS_USER)
    if layout.chp:
        env["CONFIGPROXY_AUTH_TOKEN"] = env.get("CONFIGPROXY_AUTH_TOKEN") or read_or_create_token(
            data_dir / "proxy.token"
        )

    # the hub behind the front: CHP on loopback, the API on every network (workspaces call it)
    env.update(
        MLHUB_DATA_DIR=str(data_dir),
        MLHUB_IP="127.0.0.1",
        MLHUB_PORT=str(L.CHP_PORT),
        MLHUB_HUB_PORT=str(L.HUB_PORT),
        MLHUB_PROXY_API_PORT=str(L.CHP_API_PORT),
        MLHUB_BEHIND_FRONT="true" if layout.nginx else "false",
    )
    return layout


def main(argv=None):
    env = dict(os.environ)
    try:
        settings = load_settings(env)
    except SettingsError as e:
        log(f"cannot start: {e}")
        return 1
    try:
        prepare(settings, env)
    except OSError as e:  # a file or directory this user cannot use: one line, not a traceback
        log(f"cannot start as {whoami()}: {e}")
        return 1
    log("starting supervisord")
    os.execvpe("supervisord", ["supervisord", "-c", str(L.RUN_DIR / "supervisord.conf")], env)


if __name__ == "__main__":
    sys.exit(main())
