"""The front's certificate watcher: nginx serves a renewed certificate without a restart.

nginx reads its certificate once. When TLS is on, this watcher runs under supervisord and looks at
the source pair every ``MLHUB_CERT_RELOAD_SECONDS``: the operator's ``cert.crt``/``cert.key`` (a
Kubernetes Secret volume, e.g. cert-manager's, swaps both at once through its ``..data`` symlink) or
the self-signed pair the entrypoint generated. When the content changed and the new pair is valid
(both parse, the key belongs to the certificate) it installs a copy where nginx reads it and runs
``nginx -s reload``: new connections get the new certificate, open ones finish on the old workers.
An invalid pair is logged once and refused: nginx keeps serving the last good one, also after a
restart. The self-signed certificate is made again (same names) when it expires within 30 days.

nginx reads ``<run dir>/tls/cert.crt`` and ``cert.key``: ``tls`` is a symlink to a directory holding
one validated pair, replaced in one rename (a reload or restart never sees half of a pair).
"""

import argparse
import datetime
import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..files import write_atomic
from . import certs

DEFAULT_INTERVAL = 60
MIN_INTERVAL, MAX_INTERVAL = 1, 86400
RENEW_BEFORE = datetime.timedelta(days=30)
CERT, KEY = "cert.crt", "cert.key"


def parse_interval(value):
    """Seconds between two looks at the certificate, from ``MLHUB_CERT_RELOAD_SECONDS`` (unset: 60)."""
    if value is None or not str(value).strip():
        return DEFAULT_INTERVAL
    try:
        seconds = int(str(value).strip())
    except ValueError:
        raise ValueError(f"MLHUB_CERT_RELOAD_SECONDS={value!r} is not a whole number of seconds") from None
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(f"MLHUB_CERT_RELOAD_SECONDS={seconds} is not within {MIN_INTERVAL}..{MAX_INTERVAL}")
    return seconds


def read_pair(directory):
    """``(cert PEM, key PEM)`` bytes of ``directory`` (symlinks followed), or None when one is missing."""
    try:
        return (Path(directory) / CERT).read_bytes(), (Path(directory) / KEY).read_bytes()
    except FileNotFoundError:
        return None


def fingerprint(cert_pem, key_pem):
    """A content hash of a certificate and its key."""
    h = hashlib.sha256()
    for part in (cert_pem, key_pem):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def check_pair(cert_pem, key_pem):
    """The certificate of a usable pair; ValueError saying what is wrong otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise ValueError(f"{CERT} is not a PEM certificate ({e})") from None
    if not certs.key_matches(cert, key_pem):
        raise ValueError(f"{KEY} is not the private key of {CERT} (or not an unencrypted PEM key)")
    return cert


def needs_renewal(cert_pem, now, before=RENEW_BEFORE):
    """Whether a (self-signed) certificate expires within ``before`` of ``now``, or cannot be read."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    return cert.not_valid_after_utc - now <= before


def renewal_names(cert_pem):
    """``(common name, DNS names, IP addresses)`` of a certificate, to make its successor."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        dns, ips = [], []
    return (cn[0].value if cn else "mlhub"), dns, [str(i) for i in ips]


@dataclass(frozen=True)
class Decision:
    """What to do with the pair seen now: ``keep``, ``install``, ``refuse`` (invalid) or ``missing``."""

    action: str
    fingerprint: str = ""
    reason: str = ""


def decide(installed, pair):
    """Compare the source ``pair`` (or None) with the fingerprint of the installed one."""
    if pair is None:
        return Decision("missing", reason=f"{CERT} or {KEY} is missing")
    current = fingerprint(*pair)
    if current == installed:
        return Decision("keep", current)
    try:
        check_pair(*pair)
    except ValueError as e:
        return Decision("refuse", current, str(e))
    return Decision("install", current)


def install(target, cert_pem, key_pem):
    """Make ``target`` (a symlink) point to a new directory holding the pair; old ones removed."""
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    name = f".{target.name}-{fingerprint(cert_pem, key_pem)[:16]}"
    new = parent / name
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(mode=0o700)
    write_atomic(new / KEY, key_pem, 0o600)
    write_atomic(new / CERT, cert_pem, 0o644)
    if target.exists() and not target.is_symlink():
        shutil.rmtree(target)  # a directory from an older image
    link = parent / f".{target.name}-link"
    link.unlink(missing_ok=True)
    link.symlink_to(name)
    link.replace(target)
    for old in parent.glob(f".{target.name}-*"):
        if old.name != name and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    return target / CERT, target / KEY


def log(message):
    print(f"mlhub-cert-reload: {message}", flush=True)


class Watcher:
    """One look at a time (:meth:`tick`); :func:`main` calls it every interval."""

    def __init__(self, source, target, reload_command, self_signed=False, log=log, now=None):
        self.source, self.target = Path(source), Path(target)
        self.reload_command = list(reload_command)
        self.self_signed = self_signed
        self.log = log
        self.now = now or (lambda: datetime.datetime.now(datetime.UTC))
        installed = read_pair(self.target)
        self.installed = fingerprint(*installed) if installed else ""
        self.pending_reload = False
        self.complained = None  # the last problem logged (not repeated every interval)

    def renew(self):
        """Make the self-signed certificate again when it expires within 30 days."""
        pair = read_pair(self.source)
        if pair is None or not needs_renewal(pair[0], self.now()):
            return False
        try:
            cn, dns, ips = renewal_names(pair[0])
        except ValueError:
            cn, dns, ips = "mlhub", ["localhost"], ["127.0.0.1"]
        cert_pem, key_pem = certs.self_signed(cn, dns, ips, now=self.now())
        write_atomic(self.source / KEY, key_pem, 0o600)
        write_atomic(self.source / CERT, cert_pem, 0o644)
        self.log(f"renewed the self-signed certificate {self.source / CERT} (it expired within 30 days)")
        return True

    def reload(self):
        result = subprocess.run(
            self.reload_command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30
        )
        if result.returncode != 0:
            self.log(f"nginx reload failed ({result.stderr.strip()}); retrying at the next look")
            return False
        return True

    def tick(self):
        """Look once; return the decision's action (``reload-failed`` when nginx did not take it)."""
        if self.self_signed:
            self.renew()
        decision = decide(self.installed, read_pair(self.source))
        if decision.action in ("missing", "refuse"):
            problem = (decision.action, decision.fingerprint)
            if problem != self.complained:
                self.complained = problem
                self.log(
                    f"ERROR: refused the certificate in {self.source}: {decision.reason}; "
                    "nginx keeps serving the previous one"
                )
        elif decision.action == "install":
            install(self.target, *read_pair_checked(self.source, decision.fingerprint))
            self.installed = decision.fingerprint
            self.complained = None
            self.pending_reload = True
            self.log(f"new certificate in {self.source} ({certificate_summary(self.target / CERT)})")
        if self.pending_reload:
            if not self.reload():
                return "reload-failed"
            self.pending_reload = False
            self.log("nginx reloaded: new connections get the new certificate")
            return "install"
        return decision.action


def read_pair_checked(directory, expected):
    """The pair again, only if it is still the one that was checked (else ValueError)."""
    pair = read_pair(directory)
    if pair is None or fingerprint(*pair) != expected:
        raise ValueError("the certificate changed while it was checked")
    return pair


def certificate_summary(cert_path):
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return (
        f"subject {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mlhub-cert-reload", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="directory of cert.crt and cert.key to watch")
    parser.add_argument("--target", required=True, help="the symlink nginx reads the pair through")
    parser.add_argument("--nginx-conf", required=True, help="nginx's config (for `nginx -s reload`)")
    parser.add_argument("--interval", type=int, default=DEFAULT_INTERVAL, help="seconds between looks")
    parser.add_argument("--self-signed", action="store_true", help="renew the certificate before it expires")
    parser.add_argument(
        "--nginx-stderr", action="store_true", help="`nginx -e stderr` (not root: no built-in error log)"
    )
    args = parser.parse_args(argv)
    interval = parse_interval(str(args.interval))
    log_option = ["-e", "stderr"] if args.nginx_stderr else []
    watcher = Watcher(
        args.source,
        args.target,
        ["nginx", *log_option, "-c", args.nginx_conf, "-s", "reload"],
        self_signed=args.self_signed,
    )
    what = "renews and reloads the self-signed certificate" if args.self_signed else "reloads nginx"
    log(f"watching {args.source} every {interval} s: {what} when it changes")
    while True:
        try:
            watcher.tick()
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            log(f"ERROR: {e}; trying again at the next look")
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
