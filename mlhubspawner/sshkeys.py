"""SSH public keys: validate one OpenSSH public key line, fingerprint it, build authorized_keys lines.

Pure functions, no I/O. :func:`parse_public_key` accepts exactly one ``<type> <base64> [comment]``
line of a supported, strong key type and decodes its blob, so that what the hub stores is a key
sshd accepts. Fingerprints are ``SHA256:<base64 without padding>``, as ``ssh-keygen -lf`` prints them.

Proof of possession: the hub hands out a challenge (:func:`make_challenge`: HMAC'd, bound to one hub
user, valid for :data:`CHALLENGE_TTL_SECONDS`), the user signs it with ``ssh-keygen -Y sign -n
mlhub-ssh-key`` (:func:`sign_command`) and :func:`parse_signature` checks that the armored SSHSIG
names the submitted key and our namespace (the cryptographic check is ``ssh-keygen -Y verify``).
"""

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import secrets
import struct
from dataclasses import dataclass

MAX_LINE_BYTES = 16 * 1024
MAX_COMMENT_CHARS = 256
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384

ECDSA_CURVES = {"nistp256": 256, "nistp384": 384, "nistp521": 521}
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    SK_ED25519,
    SK_ECDSA,
)
# key types sshd knows that we refuse, with the reason
REFUSED_TYPES = {
    "ssh-dss": "DSA keys (ssh-dss) are refused as insecure: use ed25519 (ssh-keygen -t ed25519)",
}
# any word that looks like an OpenSSH key type, to recognise options in front of one
_TYPE_LIKE = re.compile(r"^(ssh-|ecdsa-|sk-|rsa-)[a-z0-9@.-]+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


class KeyFormatError(ValueError):
    """A public key line that is malformed, unsupported or too weak; the message is for humans."""


@dataclass(frozen=True)
class PublicKey:
    """One validated OpenSSH public key."""

    type: str
    blob: bytes
    bits: int
    comment: str = ""

    @property
    def blob_b64(self):
        return base64.b64encode(self.blob).decode("ascii")

    @property
    def fingerprint(self):
        return fingerprint(self.blob)

    @property
    def line(self):
        """``<type> <base64>``: the key without comment or options."""
        return f"{self.type} {self.blob_b64}"


def fingerprint(blob):
    """``SHA256:<base64 without padding>`` of a key blob, as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def _check_not_private(text):
    if re.search(r"BEGIN [A-Z0-9 ]*PRIVATE KEY", text) or text.lstrip().startswith("PuTTY-User-Key-File"):
        raise KeyFormatError("this is a private key: paste the .pub file")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise KeyFormatError(
            "this is an RFC 4716 (SSH2) public key: convert it with `ssh-keygen -i -f <file>` "
            "and paste the one-line result"
        )


def parse_public_key(line):
    """Validate one ``<type> <base64> [comment]`` line; returns a :class:`PublicKey`.

    Raises :class:`KeyFormatError` with a message that says what is wrong.
    """
    if not isinstance(line, str):
        raise KeyFormatError("the key must be a string: one line of an OpenSSH .pub file")
    _check_not_private(line)
    if len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
        raise KeyFormatError(f"the key line is longer than {MAX_LINE_BYTES} bytes")
    text = line.strip()
    if not text:
        raise KeyFormatError("the key is empty: paste one line of an OpenSSH .pub file")
    if "\n" in text or "\r" in text:
        raise KeyFormatError("one key at a time: paste a single line")
    fields = text.split(None, 2)
    key_type = fields[0]
    if key_type not in KEY_TYPES:
        if key_type in REFUSED_TYPES:
            raise KeyFormatError(REFUSED_TYPES[key_type])
        if any(word in KEY_TYPES or word in REFUSED_TYPES for word in text.split()[1:]):
            raise KeyFormatError("authorized_keys options are not allowed: paste only the key")
        if _TYPE_LIKE.match(key_type):
            raise KeyFormatError(f"unsupported key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")
        raise KeyFormatError("not an OpenSSH public key: expected '<type> <base64> [comment]'")
    if len(fields) < 2:
        raise KeyFormatError("the key data is missing after the key type")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError("the key data is not valid base64") from None
    comment = fields[2].strip() if len(fields) > 2 else ""
    if len(comment) > MAX_COMMENT_CHARS:
        raise KeyFormatError(f"the comment is longer than {MAX_COMMENT_CHARS} characters")
    if not comment.isprintable():
        raise KeyFormatError("the comment may contain only printable characters")
    bits = parse_blob(key_type, blob)
    return PublicKey(type=key_type, blob=blob, bits=bits, comment=comment)


def blob_from_query(text):
    """The key blob in a lookup's ``key`` query argument, or ``b""`` (pure).

    A '+' the caller did not URL-encode arrives as a space, also as the last character, so spaces
    become '+' before any whitespace is trimmed.
    """
    try:
        return base64.b64decode(text.replace(" ", "+").strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


def parse_blob(key_type, blob):
    """Check that a key blob is a well-formed ``key_type`` key; returns its size in bits."""
    reader = _Reader(blob)
    embedded = reader.string()
    try:
        embedded = embedded.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFormatError("the key data is corrupt (its key type is not text)") from None
    if embedded != key_type:
        raise KeyFormatError(f"the key data is a {embedded!r} key, but the line says {key_type!r}")
    if key_type == "ssh-rsa":
        exponent = reader.mpint()
        modulus = reader.mpint()
        if exponent < 3 or exponent % 2 == 0 or modulus < 3 or modulus % 2 == 0:
            raise KeyFormatError("the RSA key is corrupt (invalid exponent or modulus)")
        bits = modulus.bit_length()
        if bits < MIN_RSA_BITS:
            raise KeyFormatError(
                f"RSA keys need at least {MIN_RSA_BITS} bits (this one has {bits}): "
                "use ed25519 (ssh-keygen -t ed25519) or a longer RSA key"
            )
        if bits > MAX_RSA_BITS:
            raise KeyFormatError(f"RSA keys may have at most {MAX_RSA_BITS} bits (this one has {bits})")
    elif key_type in (SK_ED25519, "ssh-ed25519"):
        if len(reader.string()) != 32:
            raise KeyFormatError("the ed25519 key is corrupt (its public key is not 32 bytes)")
        bits = 256
    else:  # ecdsa-sha2-<curve> and sk-ecdsa-sha2-nistp256@openssh.com
        expected = key_type.removeprefix("sk-").removesuffix("@openssh.com").removeprefix("ecdsa-sha2-")
        curve = reader.string().decode("ascii", "replace")
        if curve != expected:
            raise KeyFormatError(f"the ECDSA key is corrupt: its curve {curve!r} does not match {key_type!r}")
        bits = ECDSA_CURVES[curve]
        size = (bits + 7) // 8
        point = reader.string()
        if len(point) != 1 + 2 * size or point[0] != 4:
            raise KeyFormatError("the ECDSA key is corrupt (its public point is malformed)")
    if key_type.startswith("sk-") and not reader.string():
        raise KeyFormatError("the security key is corrupt (its application is empty)")
    if not reader.at_end():
        raise KeyFormatError("the key data is corrupt (unexpected bytes at its end)")
    return bits


class _Reader:
    """Reads the SSH wire format (RFC 4251 ``string``, ``uint32``, ``mpint``) of a key or signature blob."""

    def __init__(self, data, error=KeyFormatError, what="key"):
        self.data = data
        self.pos = 0
        self.error = error
        self.what = what

    def uint32(self):
        if self.pos + 4 > len(self.data):
            raise self.error(f"the {self.what} data is truncated")
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return value

    def string(self):
        length = self.uint32()
        start = self.pos
        if start + length > len(self.data):
            raise self.error(f"the {self.what} data is truncated")
        self.pos = start + length
        return self.data[start : self.pos]

    def mpint(self):
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise KeyFormatError("the key data is corrupt (negative number)")
        return int.from_bytes(raw, "big")

    def at_end(self):
        return self.pos == len(self.data)


# ---- proof of possession ------------------------------------------------------------------

SIGNATURE_NAMESPACE = "mlhub-ssh-key"
CHALLENGE_TTL_SECONDS = 600
CHALLENGE_PREFIX = "mlhub-ssh-key-v1"
MAX_SIGNATURE_CHARS = 16 * 1024
_CHALLENGE = re.compile(
    rf"^{CHALLENGE_PREFIX}\.([A-Za-z0-9_-]{{22}})\.([0-9]{{1,12}})\.([A-Za-z0-9_-]{{43}})$"
)
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"
DEFAULT_KEY_FILES = {
    "ssh-ed25519": "id_ed25519",
    "ssh-rsa": "id_rsa",
    SK_ED25519: "id_ed25519_sk",
    SK_ECDSA: "id_ecdsa_sk",
}


class ChallengeError(ValueError):
    """A challenge that is malformed, not this user's, or expired; the message is for humans."""


class SignatureFormatError(ValueError):
    """A signature that is not an SSHSIG of the submitted key and our namespace."""


@dataclass(frozen=True)
class Challenge:
    """A checked challenge: its single-use ``nonce`` and when it expires (Unix seconds)."""

    text: str
    nonce: str
    expires: int


def _challenge_mac(secret, user, user_created, nonce, expires):
    message = "\0".join([CHALLENGE_PREFIX, user, user_created, nonce, str(expires)]).encode("utf-8")
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def make_challenge(secret, user, user_created, now, ttl=CHALLENGE_TTL_SECONDS, nonce=None):
    """A challenge for ``user`` (as created at ``user_created``), valid ``ttl`` seconds from ``now``.

    ``mlhub-ssh-key-v1.<nonce>.<expires>.<HMAC-SHA256 of all that, the user and its creation>``:
    only ``[A-Za-z0-9._-]``, safe inside shell quotes.
    """
    nonce = nonce or secrets.token_urlsafe(16)
    expires = int(now) + int(ttl)
    return (
        f"{CHALLENGE_PREFIX}.{nonce}.{expires}.{_challenge_mac(secret, user, user_created, nonce, expires)}"
    )


def check_challenge(secret, text, user, user_created, now):
    """The :class:`Challenge` in ``text`` if this hub issued it to ``user`` and it has not expired.

    Raises :class:`ChallengeError` otherwise. (Single use is the key store's job: it records nonces.)
    """
    match = _CHALLENGE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ChallengeError("the challenge is malformed: copy it whole from the SSH keys page or the API")
    nonce, expires, mac = match.group(1), int(match.group(2)), match.group(3)
    if not hmac.compare_digest(mac, _challenge_mac(secret, user, user_created, nonce, expires)):
        raise ChallengeError(f"this challenge was not issued to {user} by this hub: get a new one")
    if now > expires:
        raise ChallengeError("the challenge has expired: get a new one and sign it again")
    return Challenge(text=text.strip(), nonce=nonce, expires=expires)


def default_key_file(key_type):
    """The private key file ``ssh-keygen`` makes by default for ``key_type`` (``id_ed25519``...)."""
    if key_type.startswith("ecdsa-"):
        return "id_ecdsa"
    return DEFAULT_KEY_FILES.get(key_type, "id_ed25519")


def sign_command(challenge, key_type="ssh-ed25519"):
    """The shell command that signs ``challenge`` with the user's private key of type ``key_type``."""
    return (
        f"printf '%s' '{challenge}' | ssh-keygen -Y sign -n {SIGNATURE_NAMESPACE} "
        f"-f ~/.ssh/{default_key_file(key_type)}"
    )


def parse_signature(text, key):
    """Check that ``text`` is an armored SSHSIG by ``key`` (a :class:`PublicKey`) in our namespace.

    Returns the armored text, normalised (one block, ``\n`` line ends). Raises
    :class:`SignatureFormatError` with what is wrong; whether the signature is valid is checked by
    ``ssh-keygen -Y verify``.
    """
    if not isinstance(text, str):
        raise SignatureFormatError("the signature must be a string")
    if len(text) > MAX_SIGNATURE_CHARS:
        raise SignatureFormatError(f"the signature is longer than {MAX_SIGNATURE_CHARS} characters")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise SignatureFormatError(
            f"the signature must be the whole block from {_ARMOR_BEGIN} to {_ARMOR_END} "
            "that ssh-keygen -Y sign printed"
        )
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureFormatError("the signature is not valid base64") from None
    reader = _Reader(blob, SignatureFormatError, "signature")
    if blob[:6] != b"SSHSIG":
        raise SignatureFormatError("not an SSH signature (made by ssh-keygen -Y sign)")
    reader.pos = 6
    if reader.uint32() != 1:
        raise SignatureFormatError("unsupported SSH signature version")
    signer = reader.string()
    namespace = reader.string()
    if namespace != SIGNATURE_NAMESPACE.encode():
        raise SignatureFormatError(
            f"the signature is for namespace {namespace.decode('utf-8', 'replace')!r}: "
            f"sign with -n {SIGNATURE_NAMESPACE}"
        )
    if signer != key.blob:
        raise SignatureFormatError(
            f"the signature was made with another key ({fingerprint(signer)}), not {key.fingerprint}: "
            "sign with the private key of the public key you add"
        )
    return "\n".join([_ARMOR_BEGIN, *lines[1:-1], _ARMOR_END]) + "\n"


# ---- lines and config ---------------------------------------------------------------------


def forwarding_options(targets):
    """authorized_keys options allowing port forwarding only to ``targets`` (``(host, port)`` pairs).

    ``restrict`` turns off everything (pty, agent and X11 forwarding, ~/.ssh/rc) and
    ``port-forwarding`` turns forwarding back on, limited by ``permitopen``. With no targets there is
    nothing to permit, so this raises rather than return options that would allow any destination.
    """
    if not targets:
        raise ValueError("no forwarding targets")
    options = ["restrict", "port-forwarding"]
    for host, port in targets:
        if not _HOST.match(host) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"unsafe forwarding target {host!r}:{port!r}")
        options.append(f'permitopen="{host}:{port}"')
    return ",".join(options)


def authorized_keys_line(key_type, blob_b64, options=""):
    """One authorized_keys line: ``[options ]<type> <base64>`` (no comment)."""
    return f"{options} {key_type} {blob_b64}" if options else f"{key_type} {blob_b64}"


def host_alias(*parts):
    """An ssh config ``Host`` alias from ``parts`` (hub, user, server): ``[A-Za-z0-9._-]`` only."""
    alias = "-".join(part for part in parts if part)
    return re.sub(r"[^A-Za-z0-9._-]", "-", alias)


def parse_public_host(value, default_port=8080):
    """``(host, port)`` from ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; ValueError if unsafe."""
    value = (value or "").strip()
    host, port = value, None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid host {value!r}")
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, port = value.split(":")
    if value.startswith("[") or ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {value!r}") from None
    elif not _HOST.match(host):
        raise ValueError(f"invalid host {value!r}")
    if port is None:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port in {value!r}")
    return host, int(port)


def parse_public_port(value):
    """The SSH front's public port from ``$MLHUB_SSH_PUBLIC_PORT`` (1-65535); ValueError otherwise."""
    value = (value or "").strip()
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"invalid port {value!r}: expected 1-65535")
    return int(value)


def ssh_front_address(request_host, public_host=None, public_port=None):
    """``(host, port)`` users' ssh clients jump through: ``public_host`` if configured, else the request's
    ``Host`` header. Its port, if it has one, reached the public listener, which serves SSH too (a NodePort, a
    ``kubectl port-forward``); without one (https://hub.example.org) ``public_port``, the Service's SSH port,
    else 8080. ValueError for an unsafe Host header."""
    if public_host:
        return public_host
    return parse_public_host(request_host, default_port=public_port or 8080)


def jump_host(user, host, port):
    """``user@host:port`` for ``ssh -J`` and ``ProxyJump`` (IPv6 addresses in brackets)."""
    return f"{user}@[{host}]:{port}" if ":" in host else f"{user}@{host}:{port}"


def ssh_config(alias, hostname, port, user, proxy_jump):
    """A ``~/.ssh/config`` block reaching a workspace through the hub's SSH front."""
    return (
        f"Host {alias}\n"
        f"    HostName {hostname}\n"
        f"    User {user}\n"
        f"    Port {port}\n"
        f"    ProxyJump {proxy_jump}\n"
        "    ServerAliveInterval 60\n"
    )


def ssh_command(hostname, port, user, proxy_jump):
    """The one-line ``ssh -J`` equivalent of :func:`ssh_config`."""
    port_option = f" -p {port}" if port != 22 else ""
    return f"ssh -J {proxy_jump}{port_option} {user}@{hostname}"
