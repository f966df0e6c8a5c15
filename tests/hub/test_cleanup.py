"""The cleanup service, run by a real hub, against the real Docker engine."""

import time

import psutil
import pytest
import requests

from mlhubspawner import naming

from support import Hub, exists, labelled_resources

GRACE = 4  # seconds an orphaned volume is kept in this hub

CLEANUP_CONFIG = """
c.MLHubDockerSpawner.max_days_to_live = 30
c.JupyterHub.load_roles.append(
    {"name": "cleanup-reader", "scopes": ["custom:mlhub-cleanup:read"], "users": ["reader"]}
)
# the test service may create tokens for admin users
c.JupyterHub.load_roles.append({"name": "admin", "services": ["tests"]})
"""


@pytest.fixture(scope="module")
def chub(docker, tmp_path_factory):
    """A hub whose cleanup service has no minimum age and a 4 s volume grace period."""
    hub = Hub(tmp_path_factory.mktemp("cleanup-hub"), user_config=CLEANUP_CONFIG)
    hub.env.update(
        CLEANUP_INTERVAL_SECONDS="-1", CLEANUP_MIN_AGE_SECONDS="0", CLEANUP_VOLUME_GRACE_SECONDS=str(GRACE)
    )
    try:
        hub.start()
        wait_for_service(hub)
        yield hub
    finally:
        hub.destroy(docker)


def service(hub, method, path="", token=None, **kwargs):
    headers = {"Authorization": f"token {token}"} if token is not False else {}
    if token is None:
        headers = {"Authorization": f"token {hub.token}"}
    url = f"{hub.url}/services/cleanup-service/{path}"
    return requests.request(method, url, headers=headers, timeout=120, **kwargs)


def wait_for_service(hub, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service(hub, "GET").status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"cleanup service did not answer:\n{hub.log_tail()}")


def user_token(hub, user, **body):
    r = hub.api("POST", f"users/{user}/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def names(report, action=None):
    return {
        (a["kind"], a.get("name") or a.get("server"))
        for a in report["actions"]
        if action in (None, a["action"])
    }


def test_permissions(chub):
    assert service(chub, "GET", token=False).status_code == 401
    plain = user_token(chub, chub.create_user("plain"))
    assert service(chub, "GET", token=plain).status_code == 403
    assert service(chub, "POST", "users", token=plain).status_code == 403
    reader = user_token(chub, chub.create_user("reader"))
    assert service(chub, "GET", "users", token=reader).status_code == 200
    assert service(chub, "POST", "users", token=reader).status_code == 403
    chub.create_user("boss", admin=True)
    boss = user_token(chub, "boss")
    assert service(chub, "GET", "expired", token=boss).status_code == 200
    # bad requests get clean JSON 4xx
    for method, path, body, status in [
        ("DELETE", "users", None, 405),
        ("POST", "users", "{not json", 400),
        ("POST", "users", '{"force": true}', 400),
        ("GET", "nothing-here", None, 404),
    ]:
        r = service(chub, method, path, token=boss, data=body)
        assert r.status_code == status, (method, path, r.text)
        assert r.json()["status"] == status


def test_the_services_own_token_cannot_start_or_reach_workspaces(chub):
    """Least privilege: the cleanup service's token (taken from its process, as an intruder on the hub
    host would) stops and deletes servers but has no ``servers`` scope to start one."""
    token = next(
        p.environ()["JUPYTERHUB_API_TOKEN"]
        for p in psutil.Process(chub.process.pid).children(recursive=True)
        if "cleanup_service" in " ".join(p.cmdline())
    )
    scopes = chub.api("GET", "user", token=token).json()["scopes"]
    assert "delete:servers" in scopes and "servers" not in scopes, scopes
    user = chub.create_user("bystander")
    assert chub.api("POST", f"users/{user}/server", token=token, json={}).status_code == 403
    assert chub.server_model(user) is None


def test_deleted_users_resources_go_volumes_after_the_grace_period(chub, docker):
    chub.create_user("kept")
    container, network, volume = labelled_resources(docker, chub.hub_name, "gone", "srv")
    kept = labelled_resources(docker, chub.hub_name, "kept", "")
    other_hub = labelled_resources(docker, "otherhub", "gone", "srv")
    try:
        report = service(chub, "GET", "users").json()
        expected = {("container", container.name), ("network", network.name)}
        assert names(report, "remove") == expected
        assert names(report, "mark_orphaned") == {("volume", volume.name)}

        result = service(chub, "POST", "users").json()
        assert names(result, "remove") == expected  # the dry run said exactly this
        assert result["failed"] == 0
        assert not exists(docker.containers, container.name)
        assert not exists(docker.networks, network.name)
        assert exists(docker.volumes, volume.name)  # in its grace period

        assert names(service(chub, "POST", "users").json(), "keep") == {("volume", volume.name)}
        time.sleep(GRACE + 0.5)
        assert names(service(chub, "POST", "users").json(), "remove") == {("volume", volume.name)}
        assert not exists(docker.volumes, volume.name)

        # the existing user's resources and another hub's were never touched
        for resource in (*kept, *other_hub):
            resource.reload()
    finally:
        other_container, other_network, other_volume = other_hub
        other_container.remove(force=True)
        other_network.remove()
        other_volume.remove(force=True)


def test_users_past_the_first_page_are_never_mistaken_for_deleted(chub, docker):
    users = [f"page{i:03d}" for i in range(260)]
    for start in range(0, len(users), 100):
        r = chub.api("POST", "users", json={"usernames": users[start : start + 100]})
        assert r.status_code in (201, 409), r.text
    late = labelled_resources(docker, chub.hub_name, users[-1], "x")
    report = service(chub, "POST", "users").json()
    # the user exists (on page 2): nothing of theirs is removed ("x" is no server of theirs, so
    # its volume starts a grace period, which is right)
    assert not [a for a in report["actions"] if a.get("user") == users[-1] and a["action"] == "remove"]
    for resource in late:
        resource.reload()  # still there
    late[0].remove(force=True)


def test_engine_errors_do_not_stop_the_sweep(chub, docker):
    container, network, volume = labelled_resources(docker, chub.hub_name, "stuck")
    # a container that is not ours keeps the network busy: its removal fails
    blocker = docker.containers.run(
        container.image.tags[0],
        ["sleep", "infinity"],
        network=network.name,
        detach=True,
        labels={"mlhub.test": "blocker"},
    )
    try:
        result = service(chub, "POST", "users").json()
        assert result["failed"] == 1
        assert network.name in result["errors"][0]
        assert not exists(docker.containers, container.name)  # the rest was done
        status = service(chub, "GET").json()
        assert network.name in status["last_error"]
        metrics = service(chub, "GET", "metrics").text
        assert "mlhub_cleanup_errors_total 1" in metrics
        assert "mlhub_cleanup_hub_api_calls_total" in metrics
        assert "asked for the users sweep" in chub.log_tail(400)  # an audit trail of who ran it
    finally:
        blocker.remove(force=True)
    assert service(chub, "POST", "users").json()["failed"] == 0
    assert not exists(docker.networks, network.name)


def test_expired_servers_disappear_and_others_stay(chub, docker):
    user = chub.create_user("mortal")
    short = {"days_to_live": 6 / 86400, "mem_limit": "512M"}  # six seconds
    assert chub.spawn(user, "brief", short).status_code in (201, 202)
    assert chub.spawn(user, "", short).status_code in (201, 202)  # the default server expires too
    assert chub.spawn(user, "long", {"days_to_live": 1, "mem_limit": "512M"}).status_code in (201, 202)
    time.sleep(6.5)
    report = service(chub, "GET", "expired").json()
    assert names(report, "delete_server") == {("server", "brief"), ("server", "")}
    result = service(chub, "POST", "expired").json()
    assert result["failed"] == 0
    servers = chub.api("GET", f"users/{user}", params={"include_stopped_servers": 1}).json()["servers"]
    assert "brief" not in servers
    assert not servers[""].get("ready")
    assert servers["long"]["ready"]
    for server, gone in (("brief", True), ("", True), ("long", False)):
        assert exists(docker.containers, naming.workspace_name(chub.hub_name, user, server)) is not gone
    chub.stop_server(user, "long", remove=True)


def test_lifetime_can_be_extended_by_the_owner_within_the_policy(chub):
    user = chub.create_user("owner")
    assert chub.spawn(user, "w", {"days_to_live": 1, "mem_limit": "512M"}).status_code in (201, 202)
    token = user_token(chub, user)
    url = f"{chub.url}/hub/api/mlhub/users/{user}/servers/w/lifetime"
    headers = {"Authorization": f"token {token}"}
    before = requests.get(url, headers=headers, timeout=30).json()
    assert 86000 < before["remaining_lifetime_seconds"] <= 86400
    r = requests.post(url, headers=headers, json={"days_to_live": 3}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["expiration_timestamp_seconds"] == pytest.approx(before["created_at"] + 3 * 86400, abs=1)
    assert requests.post(url, headers=headers, json={"days_to_live": 60}, timeout=30).status_code == 400
    assert requests.post(url, headers=headers, json={"days_to_live": "soon"}, timeout=30).status_code == 400
    # an admin may go beyond the policy
    assert (
        chub.api("POST", f"mlhub/users/{user}/servers/w/lifetime", json={"days_to_live": 60}).status_code
        == 200
    )
    # the hub's state (what the cleanup service reads) has the new expiration
    state = chub.api("GET", f"users/{user}").json()["servers"]["w"]["state"]["mlhub"]
    assert state["expiration"] == pytest.approx(before["created_at"] + 60 * 86400, abs=1)
    # another user may not touch it
    other = user_token(chub, chub.create_user("nosy"))
    r = requests.post(url, headers={"Authorization": f"token {other}"}, json={"days_to_live": 1}, timeout=30)
    assert r.status_code in (403, 404)
    chub.stop_server(user, "w", remove=True)


def test_young_resources_are_left_alone(hub, docker):
    """The session hub keeps the default minimum age (600 s): a fresh orphan is not touched."""
    container, network, volume = labelled_resources(docker, hub.hub_name, "newborn")
    wait_for_service(hub)
    assert service(hub, "GET", "users").json()["actions"] == []
    assert service(hub, "POST", "users").json()["actions"] == []
    for resource in (container, network, volume):
        resource.reload()


def test_services_work_by_themselves(docker, tmp_path):
    """Without any API call: the periodic sweep removes a deleted user's container, and
    jupyterhub-idle-culler (a service with its own role) stops an idle workspace."""
    hub = Hub(tmp_path / "auto-hub")
    hub.env.update(
        MLHUB_IDLE_TIMEOUT_SECONDS="10", CLEANUP_INTERVAL_SECONDS="10", CLEANUP_MIN_AGE_SECONDS="0"
    )
    try:
        hub.start()
        services = hub.api("GET", "services").json()
        assert services["idle-culler"]["admin"] is False  # a least-privilege role, not admin
        assert services["cleanup-service"]["admin"] is False
        orphan, _, _ = labelled_resources(docker, hub.hub_name, "long-gone")
        user = hub.create_user("sleepy")
        assert hub.spawn(user, "nap", {"mem_limit": "512M"}).status_code in (201, 202)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            (hub.server_model(user, "nap") or {}).get("ready") or exists(docker.containers, orphan.name)
        ):
            time.sleep(1)
        assert not (hub.server_model(user, "nap") or {}).get("ready"), "the idle server was not culled"
        assert not exists(docker.containers, orphan.name), "the periodic sweep did not run"
    finally:
        hub.destroy(docker)
