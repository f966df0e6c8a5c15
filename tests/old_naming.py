"""The naming scheme before issue 11 (a copy, for replaying its takeover in tests).

It shortened an over-long name to its first characters + ``-`` + 10 hex digits, a form that is
itself a valid escaped name: a user signed up as the un-escaped form of a victim's shortened name
got the victim's container, volume and network (or pod, PVC and Service).
"""

import hashlib
import re

from mlhubspawner import naming

SIGN_UP_ABLE = re.compile(r"^[a-z0-9.@_+-]+$")  # a user name as is (no case folding, no quoting)


def old_fit(name):
    """Prefix + ``-`` + 10 hex digits for names over 63 characters."""
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:52].rstrip('-')}-{digest}"


def old_workspace_name(hub, user, server=""):
    return old_fit(f"{hub}-ws-{naming.escape(user)}" + (f"--{naming.escape(server)}" if server else ""))


def unescape(text):
    """What escaping turns into ``text`` (``-XX`` = one UTF-8 byte), or None."""
    try:
        data = re.sub(rb"-([0-9a-f]{2})", lambda m: bytes.fromhex(m.group(1).decode()), text.encode())
        decoded = data.decode()
    except UnicodeDecodeError:
        return None
    return decoded if naming.escape(decoded) == text else None


def victim_and_attacker(hub, server):
    """A victim (a long e-mail user name, server ``server``) and the user whose old default-server
    name was the victim's, as user names."""
    for i in range(2000):
        victim = f"first.lastname{i or ''}@physics.example-university.edu"
        shortened = old_workspace_name(hub, victim, server)
        attacker = unescape(shortened.removeprefix(f"{hub}-ws-"))
        if attacker and SIGN_UP_ABLE.match(attacker) and old_workspace_name(hub, attacker) == shortened:
            return victim, attacker
    raise AssertionError("no victim/attacker pair found")
