"""A safe first start: nobody claims a fresh hub's admin account; lockout, password and username rules.

Fresh hubs of their own (real JupyterHub, ML Hub's config): one with ``MLHUB_ADMIN_PASSWORD`` set by the
operator, one without (the password is generated, kept in the data dir and logged once).
"""

import re
import stat
import urllib.parse

import pytest
import requests

from support import (
    PASSWORD,
    Hub,
    HubContainer,
    base_image,
    browser,
    generated_admin_password,
    log_in,
    post_form,
)

OPERATOR_PASSWORD = "operator-Chosen-pass-42"
ATTACKER_PASSWORD = "attacker-Chosen-pass-99"


@pytest.fixture(scope="module")
def fresh(docker, tmp_path_factory):
    """A hub that has just started for the first time, its admin password set by the operator."""
    hub = Hub(tmp_path_factory.mktemp("fresh"), env={"MLHUB_ADMIN_PASSWORD": OPERATOR_PASSWORD})
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


def sign_up_as(hub, username, password, confirmation=None):
    session = browser(hub)
    fields = {
        "username": username,
        "signup_password": password,
        "signup_password_confirmation": password if confirmation is None else confirmation,
    }
    return post_form(session, hub, "signup", fields)


def alert(r):
    """The message NativeAuthenticator's sign-up and login pages show, as text."""
    found = re.search(r'class="(?:alert[^"]*|login_error)"[^>]*>(.*?)</(?:div|p)>', r.text, re.S)
    return (
        re.sub(r"<[^>]+>|\s+", " ", found.group(1)).strip()
        if found
        else f"(no message; HTTP {r.status_code})"
    )


def authorize(hub, name):
    admin, r = log_in(hub, "admin", OPERATOR_PASSWORD)
    assert r.status_code == 302, r.text
    assert admin.get(f"{hub.url}/hub/authorize/{name}", timeout=30).status_code == 200


def test_whoever_arrives_first_cannot_claim_the_admin_account(fresh):
    for name in ("admin", "Admin"):
        r = sign_up_as(fresh, name, ATTACKER_PASSWORD)
        assert r.status_code == 403 and "cannot be signed up" in alert(r), alert(r)
    _, r = log_in(fresh, "admin", ATTACKER_PASSWORD)
    assert r.status_code != 302
    # the operator's password is the admin's, and the admin is an admin
    admin, r = log_in(fresh, "admin", OPERATOR_PASSWORD)
    assert r.status_code == 302, r.text
    assert admin.get(f"{fresh.url}/hub/authorize", timeout=30).status_code == 200
    assert fresh.api("GET", "users/admin").json()["admin"] is True


def test_short_and_common_passwords_are_refused_at_sign_up(fresh):
    for password in ("Sh0rt-pw", "qwerty123456"):
        r = sign_up_as(fresh, "paula", password)
        assert "at least 12" in alert(r) and "not too common" in alert(r), alert(r)
    # nothing was created: the name is still free
    r = sign_up_as(fresh, "paula", PASSWORD)
    assert "sent to the admin" in alert(r), alert(r)


BAD_NAMES = ["eve\nadmin", "eve\r\nx", "tab\tname", "nul\x00x", "bell\x07x", "esc\x1b[31mx", "ls\u2028x",
             "zw\u200bsp", "rtl\u202ex", "two words", " lead", "c" * 129]  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_names_with_control_characters_or_whitespace_are_refused(fresh, name):
    r = sign_up_as(fresh, name, PASSWORD)
    assert r.status_code == 400 and "no spaces, line breaks, control" in alert(r), alert(r)
    r = fresh.api("POST", f"users/{urllib.parse.quote(name, safe='')}")
    assert r.status_code == 400, r.text
    names = [u["name"] for u in fresh.api("GET", "users").json()]
    assert name not in names and name.lower() not in names


def test_repeated_bad_passwords_lock_the_account_for_a_while(fresh):
    assert "sent to the admin" in sign_up_as(fresh, "lena", PASSWORD).text
    authorize(fresh, "lena")
    for _ in range(5):
        _, r = log_in(fresh, "lena", "not-lenas-password")
        assert r.status_code == 200
    _, r = log_in(fresh, "lena", PASSWORD)  # the right password, but locked
    assert r.status_code == 200 and "Too many failed logins" in alert(r), alert(r)
    # others are not locked out
    _, r = log_in(fresh, "admin", OPERATOR_PASSWORD)
    assert r.status_code == 302


class _FromAddress(requests.adapters.HTTPAdapter):
    """Connections that leave from one loopback address (the client a test plays)."""

    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def log_in_from(hub, address, username, password, headers=None):
    """A browser at ``address`` (127.0.0.x) logs in; the login POST's response."""
    session = browser_at(hub, address, headers)
    fields = {"username": username, "password": password}
    return post_form(session, hub, "login", fields, allow_redirects=False)


def browser_at(hub, address, headers=None):
    session = requests.Session()
    session.mount("http://", _FromAddress(address))
    session.headers.update(headers or {})
    session.get(f"{hub.url}/hub/login", timeout=30)
    return session


def test_an_attacker_cannot_lock_the_admin_out(fresh):
    """Failed logins count per (username, client address): the attacker locks only their own address."""
    for _ in range(7):
        r = log_in_from(fresh, "127.0.0.2", "admin", "guessed-wrong-password")
        assert r.status_code == 200, r.status_code
    r = log_in_from(fresh, "127.0.0.2", "admin", OPERATOR_PASSWORD)  # right password, locked address
    assert r.status_code == 200 and "Too many failed logins" in alert(r), alert(r)
    # forged client addresses do not escape the lock
    for forged in ({"X-Forwarded-For": "10.1.2.3"}, {"X-Real-IP": "10.1.2.4"},
                   {"X-Forwarded-For": "10.1.2.5", "X-Real-IP": "10.1.2.5"}):  # fmt: skip
        r = log_in_from(fresh, "127.0.0.2", "admin", OPERATOR_PASSWORD, headers=forged)
        assert r.status_code == 200 and "Too many failed logins" in alert(r), (forged, alert(r))
    # the admin, from their own address, logs in with the right password
    r = log_in_from(fresh, "127.0.0.1", "admin", OPERATOR_PASSWORD)
    assert r.status_code == 302, alert(r)
    # and that does not unlock the attacker's address
    r = log_in_from(fresh, "127.0.0.2", "admin", OPERATOR_PASSWORD)
    assert r.status_code == 200 and "Too many failed logins" in alert(r), alert(r)
    # the operator sees who was locked, from where
    assert "Logins as 'admin' from 127.0.0.2 locked for 600s" in fresh.log_path.read_text()


def test_without_the_variable_a_password_is_generated_kept_0600_and_logged_once(docker, tmp_path):
    hub = Hub(tmp_path / "gen", env={"MLHUB_ADMIN_PASSWORD": None})
    try:
        hub.start()
        log = hub.log_path.read_text()
        password = generated_admin_password(log)
        assert password and len(password) >= 20, log
        stored = hub.workdir / "data/admin-password"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert stored.read_text().strip() == password
        _, r = log_in(hub, "admin", password)
        assert r.status_code == 302, r.text
        assert "cannot be signed up" in alert(sign_up_as(hub, "admin", ATTACKER_PASSWORD))

        hub.restart()  # the same data: not generated again, not logged again, still the password
        assert hub.log_path.read_text().count(password) == 1
        assert stored.read_text().strip() == password
        _, r = log_in(hub, "admin", password)
        assert r.status_code == 302, r.text

        # a later start with MLHUB_ADMIN_PASSWORD resets the admin's password (recovery)
        hub.stop()
        hub.env["MLHUB_ADMIN_PASSWORD"] = OPERATOR_PASSWORD
        hub.start()
        assert log_in(hub, "admin", password)[1].status_code != 302
        assert log_in(hub, "admin", OPERATOR_PASSWORD)[1].status_code == 302
        assert hub.log_path.read_text().count(password) == 1
    finally:
        hub.destroy(docker)


def test_a_too_short_admin_password_stops_the_hub_naming_the_variable(tmp_path):
    hub = Hub(tmp_path / "short", env={"MLHUB_ADMIN_PASSWORD": "tooshort"})
    with pytest.raises(RuntimeError, match="MLHUB_ADMIN_PASSWORD") as failed:
        hub.start(timeout=30)
    assert "tooshort" not in str(failed.value)  # the value is never echoed
    assert not (hub.workdir / "data/jupyterhub.sqlite").exists()


ATTACKER_SCRIPT = """
import http.cookiejar, socket, ssl, sys, urllib.error, urllib.parse, urllib.request
url, passwords = sys.argv[1], sys.argv[2:]
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(
    urllib.request.HTTPSHandler(context=ssl._create_unverified_context()),
    urllib.request.HTTPCookieProcessor(jar), Stay)
opener.open(url + "/hub/login", timeout=30).read()
host, port = urllib.parse.urlsplit(url).netloc.split(":")
print(socket.create_connection((host, int(port)), timeout=30).getsockname()[0])  # this client's address
xsrf = next(c.value for c in jar if c.name == "_xsrf")
for password in passwords:
    body = urllib.parse.urlencode({"username": "admin", "password": password, "_xsrf": xsrf}).encode()
    try:
        r = opener.open(url + "/hub/login", body, timeout=60)
        print(r.status, "Too many failed logins" in r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code, False)
"""


def test_behind_the_tls_front_the_attackers_own_address_is_locked(docker, tmp_path):
    """Hub image with TLS: nginx hands the hub the real client address; an attacker host locks only itself."""
    hub = HubContainer(docker, tmp_path / "tls", ssl=True, env={"MLHUB_ADMIN_PASSWORD": OPERATOR_PASSWORD})
    try:
        hub.start()
        hub.container.reload()
        network, settings = next(iter(hub.container.attrs["NetworkSettings"]["Networks"].items()))
        attacker = docker.containers.run(
            base_image(docker),
            ["python3", "-c", ATTACKER_SCRIPT, f"https://{settings['IPAddress']}:8080"]
            + ["not-the-password-1"] * 6
            + [OPERATOR_PASSWORD],
            detach=True,
            network=network,
            labels=dict([hub.test_label.split("=", 1)]),
        )
        try:
            attacker.wait(timeout=120)
            address, *lines = attacker.logs().decode().split("\n")
        finally:
            attacker.remove(force=True)
        # the attacker's 6th try and the right password from its host are refused with the lockout message
        assert lines[5:7] == ["200 True", "200 True"], lines
        # the admin, from another address (this host, through the published port), logs in
        _, r = log_in(hub, "admin", OPERATOR_PASSWORD)
        assert r.status_code == 302, alert(r)
        assert f"Logins as 'admin' from {address} locked" in hub.container.logs().decode()
    finally:
        hub.destroy()
