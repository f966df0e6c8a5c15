"""The front's TLS certificate: the operator's mounted pair, or a self-signed one with the right SANs."""

import datetime
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlhubspawner.front import certs

DNS = ["localhost", "mlhub", "4f1c0a9e4f1c"]
IPS = ["127.0.0.1", "172.18.0.5"]


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert):
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def write_pair(directory, cert_pem, key_pem):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.crt").write_bytes(cert_pem)
    (directory / "cert.key").write_bytes(key_pem)


class Log(list):
    def __call__(self, message):
        self.append(message)


def now():
    """The time of the test itself (a module-level constant is stale when the suite runs long)."""
    return datetime.datetime.now(datetime.UTC)


def test_self_signed_has_exactly_the_names_asked_for():
    issued = now()
    cert_pem, key_pem = certs.self_signed(
        "mlhub",
        ["localhost", "Hub.Example.org", "", "localhost"],
        ["127.0.0.1", "172.18.0.5", ipaddress.ip_address("fd00::5"), "127.0.0.1", ""],
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    dns, ips = sans(cert)
    assert dns == ["localhost", "hub.example.org"]
    assert ips == [ipaddress.ip_address(a) for a in ("127.0.0.1", "172.18.0.5", "fd00::5")]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mlhub"
    assert cert.issuer == cert.subject
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=825) <= lifetime <= datetime.timedelta(days=825, minutes=10)
    assert abs(cert.not_valid_before_utc - issued) < datetime.timedelta(minutes=10)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_a_bad_ip_address_is_refused():
    with pytest.raises(ValueError):
        certs.self_signed("mlhub", ["localhost"], ["not-an-ip"])


def test_generated_certificate_is_stored_with_a_private_key(tmp_path):
    log = Log()
    cert_path, key_path = certs.ensure_certificate(
        tmp_path / "mounted", tmp_path / "data" / "ssl", "mlhub", DNS, IPS, log=log
    )
    assert (cert_path, key_path) == (str(tmp_path / "data/ssl/cert.crt"), str(tmp_path / "data/ssl/cert.key"))
    dns, ips = sans(load(tmp_path / "data/ssl/cert.crt"))
    assert (dns, [str(i) for i in ips]) == (DNS, IPS)
    assert stat.S_IMODE((tmp_path / "data/ssl/cert.key").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key((tmp_path / "data/ssl/cert.key").read_bytes(), password=None)
    assert (
        key.public_key().public_numbers()
        == load(tmp_path / "data/ssl/cert.crt").public_key().public_numbers()
    )
    assert len(log) == 1 and "self-signed" in log[0] and "172.18.0.5" in log[0] and "mlhub" in log[0]


def test_stored_certificate_is_reused_while_it_covers_the_names(tmp_path):
    generated = tmp_path / "ssl"
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", DNS, IPS, log=Log())
    before = ((generated / "cert.crt").read_bytes(), (generated / "cert.key").read_bytes())
    log = Log()
    # same names in another order and case, and a subset: clients' trust in the certificate stays valid
    for dns, ips in ((list(reversed(DNS)), IPS), (["MLHUB"], ["127.0.0.1"])):
        certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", dns, ips, log=log)
    assert ((generated / "cert.crt").read_bytes(), (generated / "cert.key").read_bytes()) == before
    assert log == []


@pytest.mark.parametrize(
    "dns,ips",
    [([*DNS, "hub.example.org"], IPS), (DNS, [*IPS, "10.20.0.3"])],
    ids=["new host name", "new address"],
)
def test_stored_certificate_is_replaced_when_a_new_name_is_needed(tmp_path, dns, ips):
    generated = tmp_path / "ssl"
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", DNS, IPS, log=Log())
    old = (generated / "cert.crt").read_bytes()
    log = Log()
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", dns, ips, log=log)
    assert (generated / "cert.crt").read_bytes() != old
    have_dns, have_ips = sans(load(generated / "cert.crt"))
    assert (have_dns, [str(i) for i in have_ips]) == (dns, ips)
    assert len(log) == 1 and "generated" in log[0]


@pytest.mark.parametrize("days_left,replaced", [(20, True), (60, False)])
def test_stored_certificate_is_replaced_within_30_days_of_expiry(tmp_path, days_left, replaced):
    generated = tmp_path / "ssl"
    issued = now() - datetime.timedelta(days=certs.VALID_DAYS - days_left)
    write_pair(generated, *certs.self_signed("mlhub", DNS, IPS, now=issued))
    old = (generated / "cert.crt").read_bytes()
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", DNS, IPS, log=Log())
    assert ((generated / "cert.crt").read_bytes() != old) is replaced
    expires = load(generated / "cert.crt").not_valid_after_utc
    assert expires - now() > datetime.timedelta(days=30)


def test_mounted_pair_wins_over_generating_one(tmp_path):
    mounted = tmp_path / "resources" / "ssl"
    cert_pem, key_pem = certs.self_signed("hub.example.org", ["hub.example.org"], [])
    write_pair(mounted, cert_pem, key_pem)
    log = Log()
    result = certs.ensure_certificate(mounted, tmp_path / "data" / "ssl", "mlhub", DNS, IPS, log=log)
    assert result == (str(mounted / "cert.crt"), str(mounted / "cert.key"))
    assert (mounted / "cert.crt").read_bytes() == cert_pem  # used as is, names not "fixed"
    assert not (tmp_path / "data").exists()
    assert len(log) == 1 and "mounted" in log[0]


@pytest.mark.parametrize("present", ["cert.crt", "cert.key"])
def test_half_a_mounted_pair_is_refused(tmp_path, present):
    mounted = tmp_path / "resources" / "ssl"
    mounted.mkdir(parents=True)
    cert_pem, key_pem = certs.self_signed("mlhub", DNS, IPS)
    (mounted / present).write_bytes(cert_pem if present == "cert.crt" else key_pem)
    with pytest.raises(ValueError, match="both cert.crt and cert.key"):
        certs.ensure_certificate(mounted, tmp_path / "ssl", "mlhub", DNS, IPS, log=Log())
    assert not (tmp_path / "ssl").exists()  # no silent fallback to a self-signed certificate


def test_a_broken_mounted_certificate_stops_the_start(tmp_path):
    mounted = tmp_path / "resources" / "ssl"
    write_pair(mounted, b"-----BEGIN CERTIFICATE-----\nnot base64\n", certs.self_signed("m", DNS, IPS)[1])
    with pytest.raises(ValueError):
        certs.ensure_certificate(mounted, tmp_path / "ssl", "mlhub", DNS, IPS, log=Log())
    assert not (tmp_path / "ssl").exists()


def test_a_broken_mounted_certificate_error_names_the_file(tmp_path):
    mounted = tmp_path / "resources" / "ssl"
    write_pair(mounted, b"garbage", certs.self_signed("m", DNS, IPS)[1])
    with pytest.raises(ValueError, match="cert.crt"):
        certs.ensure_certificate(mounted, tmp_path / "ssl", "mlhub", DNS, IPS, log=Log())


def test_a_regenerated_key_is_private_even_if_the_old_one_was_not(tmp_path):
    generated = tmp_path / "ssl"
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", DNS, IPS, log=Log())
    (generated / "cert.key").chmod(0o644)
    certs.ensure_certificate(
        tmp_path / "mounted", generated, "mlhub", [*DNS, "hub.example.org"], IPS, log=Log()
    )
    assert stat.S_IMODE((generated / "cert.key").stat().st_mode) == 0o600


def test_a_damaged_generated_certificate_is_made_again(tmp_path):
    generated = tmp_path / "ssl"
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", DNS, IPS, log=Log())
    (generated / "cert.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMII")  # e.g. a full disk mid-write
    certs.ensure_certificate(tmp_path / "mounted", generated, "mlhub", DNS, IPS, log=Log())
    dns, ips = sans(load(generated / "cert.crt"))
    assert (dns, [str(i) for i in ips]) == (DNS, IPS)
