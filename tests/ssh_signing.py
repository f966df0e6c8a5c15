"""Register SSH keys as users do: get the hub's challenge, sign it with the real ``ssh-keygen -Y sign``."""

import subprocess
from pathlib import Path

SSH_SIGNATURE_NAMESPACE = "mlhub-ssh-key"  # mlhubspawner.sshkeys.SIGNATURE_NAMESPACE
# the key store as ML Hub kept it before proof of possession (schema version 0): legacy data in tests
SCHEMA_0 = """
CREATE TABLE ssh_keys (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    user_created TEXT NOT NULL,
    type TEXT NOT NULL,
    blob TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX ssh_keys_user ON ssh_keys (user);
"""


def sign_ssh_challenge(private_key, challenge, namespace=SSH_SIGNATURE_NAMESPACE):
    """What ``ssh-keygen -Y sign -n <namespace> -f <private_key>`` prints for ``challenge`` on stdin."""
    result = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(private_key)],
        input=challenge.encode(),
        capture_output=True,
        timeout=30,
        check=True,
    )
    return result.stdout.decode()


def ssh_key_challenge(hub, user, token=None):
    """A fresh challenge from the hub's keys API for ``user``."""
    r = hub.api("GET", f"mlhub/users/{user}/ssh-keys/challenge", token=token)
    assert r.status_code == 200, r.text
    return r.json()["challenge"]


def register_ssh_key(hub, user, private_key, token=None, public_line=None):
    """POST the public key of ``private_key`` (its ``.pub`` file) for ``user`` with a signed challenge;
    returns the response."""
    challenge = ssh_key_challenge(hub, user, token)
    public_line = public_line or Path(f"{private_key}.pub").read_text().strip()
    body = {
        "key": public_line,
        "challenge": challenge,
        "signature": sign_ssh_challenge(private_key, challenge),
    }
    return hub.api("POST", f"mlhub/users/{user}/ssh-keys", token=token, json=body)
