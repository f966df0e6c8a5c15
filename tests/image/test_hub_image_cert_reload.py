"""The hub image's front serves a renewed certificate without a restart (real engine, image, nginx).

The container runs as the chart's proxy pod does (nginx, configurable-http-proxy, sshd, sslh; no hub)
with a certificate directory mounted at /resources/ssl that the test changes the way a Kubernetes
Secret volume does (cert-manager's renewal): the files are links through ``..data``, swapped at once.
"""

import datetime
import io
import secrets
import ssl
import tarfile
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mlhubspawner import __version__
from mlhubspawner.front import certs

from support import free_port, remove_by_label, wait_for

INTERVAL = 1  # MLHUB_CERT_RELOAD_SECONDS for the test


def make_pair(name):
    return certs.self_signed(name, ["localhost"], ["127.0.0.1"])


def secret_swap(directory, cert_pem, key_pem):
    """Write a new generation and point ``..data`` at it in one rename, as the kubelet does."""
    generation = directory / f"..{time.time_ns()}"
    generation.mkdir(mode=0o755)
    (generation / "cert.crt").write_bytes(cert_pem)
    (generation / "cert.key").write_bytes(key_pem)
    (generation / "cert.key").chmod(0o644)  # the container's root reads it through the bind mount
    link = directory / "..data_tmp"
    link.symlink_to(generation.name)
    link.replace(directory / "..data")
    for name in ("cert.crt", "cert.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


def served_fingerprint(port):
    """SHA-256 of the certificate the front serves on 127.0.0.1:port (None when it does not answer)."""
    try:
        pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=3)
    except OSError:
        return None
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())


def fingerprint(cert_pem):
    return x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())


@pytest.fixture
def front(docker, tmp_path):
    """A started front with certificate A mounted: ``(container, port, ssl dir, pair A)``."""
    name = f"tcert{secrets.token_hex(3)}"
    label = {"mlhub.test": name}
    ssl_dir = tmp_path / "ssl"
    ssl_dir.mkdir()
    ssl_dir.chmod(0o755)
    pair_a = make_pair("cert-a")
    secret_swap(ssl_dir, *pair_a)
    port = free_port()
    try:
        docker.volumes.create(f"{name}-data", labels=label)
        container = docker.containers.run(
            f"mlhub:{__version__}",
            name=name,
            detach=True,
            labels=label,
            environment={
                "HUB_NAME": name,
                "SSL_ENABLED": "true",
                "START_JHUB": "false",
                "START_CHP": "true",
                "MLHUB_CERT_RELOAD_SECONDS": str(INTERVAL),
            },
            ports={"8080/tcp": ("127.0.0.1", port)},
            volumes={
                str(ssl_dir): {"bind": "/resources/ssl", "mode": "ro"},
                f"{name}-data": {"bind": "/data", "mode": "rw"},
            },
        )
        if not wait_for(lambda: served_fingerprint(port) is not None, timeout=60, interval=0.3):
            pytest.fail(f"the front did not answer TLS:\n{container.logs(tail=60).decode(errors='replace')}")
        yield container, port, ssl_dir, pair_a
    finally:
        remove_by_label(docker, f"mlhub.test={name}")  # the container, then its data volume


def nginx_master(container):
    result = container.exec_run(["cat", "/run/mlhub/nginx.pid"])
    return result.output.decode().strip()


def test_a_renewed_certificate_is_served_and_an_invalid_one_is_refused(front):
    container, port, ssl_dir, (cert_a, key_a) = front
    assert served_fingerprint(port) == fingerprint(cert_a)
    master = nginx_master(container)

    # cert-manager renews: the Secret volume swaps to B; the front serves B within a few intervals
    cert_b, key_b = make_pair("cert-b")
    started = time.monotonic()
    secret_swap(ssl_dir, cert_b, key_b)
    assert wait_for(lambda: served_fingerprint(port) == fingerprint(cert_b), timeout=10 * INTERVAL + 10), (
        container.logs(tail=40).decode(errors="replace")
    )
    print(f"certificate B served {time.monotonic() - started:.1f} s after the swap")
    # a reload, not a restart: the same nginx master
    assert nginx_master(container) == master

    # a broken renewal (the key of another certificate): refused, B stays served
    cert_c, _ = make_pair("cert-c")
    secret_swap(ssl_dir, cert_c, key_a)
    assert wait_for(lambda: b"refused the certificate" in container.logs(), timeout=10 * INTERVAL + 10)
    time.sleep(2 * INTERVAL)
    assert served_fingerprint(port) == fingerprint(cert_b)
    logs = container.logs().decode(errors="replace")
    assert "not the private key" in logs and "keeps serving the previous one" in logs

    # nginx restarted while the mount holds the bad pair: it still starts, with B
    result = container.exec_run(["supervisorctl", "-c", "/run/mlhub/supervisord.conf", "restart", "nginx"])
    assert result.exit_code == 0, result.output
    assert wait_for(lambda: served_fingerprint(port) == fingerprint(cert_b), timeout=30)

    # the operator fixes it by rewriting the files in place (a plain bind mount): served
    for name in ("cert.crt", "cert.key"):
        (ssl_dir / name).unlink()
    (ssl_dir / "cert.key").write_bytes(key_a)
    (ssl_dir / "cert.crt").write_bytes(cert_a)
    assert wait_for(lambda: served_fingerprint(port) == fingerprint(cert_a), timeout=10 * INTERVAL + 10)


def data_archive(files):
    """A tar of ``{path in /data: (bytes, mode)}``, owned by root, for ``put_archive``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("ssl")
        info.type, info.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_self_signed_certificate_is_renewed_before_it_expires(docker):
    """A generated certificate that enters its last 30 days while the front runs is made again."""
    name = f"tcert{secrets.token_hex(3)}"
    label = {"mlhub.test": name}
    # valid for 30 days and 20 s: reused at start (more than 30 days left), due for renewal 20 s later
    now = datetime.datetime.now(datetime.UTC)
    lifetime = datetime.timedelta(days=30, seconds=20)
    old_cert, old_key = certs.self_signed(
        name,
        ["localhost", name],
        ["127.0.0.1"],
        now=now + lifetime - datetime.timedelta(days=certs.VALID_DAYS),
    )
    port = free_port()
    try:
        docker.volumes.create(f"{name}-data", labels=label)
        container = docker.containers.create(
            f"mlhub:{__version__}",
            name=name,
            hostname=name,
            labels=label,
            environment={
                "HUB_NAME": name,
                "SSL_ENABLED": "true",
                "START_JHUB": "false",
                "START_SSH": "false",
                "MLHUB_CERT_RELOAD_SECONDS": str(INTERVAL),
            },
            ports={"8080/tcp": ("127.0.0.1", port)},
            volumes={f"{name}-data": {"bind": "/data", "mode": "rw"}},
        )
        files = {"ssl/cert.crt": (old_cert, 0o644), "ssl/cert.key": (old_key, 0o600)}
        assert container.put_archive("/data", data_archive(files))
        container.start()
        assert wait_for(lambda: served_fingerprint(port) is not None, timeout=60, interval=0.3)
        assert served_fingerprint(port) == fingerprint(old_cert), "the planted certificate was not reused"

        assert wait_for(lambda: served_fingerprint(port) != fingerprint(old_cert), timeout=60), (
            container.logs(tail=40).decode(errors="replace")
        )
        pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=3).encode()
        renewed = x509.load_pem_x509_certificate(pem)
        assert renewed.not_valid_after_utc > now + datetime.timedelta(days=800)
        san = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) >= {"localhost", name}
        assert "renewed the self-signed certificate" in container.logs().decode(errors="replace")
    finally:
        remove_by_label(docker, f"mlhub.test={name}")
