"""The front's certificate watcher: a renewed certificate is served after a reload, a bad one never.

Pure parts (fingerprint, pair check, decision, renewal) and one Watcher over real files in tmp_path
with a stand-in reload command; the image test (tests/image/test_hub_image_cert_reload.py) runs real nginx.
"""

import datetime
import os
import sys
from pathlib import Path

import pytest
from cryptography import x509

from mlhubspawner.front import cert_reload as R
from mlhubspawner.front import certs
from mlhubspawner.front import layout as L
from mlhubspawner.settings import load_settings

NOW = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)


def pair(name="localhost", now=NOW):
    return certs.self_signed(name, [name], ["127.0.0.1"], now=now)


def write_pair(directory, cert_pem, key_pem):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.crt").write_bytes(cert_pem)
    (directory / "cert.key").write_bytes(key_pem)


def secret_volume(directory, cert_pem, key_pem, generation):
    """A Kubernetes Secret volume: files are links through ``..data``, swapped in one rename."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"..{generation}"
    write_pair(data, cert_pem, key_pem)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(data.name)
    tmp.replace(directory / "..data")
    for name in ("cert.crt", "cert.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


def subject(cert_pem):
    return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()


# --- pure parts -------------------------------------------------------------------------------


def test_fingerprint_changes_with_the_certificate_or_the_key():
    a_cert, a_key = pair("a.example")
    b_cert, b_key = pair("b.example")
    assert R.fingerprint(a_cert, a_key) == R.fingerprint(a_cert, a_key)
    assert (
        len({R.fingerprint(a_cert, a_key), R.fingerprint(b_cert, a_key), R.fingerprint(a_cert, b_key)}) == 3
    )
    # the boundary between certificate and key counts
    assert R.fingerprint(b"ab", b"c") != R.fingerprint(b"a", b"bc")


def test_check_pair_refuses_a_foreign_key_and_garbage():
    a_cert, a_key = pair("a.example")
    _, b_key = pair("b.example")
    assert R.check_pair(a_cert, a_key).subject.rfc4514_string() == "CN=a.example"
    with pytest.raises(ValueError, match="not the private key"):
        R.check_pair(a_cert, b_key)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        R.check_pair(b"-----BEGIN CERTIFICATE-----\nxx\n", a_key)
    with pytest.raises(ValueError, match="not the private key"):
        R.check_pair(a_cert, b"")


def test_decide_keeps_installs_or_refuses():
    a, b = pair("a.example"), pair("b.example")
    installed = R.fingerprint(*a)
    assert R.decide(installed, a).action == "keep"
    assert R.decide(installed, b) == R.Decision("install", R.fingerprint(*b))
    refused = R.decide(installed, (b[0], a[1]))
    assert refused.action == "refuse" and "not the private key" in refused.reason
    assert R.decide(installed, None).action == "missing"


def test_interval_is_bounded():
    assert R.parse_interval(None) == R.parse_interval("") == 60
    assert R.parse_interval(" 5 ") == 5
    for bad in ("0", "-1", "86401", "1m", "1.5"):
        with pytest.raises(ValueError, match="MLHUB_CERT_RELOAD_SECONDS"):
            R.parse_interval(bad)


def test_renewal_30_days_before_expiry():
    cert_pem, _ = pair(now=NOW)  # valid certs.VALID_DAYS from NOW
    end = NOW + datetime.timedelta(days=certs.VALID_DAYS)
    assert not R.needs_renewal(cert_pem, NOW)
    assert not R.needs_renewal(cert_pem, end - datetime.timedelta(days=31))
    assert R.needs_renewal(cert_pem, end - datetime.timedelta(days=30))
    assert R.needs_renewal(cert_pem, end + datetime.timedelta(days=1))
    assert R.needs_renewal(b"damaged", NOW)


# --- the watcher over real files ----------------------------------------------------------------


class Reloads:
    """A stand-in for ``nginx -s reload``: counts calls; fails while ``fail`` is set."""

    def __init__(self, tmp_path):
        self.marker = tmp_path / "reloads"
        self.fail = tmp_path / "fail"
        code = (
            "import pathlib,sys;"
            f"f=pathlib.Path({str(self.fail)!r});"
            "sys.exit(1) if f.exists() else None;"
            f"m=pathlib.Path({str(self.marker)!r});"
            "m.write_text(str(int(m.read_text() or 0)+1) if m.exists() else '1')"
        )
        self.command = [sys.executable, "-c", code]

    @property
    def count(self):
        return int(self.marker.read_text()) if self.marker.exists() else 0


def make_watcher(tmp_path, source, **kwargs):
    target = tmp_path / "run" / "tls"
    R.install(target, *R.read_pair(source))  # as the entrypoint does
    reloads = Reloads(tmp_path)
    logged = []
    watcher = R.Watcher(source, target, reloads.command, log=logged.append, **kwargs)
    return watcher, target, reloads, logged


def test_secret_volume_swap_is_installed_and_reloaded_once(tmp_path):
    a, b = pair("a.example"), pair("b.example")
    source = tmp_path / "ssl"
    secret_volume(source, *a, 1)
    watcher, target, reloads, _ = make_watcher(tmp_path, source)
    assert watcher.tick() == "keep" and reloads.count == 0

    secret_volume(source, *b, 2)  # cert-manager renewed: the kubelet swaps ..data
    assert watcher.tick() == "install"
    assert subject((target / "cert.crt").read_bytes()) == "CN=b.example"
    assert (target / "cert.key").read_bytes() == b[1]
    assert reloads.count == 1
    assert watcher.tick() == "keep" and reloads.count == 1
    # nginx's path stays the same; the files behind it are private, one pair directory is left
    assert target.is_symlink() and oct((target / "cert.key").stat().st_mode & 0o777) == "0o600"
    assert len([p for p in target.parent.iterdir() if p.is_dir() and not p.is_symlink()]) == 1


def test_an_invalid_pair_is_refused_logged_once_and_the_old_one_stays(tmp_path):
    a, b = pair("a.example"), pair("b.example")
    source = tmp_path / "ssl"
    write_pair(source, *a)
    watcher, target, reloads, logged = make_watcher(tmp_path, source)

    write_pair(source, b[0], a[1])  # certificate B with key A: nginx would refuse to load it
    assert watcher.tick() == "refuse"
    assert watcher.tick() == "refuse"
    errors = [m for m in logged if m.startswith("ERROR")]
    assert len(errors) == 1 and "not the private key" in errors[0] and "previous one" in errors[0]
    assert R.read_pair(target) == a and reloads.count == 0

    (source / "cert.key").unlink()  # half a pair
    assert watcher.tick() == "missing" and R.read_pair(target) == a

    write_pair(source, *b)  # fixed: served
    assert watcher.tick() == "install" and R.read_pair(target) == b and reloads.count == 1


def test_a_failed_reload_is_retried(tmp_path):
    a, b = pair("a.example"), pair("b.example")
    source = tmp_path / "ssl"
    write_pair(source, *a)
    watcher, target, reloads, logged = make_watcher(tmp_path, source)
    reloads.fail.touch()
    write_pair(source, *b)
    assert watcher.tick() == "reload-failed" and any("reload failed" in m for m in logged)
    reloads.fail.unlink()
    assert watcher.tick() == "install" and reloads.count == 1
    assert watcher.tick() == "keep" and reloads.count == 1


def test_the_self_signed_certificate_is_renewed_before_expiry(tmp_path):
    source = tmp_path / "data" / "ssl"
    old = certs.self_signed("team-a", ["localhost", "hub.example.org"], ["127.0.0.1", "172.18.0.5"], now=NOW)
    write_pair(source, *old)
    clock = [NOW]
    watcher, target, reloads, logged = make_watcher(tmp_path, source, self_signed=True, now=lambda: clock[0])
    assert watcher.tick() == "keep" and R.read_pair(source) == old

    clock[0] = NOW + datetime.timedelta(days=certs.VALID_DAYS - 29)
    assert watcher.tick() == "install" and reloads.count == 1
    new_cert, new_key = R.read_pair(target)
    assert R.read_pair(source) == (new_cert, new_key) != old
    cert = R.check_pair(new_cert, new_key)
    assert cert.not_valid_after_utc > clock[0] + datetime.timedelta(days=800)
    # the same names as before: clients that trusted it by name still match
    assert R.renewal_names(new_cert) == (
        "team-a",
        ["localhost", "hub.example.org"],
        ["127.0.0.1", "172.18.0.5"],
    )
    assert oct((source / "cert.key").stat().st_mode & 0o777) == "0o600"
    assert any("renewed the self-signed certificate" in m for m in logged)


def test_the_operators_certificate_is_never_replaced_by_a_self_signed_one(tmp_path):
    expiring = pair("a.example", now=NOW - datetime.timedelta(days=certs.VALID_DAYS - 10))
    source = tmp_path / "ssl"
    write_pair(source, *expiring)
    watcher, target, reloads, _ = make_watcher(tmp_path, source)
    assert watcher.tick() == "keep" and R.read_pair(source) == expiring and reloads.count == 0


# --- where it runs ------------------------------------------------------------------------------


def programs(env, cert_watch):
    settings = load_settings(env)
    tls = settings.ssl_enabled
    layout = L.layout_from_settings(
        settings,
        cert="/run/mlhub/tls/cert.crt" if tls else "",
        key="/run/mlhub/tls/cert.key" if tls else "",
        cert_watch=cert_watch if tls else None,
    )
    return dict((name, argv) for name, argv, _ in L.programs(layout, ["jupyterhub"]))


def test_the_watcher_runs_only_with_tls_and_watches_the_right_pair():
    mounted = programs({"SSL_ENABLED": "true"}, ("/resources/ssl", False, 60))
    argv = mounted["cert-reload"]
    assert argv[:3] == [sys.executable, "-m", "mlhubspawner.front.cert_reload"]
    assert "--source=/resources/ssl" in argv and "--target=/run/mlhub/tls" in argv
    assert "--nginx-conf=/run/mlhub/nginx.conf" in argv and "--interval=60" in argv
    assert "--self-signed" not in argv

    generated = programs({"SSL_ENABLED": "true"}, ("/data/ssl", True, 5))["cert-reload"]
    assert "--self-signed" in generated and "--interval=5" in generated
    assert "cert-reload" not in programs({"SSL_ENABLED": "false"}, None)
    assert "cert-reload" not in programs({"SSL_ENABLED": "true", "START_NGINX": "false"}, None)


def test_nginx_reads_the_validated_copy(tmp_path, monkeypatch):
    from mlhubspawner.front import entrypoint

    mounted = tmp_path / "ssl"
    write_pair(mounted, *pair("a.example"))
    monkeypatch.setattr(entrypoint, "SSL_DIR", str(mounted))
    settings = load_settings({"SSL_ENABLED": "true", "HUB_NAME": "team-a"})
    cert, key, watch = entrypoint.front_certificate(
        settings, ["0.0.0.0"], tmp_path / "data", tmp_path / "run", {"MLHUB_CERT_RELOAD_SECONDS": "7"}
    )
    assert (cert, key) == (str(tmp_path / "run/tls/cert.crt"), str(tmp_path / "run/tls/cert.key"))
    assert Path(cert).read_bytes() == (mounted / "cert.crt").read_bytes()
    assert watch == (str(mounted), False, 7)

    (mounted / "cert.crt").unlink()
    (mounted / "cert.key").unlink()
    cert, _, watch = entrypoint.front_certificate(
        settings, ["0.0.0.0"], tmp_path / "data", tmp_path / "run", {}
    )
    assert watch == (str(tmp_path / "data" / "ssl"), True, 60)
    assert Path(cert).read_bytes() == (tmp_path / "data/ssl/cert.crt").read_bytes()
    assert os.path.realpath(cert) != cert  # through the swapped link

    with pytest.raises(SystemExit, match="MLHUB_CERT_RELOAD_SECONDS"):
        entrypoint.front_certificate(
            settings, ["0.0.0.0"], tmp_path / "data", tmp_path / "run", {"MLHUB_CERT_RELOAD_SECONDS": "0"}
        )
