"""DYNAMIC_WHITELIST_ENABLED on a real hub: the allow-list file decides at each login, edits need no restart.

One hub (real JupyterHub, ML Hub's config, ``DYNAMIC_WHITELIST_ENABLED=true``) whose allow-list file the
operator's config moves into the test's directory (``c.NativeAuthenticator.allowed_users_file``).
"""

import os
import re
import unicodedata

import pytest

from support import Hub, log_in, sign_up

REFUSED = "is not on the list of users allowed on this hub: ask an administrator to add you."
UNREADABLE = "The list of users allowed on this hub cannot be read: ask an administrator."


def login_message(r):
    """The message under the login form, as text ('' when there is none)."""
    found = re.search(r"<p class=\"login_error\">(.*?)</p>", r.content.decode(), re.S)
    return " ".join(found.group(1).split()) if found else ""


@pytest.fixture(scope="module")
def allow_file(tmp_path_factory):
    return tmp_path_factory.mktemp("allow-list") / "dynamic_whitelist.txt"


@pytest.fixture(scope="module")
def listed_hub(docker, tmp_path_factory, allow_file):
    allow_file.write_text("# who may use the hub\nlena\n")
    hub = Hub(
        tmp_path_factory.mktemp("allow-hub"),
        user_config=f"c.NativeAuthenticator.allowed_users_file = {str(allow_file)!r}\n",
        env={"DYNAMIC_WHITELIST_ENABLED": "true"},
    )
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


@pytest.fixture(scope="module")
def admin(listed_hub):
    session, r = log_in(listed_hub, "admin")  # the admin is on no list
    assert r.status_code == 302, login_message(r)
    return session


def authorized(hub, admin, name):
    """``name`` signs up and the admin authorizes them (NativeAuthenticator)."""
    sign_up(hub, name)
    assert admin.get(f"{hub.url}/hub/authorize/{name}", timeout=30).status_code == 200
    return name


def logs_in(hub, name):
    _, r = log_in(hub, name)
    if r.status_code == 302:
        return True
    assert r.status_code == 403, (r.status_code, login_message(r))
    return login_message(r)


def test_listed_users_log_in_and_others_are_told_why_not(listed_hub, admin, allow_file):
    authorized(listed_hub, admin, "lena")
    authorized(listed_hub, admin, "omar")
    assert logs_in(listed_hub, "lena") is True
    assert logs_in(listed_hub, "omar") == f"omar {REFUSED}"
    # a wrong password is still only a wrong password: the list is not revealed to strangers
    _, r = log_in(listed_hub, "omar", "not-the-password-1")
    assert r.status_code == 200 and login_message(r) == "Invalid username or password."
    assert "not in the allow list" in listed_hub.log_tail(200)


def test_edits_take_effect_at_the_next_login_without_restart(listed_hub, admin, allow_file):
    authorized(listed_hub, admin, "pavel")
    assert logs_in(listed_hub, "pavel") == f"pavel {REFUSED}"
    with allow_file.open("a") as f:
        f.write("Pavel   # added later, in another case\n")
    assert logs_in(listed_hub, "pavel") is True
    allow_file.write_text("lena\n")  # removed again: out at the next login
    assert logs_in(listed_hub, "pavel") == f"pavel {REFUSED}"
    assert logs_in(listed_hub, "lena") is True


def test_sign_up_still_needs_the_admins_authorization(listed_hub, admin, allow_file):
    allow_file.write_text("lena\nrita\n")
    sign_up(listed_hub, "rita")
    _, r = log_in(listed_hub, "rita")
    assert "has not been authorized" in login_message(r)  # listed, not authorized: out
    assert admin.get(f"{listed_hub.url}/hub/authorize/rita", timeout=30).status_code == 200
    assert logs_in(listed_hub, "rita") is True


def test_look_alike_names_of_a_listed_user_stay_out(listed_hub, admin, allow_file):
    allow_file.write_text("lena\njosé\n")
    fullwidth = "ｌena"
    decomposed = unicodedata.normalize("NFD", "josé")
    for name in (fullwidth, decomposed):
        authorized(listed_hub, admin, name)
        assert logs_in(listed_hub, name) == f"{name} {REFUSED}", name
    # the listed spelling itself comes in, and upper case is the same account (names are lower-cased)
    authorized(listed_hub, admin, unicodedata.normalize("NFC", "josé"))
    assert logs_in(listed_hub, "josé") is True
    assert logs_in(listed_hub, "LENA") is True


def test_wildcards_and_patterns_in_the_file_are_literal_names(listed_hub, admin, allow_file):
    allow_file.write_text("*\n.*\nom.r\n^omar$\nomar|lena\n")
    assert logs_in(listed_hub, "omar") == f"omar {REFUSED}"
    assert logs_in(listed_hub, "lena") == f"lena {REFUSED}"
    assert logs_in(listed_hub, "admin") is True


def test_a_symlinked_file_follows_its_new_target(listed_hub, admin, allow_file):
    """A Kubernetes ConfigMap mount: the file is a link that is swapped on update."""
    folder = allow_file.parent
    (folder / "v1").write_text("omar\n")
    (folder / "v2").write_text("lena\n")
    (folder / "next").symlink_to(folder / "v1")
    os.replace(folder / "next", allow_file)
    try:
        assert logs_in(listed_hub, "omar") is True
        (folder / "next").symlink_to(folder / "v2")
        os.replace(folder / "next", allow_file)
        assert logs_in(listed_hub, "omar") == f"omar {REFUSED}"
        assert logs_in(listed_hub, "lena") is True
    finally:
        allow_file.unlink()
        allow_file.write_text("lena\n")


def test_a_missing_file_lets_only_admins_in_and_logs_why(listed_hub, admin, allow_file):
    allow_file.rename(allow_file.with_suffix(".away"))
    try:
        assert logs_in(listed_hub, "lena") == UNREADABLE
        assert logs_in(listed_hub, "admin") is True
        assert "allow list unreadable" in listed_hub.log_tail(40)
        assert "only admins can log in until it is fixed" in listed_hub.log_tail(40)
    finally:
        allow_file.with_suffix(".away").rename(allow_file)
    assert logs_in(listed_hub, "lena") is True


def test_a_bad_switch_value_stops_the_hub_naming_the_variable(docker, tmp_path):
    hub = Hub(tmp_path / "bad-switch", env={"DYNAMIC_WHITELIST_ENABLED": "yes please"})
    try:
        with pytest.raises(RuntimeError, match="hub exited"):
            hub.start(timeout=60)
        assert "DYNAMIC_WHITELIST_ENABLED='yes please': expected true or false" in hub.log_tail()
    finally:
        hub.destroy(docker)
