"""The TLS certificate of the front: the operator's, or a self-signed one with the right SANs."""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..files import write_atomic

VALID_DAYS = 825  # the longest validity browsers accept for a server certificate


def subject_alt_names(dns_names, ip_addresses):
    """SANs as (DNS names, IP addresses), de-duplicated, in order; IPs parsed (bad ones raise)."""
    dns = tuple(dict.fromkeys(n.lower() for n in dns_names if n))
    ips = tuple(dict.fromkeys(ipaddress.ip_address(a) for a in ip_addresses if a))
    return dns, ips


def certificate_sans(cert_path):
    """The (DNS names, IP addresses) a PEM certificate is valid for."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    return tuple(san.get_values_for_type(x509.DNSName)), tuple(san.get_values_for_type(x509.IPAddress))


def self_signed(common_name, dns_names, ip_addresses, now=None):
    """A new self-signed server certificate: ``(cert PEM, key PEM)``."""
    now = now or datetime.datetime.now(datetime.UTC)
    dns, ips = subject_alt_names(dns_names, ip_addresses)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns] + [x509.IPAddress(i) for i in ips]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _load(cert_path):
    try:
        return x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except ValueError as e:
        raise ValueError(f"{cert_path}: not a PEM certificate ({e})") from None


def key_matches(cert, key_pem):
    """Whether the PEM private key ``key_pem`` (bytes) belongs to ``cert``."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def _matches(cert, key_path):
    """Whether the PEM private key at ``key_path`` belongs to ``cert``."""
    return key_matches(cert, Path(key_path).read_bytes())


def _reusable(cert_path, key_path, dns, ips):
    """A stored certificate that still covers ``dns`` and ``ips``, is not about to expire, and has its key."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = _load(cert_path)
    except ValueError:
        return False  # damaged (e.g. a full disk): make a new one
    have_dns, have_ips = certificate_sans(cert_path)
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=30)
    return fresh and set(dns) <= set(have_dns) and set(ips) <= set(have_ips) and _matches(cert, key_path)


def ensure_certificate(mounted_dir, generated_dir, common_name, dns_names, ip_addresses, log=print):
    """Return ``(cert path, key path)``: the mounted pair if present, else a generated one.

    The generated certificate is kept in the data volume and made again when it no longer covers
    the names and addresses the hub is reached by, expires within 30 days, or is damaged.
    """
    mounted_cert, mounted_key = Path(mounted_dir) / "cert.crt", Path(mounted_dir) / "cert.key"
    if mounted_cert.exists() or mounted_key.exists():
        if not (mounted_cert.exists() and mounted_key.exists()):
            raise ValueError(f"{mounted_dir} must hold both cert.crt and cert.key")
        if not _matches(_load(mounted_cert), mounted_key):
            raise ValueError(f"{mounted_key} is not the private key of {mounted_cert}")
        log(f"TLS: using the mounted certificate {mounted_cert}")
        return str(mounted_cert), str(mounted_key)
    cert_path, key_path = Path(generated_dir) / "cert.crt", Path(generated_dir) / "cert.key"
    want_dns, want_ips = subject_alt_names(dns_names, ip_addresses)
    if _reusable(cert_path, key_path, want_dns, want_ips):
        return str(cert_path), str(key_path)
    Path(generated_dir).mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(common_name, want_dns, want_ips)
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)  # last: a crash in between leaves no reusable pair
    names = ", ".join([*want_dns, *map(str, want_ips)])
    log(f"TLS: generated a self-signed certificate for {names} in {cert_path}")
    return str(cert_path), str(key_path)
