"""Bounded input and API authorization (issue 11, items 3 and 8), tried as an attacker on a real hub.

- ``days_to_live`` has a hard ceiling for everyone, admins included; pages and JupyterHub's own API
  survive any stored expiration.
- The lifetime API honours scope filters (``admin:servers!user=<one user>`` is not admin of everyone).
- The cleanup service authorizes by token scopes, not by the ``admin`` flag.
- Admins see the names of a workspace's env variables, never their values; owners see both.
"""

import json
import sqlite3
import time

import pytest
import requests

from support import Hub, log_in, sign_up

SMALL = {"mem_limit": "512M"}
MAX_DAYS_TO_LIVE = 3650  # the hard ceiling (mlhubspawner.options.MAX_DAYS_TO_LIVE)

# the operator removed the lifetime maximum: only the hard ceiling is left
OPEN_CONFIG = """
c.MLHubDockerSpawner.max_days_to_live = None
c.NativeAuthenticator.open_signup = True
c.JupyterHub.load_roles.append({"name": "admin", "services": ["tests"]})  # may make admins
"""

# a lifetime maximum, and a helper role that is admin of alice's servers only
SCOPED_CONFIG = """
c.MLHubDockerSpawner.max_days_to_live = 30
c.JupyterHub.load_roles.append(
    {"name": "alice-helper", "scopes": ["admin:servers!user=alice"], "users": ["mallory"]}
)
c.JupyterHub.load_roles.append({"name": "admin", "services": ["tests"]})  # may make admins
"""


@pytest.fixture(scope="module")
def open_hub(docker, tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("bounds-hub"), user_config=OPEN_CONFIG)
    hub.env.update(CLEANUP_INTERVAL_SECONDS="-1")
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


@pytest.fixture(scope="module")
def scoped_hub(docker, tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("scopes-hub"), user_config=SCOPED_CONFIG)
    hub.env.update(CLEANUP_INTERVAL_SECONDS="-1")
    try:
        yield hub.start()
    finally:
        hub.destroy(docker)


def user_token(hub, user, **body):
    r = hub.api("POST", f"users/{user}/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def session_of(hub, name, admin=False):
    """A logged-in browser session of a signed-up user (open sign-up), made admin through the API."""
    sign_up(hub, name)
    hub.create_user(name, admin=admin)
    session, r = log_in(hub, name)
    assert r.status_code == 302, r.text
    return session


def strict_json(text):
    """JSON as browsers and other languages parse it: ``Infinity`` and ``NaN`` are errors."""

    def refuse(constant):
        raise AssertionError(f"invalid JSON: {constant} in the answer")

    return json.loads(text, parse_constant=refuse)


def lifetime(hub, user, server, days, token=None):
    """POST the lifetime API; a string ``days`` goes into the JSON text as is (``Infinity`` too)."""
    value = days if isinstance(days, str) else json.dumps(days)
    path = f"mlhub/users/{user}/servers/{server}/lifetime"
    return hub.api("POST", path, token, data='{"days_to_live": ' + value + "}")


def test_huge_days_to_live_is_refused_and_the_pages_keep_working(open_hub):
    hub = open_hub
    session = session_of(hub, "dreamer")
    for days in (1e7, "1e7", MAX_DAYS_TO_LIVE + 1, "1e308", "inf", "nan"):
        r = hub.api("POST", "users/dreamer/servers/w", json={**SMALL, "days_to_live": days})
        assert r.status_code == 400, (days, r.status_code, r.text)
        assert "days_to_live" in r.json()["message"], r.text
        assert hub.server_model("dreamer", "w") is None  # nothing half-created
    assert session.get(f"{hub.url}/hub/home", timeout=30).status_code == 200
    # the ceiling itself is allowed
    r = hub.spawn("dreamer", "w", {**SMALL, "days_to_live": MAX_DAYS_TO_LIVE})
    assert r.status_code in (201, 202), r.text
    home = session.get(f"{hub.url}/hub/home", timeout=30)
    assert home.status_code == 200 and "3649 days" in home.text
    hub.stop_server("dreamer", "w", remove=True)


def test_admins_too_are_bound_by_the_ceiling_of_the_lifetime_api(open_hub):
    hub = open_hub
    hub.create_user("keeper")
    assert hub.spawn("keeper", "w", {**SMALL, "days_to_live": 1}).status_code in (201, 202)
    for days in (1e308, MAX_DAYS_TO_LIVE + 1, "Infinity", "NaN", "-1", '"3"', "true"):
        r = lifetime(hub, "keeper", "w", days)  # the test service is admin of every server
        assert r.status_code == 400, (days, r.text)
        assert "days_to_live" in r.json()["message"]
    assert lifetime(hub, "keeper", "w", MAX_DAYS_TO_LIVE).status_code == 200
    users = hub.api("GET", "users")
    assert users.status_code == 200
    strict_json(users.text)
    hub.stop_server("keeper", "w", remove=True)


def test_owners_see_their_env_values_admins_only_the_names(open_hub):
    hub = open_hub
    owner = session_of(hub, "envy")
    boss = session_of(hub, "boss", admin=True)
    secret = "hunter2-do-not-show"
    r = hub.spawn("envy", "w", {**SMALL, "env": {"SECRET_TOKEN": secret}})
    assert r.status_code in (201, 202), r.text
    home = owner.get(f"{hub.url}/hub/home", timeout=30)
    assert home.status_code == 200 and "SECRET_TOKEN" in home.text and secret in home.text
    admin_page = boss.get(f"{hub.url}/hub/mlhub/admin", timeout=30)
    assert admin_page.status_code == 200
    assert "SECRET_TOKEN" in admin_page.text
    assert secret not in admin_page.text
    hub.stop_server("envy", "w")
    # the options form an admin opens for the owner's workspace is not prefilled with the values
    form = boss.get(f"{hub.url}/hub/spawn/envy/w", timeout=30)
    assert form.status_code == 200 and 'name="env"' in form.text
    assert secret not in form.text
    # the owner's own form keeps them
    assert secret in owner.get(f"{hub.url}/hub/spawn/envy/w", timeout=30).text
    hub.api("DELETE", "users/envy/servers/w", json={"remove": True})


def _store_state(hub, user, server, state, user_options):
    db = sqlite3.connect(hub.workdir / "data" / "jupyterhub.sqlite")
    try:
        cursor = db.execute(
            "UPDATE spawners SET state = ?, user_options = ? WHERE name = ? AND user_id = "
            "(SELECT id FROM users WHERE name = ?)",
            (json.dumps(state), json.dumps(user_options), server, user),
        )
        assert cursor.rowcount == 1
        db.commit()
    finally:
        db.close()


def test_pages_and_the_hub_api_survive_any_stored_expiration(open_hub, docker):
    """What yesterday's hub could store (an infinite or year-29405 expiration) breaks nothing today."""
    hub = open_hub
    admin = session_of(hub, "chief", admin=True)
    owner = session_of(hub, "legacy")
    for server in ("inf", "far", "junk"):
        assert hub.spawn("legacy", server, SMALL).status_code in (201, 202)
        hub.stop_server("legacy", server)
    hub.stop()
    created = time.time() - 3600
    options = {"image": hub.env["MLHUB_WORKSPACE_IMAGE"], "mem_limit": 512 * 1024**2, "env": {}}
    _store_state(
        hub,
        "legacy",
        "inf",
        {
            "mlhub": {
                "created_at": created,
                "expiration": float("inf"),
                "options": {**options, "days_to_live": 1e308},
            }
        },
        {"days_to_live": 1e308, "mem_limit": "512M"},
    )
    _store_state(
        hub,
        "legacy",
        "far",
        {
            "mlhub": {
                "created_at": created,
                "expiration": created + 1e7 * 86400,
                "options": {**options, "days_to_live": 1e7},
            }
        },
        {"days_to_live": 1e7, "mem_limit": "512M"},
    )
    _store_state(
        hub,
        "legacy",
        "junk",
        {"mlhub": {"created_at": "yesterday", "expiration": [1], "options": {"image": 7, "bogus": True}}},
        {"mem_limit": "512M"},
    )
    hub.start()
    # JupyterHub re-reads admin_users on start: make chief admin again
    assert hub.api("PATCH", "users/chief", json={"admin": True}).status_code == 200
    for session, path in ((owner, "home"), (admin, "mlhub/admin")):
        r = session.get(f"{hub.url}/hub/{path}", timeout=30)
        assert r.status_code == 200, (path, r.status_code, hub.log_tail())
    for path in ("users", "users/legacy"):
        r = hub.api("GET", path, params={"include_stopped_servers": 1})
        assert r.status_code == 200, r.text
        strict_json(r.text)
    r = hub.api("GET", "mlhub/users/legacy/servers/inf/lifetime")
    assert r.status_code == 200, r.text
    strict_json(r.text)
    # and the workspaces start again
    for server in ("inf", "far", "junk"):
        r = hub.spawn("legacy", server, {**SMALL, "days_to_live": 1})
        assert r.status_code in (201, 202), (server, r.text)
        hub.stop_server("legacy", server, remove=True)


def test_a_filtered_admin_scope_is_not_admin_of_everyone(scoped_hub):
    hub = scoped_hub
    for user in ("mallory", "alice"):
        hub.create_user(user)
        assert hub.spawn(user, "w", {**SMALL, "days_to_live": 1}).status_code in (201, 202)
    token = user_token(hub, "mallory")
    # mallory may go beyond the policy on alice's workspace (the role says so) ...
    assert lifetime(hub, "alice", "w", 60, token).status_code == 200
    # ... but on her own workspace she is an ordinary user: at most 30 days, and no "never"
    for days in (60, None):
        r = lifetime(hub, "mallory", "w", days, token)
        assert r.status_code == 400, (days, r.text)
        assert "at most 30" in r.json()["message"]
    model = hub.api("GET", "mlhub/users/mallory/servers/w/lifetime").json()
    assert model["days_to_live"] == 1
    for user in ("mallory", "alice"):
        hub.stop_server(user, "w", remove=True)


def test_the_cleanup_service_goes_by_token_scopes_not_the_admin_flag(scoped_hub):
    hub = scoped_hub
    hub.create_user("root", admin=True)
    url = f"{hub.url}/services/cleanup-service/"

    def status(token):
        return requests.get(url, headers={"Authorization": f"token {token}"}, timeout=30).status_code

    # an admin's token restricted to reading names may not run (or even read) cleanup sweeps
    narrow = user_token(hub, "root", scopes=["read:users:name"])
    assert status(narrow) == 403
    r = requests.post(url + "users", headers={"Authorization": f"token {narrow}"}, timeout=30)
    assert r.status_code == 403
    # an admin's full token carries the cleanup scopes through the admin role
    assert status(user_token(hub, "root")) == 200
