"""Sign-up, admin authorization and login (NativeAuthenticator on JupyterHub 6), and the options form."""

import pytest

from support import log_in, post_form, sign_up


@pytest.fixture(scope="module")
def admin(hub):
    """The first admin signs up as 'admin' and logs in."""
    sign_up(hub, "admin")
    session, r = log_in(hub, "admin")
    assert r.status_code == 302, r.text
    assert r.headers["Location"].endswith("/hub/home") or "/hub/" in r.headers["Location"]
    return session


def test_admin_signs_up_and_logs_in(admin, hub):
    assert admin.get(f"{hub.url}/hub/home", timeout=30).status_code == 200
    # the default server starts with the defaults, without a form
    assert admin.get(f"{hub.url}/hub/spawn/admin", timeout=60, allow_redirects=False).status_code == 302
    assert hub.wait_ready("admin")["ready"]
    hub.stop_server("admin")
    assert "admin" in hub.api("GET", "users/admin").json()["roles"]


def test_unauthorized_sign_up_cannot_log_in_until_the_admin_authorizes(admin, hub):
    sign_up(hub, "fay")
    _, r = log_in(hub, "fay")
    assert r.status_code == 200  # the login page again, with the reason
    assert "has not been authorized" in r.text
    assert admin.get(f"{hub.url}/hub/authorize/fay", timeout=30).status_code == 200
    _, r = log_in(hub, "fay")
    assert r.status_code == 302


def test_wrong_password_is_refused(hub, admin):
    _, r = log_in(hub, "admin", "not-the-password")
    assert r.status_code == 200 and "Invalid username or password" in r.text


def test_options_form_rejects_bad_values_next_to_the_form_and_starts_good_ones(admin, hub, docker):
    form = admin.get(f"{hub.url}/hub/spawn/admin/formws", timeout=30)
    assert form.status_code == 200
    for name in (
        "defined_image",
        "cpu_limit",
        "mem_limit",
        "shm_size",
        "env",
        "days_to_live",
        "is_mount_volume",
    ):
        assert f'name="{name}"' in form.text
    assert "mlhub-workspace" in form.text

    r = post_form(admin, hub, "spawn/admin/formws", {"cpu_limit": "lots", "is_mount_volume": "on"})
    assert r.status_code == 400
    assert "Invalid cpu_limit" in r.text
    assert 'id="mlhub-error-cpu_limit"' in r.text  # next to the field
    assert 'value="lots"' in r.text  # with what was typed
    assert not docker.containers.list(
        all=True, filters={"label": f"mlhub.origin={hub.hub_name}", "name": "formws"}
    )

    good = {
        "cpu_limit": "0.5",
        "mem_limit": "1G",
        "env": "GREETING=hello",
        "days_to_live": "1",
        "is_mount_volume": "on",
    }
    r = post_form(admin, hub, "spawn/admin/formws", good)
    assert r.status_code == 200
    hub.wait_ready("admin", "formws")
    container = docker.containers.get(f"{hub.hub_name}-ws-admin--formws")
    assert "GREETING=hello" in container.attrs["Config"]["Env"]
    assert container.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    hub.stop_server("admin", "formws", remove=True)
