"""The authenticator's first start (admin accounts, generated password) and its username rules, on an
in-memory JupyterHub database."""

import asyncio
import ipaddress
import logging
import re
import stat
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo
from traitlets import TraitError

from mlhubspawner.auth import (
    LOOPBACK,
    USERNAME_PATTERN,
    AdminPasswordError,
    NativeAuthenticator,
    login_source,
)


@pytest.fixture
def db():
    session = orm.new_session_factory("sqlite://")()
    yield session
    session.close()


def authenticator(db, **traits):
    traits.setdefault("admin_users", {"admin"})
    return NativeAuthenticator(db=db, **traits)


@pytest.mark.parametrize(
    "name",
    ["alice", "first.lastname@physics.example-university.edu", "jörg-müller", "李雷", "a_b-c.d+e", "x" * 128],
)
def test_ordinary_names_are_valid(db, name):
    assert authenticator(db).validate_username(name)


@pytest.mark.parametrize(
    "name",
    ["eve\nadmin", "eve\n", "a\rb", "a\tb", "a b", "nul\x00", "\x1b[2J", "a\x85b", "a\u2028b", "zw\u200bsp",
     "bidi\u202ex", "soft\u00adhyphen", "a,b", "a/b", "a\\b", "", "x" * 129],
)  # fmt: skip
def test_whitespace_control_and_invisible_characters_are_refused(db, name):
    assert not authenticator(db).validate_username(name)
    assert not re.match(USERNAME_PATTERN, name)


def test_first_start_generates_stores_0600_and_logs_once(db, tmp_path, caplog):
    path = tmp_path / "admin-password"
    with caplog.at_level(logging.INFO):
        auth = authenticator(db, admin_password_file=str(path))
    password = path.read_text().strip()
    assert len(password) >= 20 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert caplog.text.count(password) == 1
    info = UserInfo.find(db, "admin")
    assert info.is_authorized and info.is_valid_password(password)
    assert auth.create_user("admin", "another-Long-password-1") is None  # never signed up

    caplog.clear()
    with caplog.at_level(logging.INFO):
        authenticator(db, admin_password_file=str(path))  # a restart
    assert password not in caplog.text
    assert UserInfo.find(db, "admin").is_valid_password(password)


def test_the_variable_resets_the_admin_password_and_must_be_strong(db, tmp_path):
    path = tmp_path / "admin-password"
    authenticator(db, admin_password_file=str(path))
    authenticator(db, admin_password_file=str(path), admin_password="operator-Chosen-pass-42")
    assert UserInfo.find(db, "admin").is_valid_password("operator-Chosen-pass-42")
    with pytest.raises(AdminPasswordError, match="MLHUB_ADMIN_PASSWORD"):
        authenticator(db, admin_password="qwerty123456")  # common


def test_a_damaged_password_file_stops_the_start(db, tmp_path):
    path = tmp_path / "admin-password"
    path.write_text("\n")
    with pytest.raises(AdminPasswordError, match="delete it"):
        authenticator(db, admin_password_file=str(path))
    assert UserInfo.find(db, "admin") is None


def test_lockout_password_rules_and_signup_refusals_are_on_by_default(db):
    auth = authenticator(db)
    assert (auth.allowed_failed_logins, auth.seconds_before_next_try) == (5, 600)
    assert not auth.is_password_strong("Sh0rt-pw") and not auth.is_password_strong("qwerty123456")
    assert auth.is_password_strong("correct-Horse-battery-9")
    assert auth.signup_refusal("ADMIN")[0] == 403
    assert auth.signup_refusal("eve\nx")[0] == 400
    assert auth.signup_refusal("eve") == (None, None)


# ---- lockout per (username, client address) ----------------------------------------------

TRUSTED = [ipaddress.ip_network(n) for n in LOOPBACK]


@pytest.mark.parametrize(
    "peer, forwarded_for, source",
    [
        ("127.0.0.1", "203.0.113.7", "203.0.113.7"),  # nginx sets it; CHP appends it
        ("127.0.0.1", "10.0.0.1, 203.0.113.7", "203.0.113.7"),  # the client's own entries are ignored
        ("127.0.0.1", "10.0.0.1,::ffff:127.0.0.2", "127.0.0.2"),  # node's IPv4-mapped form
        ("127.0.0.1", "", "127.0.0.1"),
        ("127.0.0.1", "not-an-address", "127.0.0.1"),
        ("172.18.0.5", "203.0.113.7", "172.18.0.5"),  # a workspace at the hub port: headers ignored
        ("127.0.0.1", "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one host's IPv6 block
        ("::ffff:172.18.0.5", "", "172.18.0.5"),
    ],
)
def test_the_client_address_comes_from_the_connection_or_the_trusted_proxy(peer, forwarded_for, source):
    assert login_source(peer, forwarded_for, TRUSTED) == source


def request_from(peer, headers=None):
    """Stands in for a tornado request arriving at the hub from ``peer``."""
    context = SimpleNamespace(address=(peer, 50000))
    return SimpleNamespace(connection=SimpleNamespace(context=context), headers=headers or {})


def log_in_as(auth, username, password, peer, headers=None):
    handler = SimpleNamespace(request=request_from(peer, headers))
    return asyncio.run(auth.authenticate(handler, {"username": username, "password": password}))


def test_failures_lock_only_the_address_they_came_from(db):
    auth = authenticator(db, admin_password="operator-Chosen-pass-42")
    for _ in range(6):
        assert (
            log_in_as(auth, "admin", "wrong-password-123", "127.0.0.1", {"X-Forwarded-For": "203.0.113.66"})
            is None
        )
    assert auth.is_locked_out("admin", "203.0.113.66")
    for forged in ("198.51.100.1", "203.0.113.66, 198.51.100.2"):  # the proxy's entry is last
        headers = {"X-Forwarded-For": f"{forged}, 203.0.113.66", "X-Real-IP": "198.51.100.3"}
        assert log_in_as(auth, "admin", "operator-Chosen-pass-42", "127.0.0.1", headers) is None
    # the admin elsewhere logs in, and that does not unlock the attacker
    assert log_in_as(auth, "admin", "operator-Chosen-pass-42", "127.0.0.1", {"X-Forwarded-For": "192.0.2.10"})
    assert auth.is_locked_out("admin", "203.0.113.66")
    assert not auth.is_locked_out("admin", "192.0.2.10")


def test_failed_logins_take_bounded_memory(db):
    auth = authenticator(db, failed_login_memory=100)
    for i in range(5000):  # many usernames and addresses
        auth.add_login_attempt(f"user{i % 70}", f"10.0.{i // 256}.{i % 256}")
    assert len(auth.login_attempts) == 100
    assert list(auth.login_attempts)[-1] == ("user29", "10.0.19.135")  # the newest stay
    # failures older than the lock time are forgotten first
    for entry in auth.login_attempts.values():
        entry["time"] -= auth.seconds_before_next_try + 1
    auth.add_login_attempt("admin", "203.0.113.66")
    assert list(auth.login_attempts) == [("admin", "203.0.113.66")]


def test_an_expired_lock_starts_counting_again(db):
    auth = authenticator(db)
    for _ in range(5):
        auth.add_login_attempt("admin", "203.0.113.66")
    assert auth.is_locked_out("admin", "203.0.113.66")
    auth.login_attempts["admin", "203.0.113.66"]["time"] -= auth.seconds_before_next_try + 1
    assert not auth.is_locked_out("admin", "203.0.113.66")
    auth.add_login_attempt("admin", "203.0.113.66")  # one more failure does not lock again at once
    assert not auth.is_locked_out("admin", "203.0.113.66")


@pytest.mark.parametrize("traits", [{"trusted_proxies": ["10.0.0.0/8", "proxy"]}, {"failed_login_memory": 0}])
def test_bad_lockout_settings_name_the_setting(db, traits):
    with pytest.raises(TraitError, match=f"NativeAuthenticator.{next(iter(traits))}"):
        authenticator(db, **traits)
