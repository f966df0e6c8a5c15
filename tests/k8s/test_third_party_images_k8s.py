"""Third-party workspace images on Kubernetes (MLHubKubernetesSpawner on the fake API server).

The pod of each image convention (``mlhubspawner.images``) as the API server receives it, in namespaces
labelled with Pod Security levels as an operator labels them: the fake's admission refuses what the level
refuses (403), and each pod is checked with the same pure checks. A docker-stacks image runs under
``restricted``; an ml-workspace image needs root, which ``restricted`` refuses: the start is a 400 naming
the image and telling the admin to use ``pod_security_level = "baseline"``.

The module runs on its own event loop (see ``test_kubernetes_spawner.py``).
"""

import functools
import sys
from pathlib import Path

import pytest
from jupyterhub import orm
from tornado import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import kube_spawners  # noqa: E402
import pod_security  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8s3p"
RESTRICTED_NS = "ws3p-restricted"
BASELINE_NS = "ws3p-baseline"
IMAGE = "mlhub-workspace:test"
ML_WORKSPACE = "mltooling/ml-workspace:0.13.2"
STACKS = "quay.io/jupyter/scipy-notebook:2024-10-07"
NOT_OFFERED = "someone/else:1"


fake = kube_spawners.fake_apiserver_fixture(
    RESTRICTED_NS,
    prepare=lambda fake: kube_spawners.labelled_namespaces(
        fake, {RESTRICTED_NS: "restricted", BASELINE_NS: "baseline"}
    ),
)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server="", namespace=RESTRICTED_NS, **traits):
    # the admin's settings for ML Hub's own image: a port and command the third-party images must not get
    defaults = {"workspace_images": [ML_WORKSPACE, STACKS], "port": 8888, "cmd": ["jupyterhub-singleuser"]}
    config = kube_spawners.spawner_config(**{**defaults, **traits})
    return kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=namespace, image=IMAGE, config=config
    )


owned_by = functools.partial(kube_spawners.owned_by, hub=HUB, kinds=kube_spawners.POD_PVC_SERVICE)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def mount_of(pod, container):
    (pvc_volume,) = [v for v in pod["spec"]["volumes"] if v.get("persistentVolumeClaim")]
    return next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == pvc_volume["name"])


async def test_a_docker_stacks_image_runs_under_restricted_as_jovyan_with_the_volume_in_work(fake):
    spawner = make_spawner(fake, "alice")
    spawner.user_options = {"image": STACKS}
    url = await spawner.start()
    pod = fake.get("pods", RESTRICTED_NS, spawner.pod_name)
    assert pod_security.violations(pod, "restricted") == []
    (container,) = pod["spec"]["containers"]
    assert container["image"] == STACKS
    # the image's CMD (start-notebook → start-singleuser), not the command configured for ML Hub's image
    assert "command" not in container and "args" not in container
    psc = pod["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"], psc["runAsNonRoot"]) == (
        1000,
        100,
        100,
        True,
    )
    assert mount_of(pod, container) == "/home/jovyan/work"
    env = env_of(container)
    assert env["JUPYTERHUB_ROOT_DIR"] == "/home/jovyan/work"
    # the stacks listen where JUPYTERHUB_SERVICE_URL says: the spawner's port
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://0.0.0.0:8888/") and url.endswith(":8888")
    assert "AUTHENTICATE_VIA_JUPYTER" not in env
    await spawner.stop(now=True)


async def test_a_root_ml_workspace_image_under_restricted_is_a_400_telling_the_admin_to_use_baseline(fake):
    spawner = make_spawner(fake, "bob")
    spawner.user_options = {"image": ML_WORKSPACE}
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    message = error.value.log_message % error.value.args
    assert error.value.status_code == 400
    assert ML_WORKSPACE in message and 'pod_security_level = "baseline"' in message
    assert owned_by(fake, "bob") == set()  # refused before anything was created


async def test_an_ml_workspace_image_under_baseline_runs_its_own_entrypoint_on_8080_as_root(fake):
    spawner = make_spawner(fake, "carol", "tools", namespace=BASELINE_NS, pod_security_level="baseline")
    spawner.orm_spawner.server = orm.Server(
        proto="http", ip="", port=0, base_url="/user/carol/tools/", cookie_name="c"
    )  # as the hub gives it
    spawner.user_options = {"image": ML_WORKSPACE, "cpu_limit": 1}
    url = await spawner.start()
    pod = fake.get("pods", BASELINE_NS, spawner.pod_name)
    assert pod_security.violations(pod, "baseline") == []
    (container,) = pod["spec"]["containers"]
    assert "command" not in container and "args" not in container  # its own entrypoint, no --port
    assert [p["containerPort"] for p in container["ports"]] == [8080] and url.endswith(":8080")
    assert {p["port"] for p in fake.get("services", BASELINE_NS, spawner.pod_name)["spec"]["ports"]} == {
        8080,
        22,
    }
    psc = pod["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"]) == (0, 0)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert mount_of(pod, container) == "/workspace"
    env = env_of(container)
    assert env["AUTHENTICATE_VIA_JUPYTER"] == "true"
    assert env["SHUTDOWN_INACTIVE_KERNELS"] == "true"
    assert env["WORKSPACE_BASE_URL"] == "/user/carol/tools"
    assert env["WORKSPACE_PORT"] == "8080" and env["MAX_NUM_THREADS"] == "1"
    await spawner.stop(now=True)

    # the next start with ML Hub's image gets the configured port, command and user back
    spawner.user_options = {}
    url = await spawner.start()
    pod = fake.get("pods", BASELINE_NS, spawner.pod_name)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE and url.endswith(":8888")
    assert container["args"] == ["jupyterhub-singleuser"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert mount_of(pod, container) == "/workspace"
    assert not {"AUTHENTICATE_VIA_JUPYTER", "JUPYTERHUB_ROOT_DIR"} & set(env_of(container))
    await spawner.stop(now=True)


@pytest.mark.parametrize(
    "options, field, named",
    [
        ({"image": NOT_OFFERED}, "image", NOT_OFFERED),
        (
            {"image": ML_WORKSPACE, "env": {"AUTHENTICATE_VIA_JUPYTER": "false"}},
            "env",
            "AUTHENTICATE_VIA_JUPYTER",
        ),
    ],
)
async def test_an_image_not_offered_or_turning_the_auth_off_is_refused(fake, options, field, named):
    spawner = make_spawner(fake, "dave", namespace=BASELINE_NS, pod_security_level="baseline")
    spawner.user_options = options
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    message = error.value.log_message % error.value.args
    assert error.value.status_code == 400 and f"Invalid {field}" in message and named in message
    assert owned_by(fake, "dave") == set()
