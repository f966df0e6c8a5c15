"""SSH public keys: validate one OpenSSH public key line, fingerprint it, build authorized_keys lines.

Pure functions, no I/O. :func:`parse_public_key` accepts exactly one ``<type> <base64> [comment]``
line of a supported, strong key type and decodes its blob, so that what the hub stores is a key
sshd accepts. Fingerprints are ``SHA256:<base64 without padding>``, as ``ssh-keygen -lf`` prints them.
"""

import base64
import binascii
import hashlib
import ipaddress
import re
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
    """Reads the SSH wire format (RFC 4251 ``string`` and ``mpint``) of a key blob."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def string(self):
        if self.pos + 4 > len(self.data):
            raise KeyFormatError("the key data is truncated")
        (length,) = struct.unpack_from(">I", self.data, self.pos)
        start = self.pos + 4
        if start + length > len(self.data):
            raise KeyFormatError("the key data is truncated")
        self.pos = start + length
        return self.data[start : self.pos]

    def mpint(self):
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise KeyFormatError("the key data is corrupt (negative number)")
        return int.from_bytes(raw, "big")

    def at_end(self):
        return self.pos == len(self.data)


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
