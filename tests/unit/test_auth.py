"""The authenticator's first start (admin accounts, generated password) and its username rules, on an
in-memory JupyterHub database."""

import logging
import re
import stat

import pytest
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo

from mlhubspawner.auth import USERNAME_PATTERN, AdminPasswordError, NativeAuthenticator


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
