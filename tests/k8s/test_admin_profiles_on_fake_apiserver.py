"""ML Hub's own profiles (``c.MLHubSpawner.profiles``) with MLHubKubernetesSpawner, on the fake API server.

The same profiles as on Docker, plus a node selector: the pod manifest the fake receives carries the
profile's image, limits, GPUs, shm, env and node selector (with the GPU nodes' selector); a group's profile
is an unknown profile for anyone else and creates nothing; the form offers the user's profiles and Custom.
"""

import functools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlhubspawner.kubernetes import objects  # noqa: E402

import kube_spawners  # noqa: E402
from kube_spawners import FakeUser  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUB = "k8sadmprof"
NS = "default"
GB = 1024**3
IMAGE = "mlhub-workspace:test"
GPU_IMAGE = "registry.example.com/team/cuda:12.4"


def admin_profiles():
    return [
        {"name": "Small", "slug": "small", "cpu_limit": 1, "mem_limit": "2G", "default": True},
        {
            "name": "GPU large",
            "slug": "gpu-large",
            "image": GPU_IMAGE,
            "cpu_limit": 6,
            "mem_limit": "24G",
            "gpus": 1,
            "shm_size": "4G",
            "env": {"PROFILE": "gpu"},
            "node_selector": {"pool": "a100", "topology.kubernetes.io/zone": "zone-a"},
            "days_to_live": 7,
            "groups": ["gpu-users"],
        },
    ]


fake = kube_spawners.fake_apiserver_fixture(
    NS, prepare=lambda fake: fake.add_node("gpu-node", allocatable={"nvidia.com/gpu": "2"})
)
stop_reflectors = kube_spawners.stop_reflectors_fixture()


def make_spawner(fake, username, server, groups=()):
    config = Config()
    config.MLHubKubernetesSpawner.max_cpu_limit = 8.0
    config.MLHubKubernetesSpawner.max_mem_limit = "32G"
    config.MLHubKubernetesSpawner.max_gpus = 2
    config.MLHubKubernetesSpawner.workspace_images = [GPU_IMAGE]
    config.MLHubKubernetesSpawner.gpu_node_selector = {"gpu": "yes"}
    config.MLHubSpawner.profiles = admin_profiles()
    user = FakeUser(username)
    user.groups = [SimpleNamespace(name=g) for g in groups]
    return kube_spawners.make_spawner(
        fake, username, server, hub_name=HUB, namespace=NS, image=IMAGE, user=user, config=config
    )


owned_by = functools.partial(
    kube_spawners.owned_by, hub=HUB, namespace=NS, kinds=kube_spawners.POD_PVC_SERVICE
)


async def test_a_profiles_node_selector_limits_gpus_shm_and_env_reach_the_pod(fake):
    spawner = make_spawner(fake, "ada", "gpu", groups=["gpu-users"])
    spawner.user_options = {"profile": "gpu-large", "cpu_limit": 4}  # less than the profile's 6
    await spawner.start()
    pod = fake.get("pods", NS, spawner.pod_name)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == GPU_IMAGE
    assert container["resources"]["limits"] == {"cpu": "4000m", "memory": str(24 * GB), "nvidia.com/gpu": "1"}
    assert pod["spec"]["nodeSelector"] == {
        "pool": "a100",
        "topology.kubernetes.io/zone": "zone-a",
        "gpu": "yes",
    }
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == objects.SHM_VOLUME)
    assert shm["emptyDir"]["sizeLimit"] == str(4 * GB)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROFILE"] == "gpu"
    assert spawner.workspace_options.profile_name == "GPU large"
    assert spawner.get_state()["mlhub"]["options"]["node_selector"]["pool"] == "a100"
    await spawner.stop(now=True)

    spawner.user_options = {"profile": "small"}  # the next start keeps nothing of it
    await spawner.start()
    pod = fake.get("pods", NS, spawner.pod_name)
    assert not pod["spec"].get("nodeSelector")
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1000m", "memory": str(2 * GB)}
    await spawner.stop(now=True)


async def test_a_groups_profile_is_unknown_to_others_and_creates_nothing(fake):
    spawner = make_spawner(fake, "bo", "gpu")
    form = await spawner.get_options_form()
    assert 'value="small"' in form and 'value="custom"' in form and "gpu-large" not in form
    spawner.user_options = {"profile": "gpu-large"}
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert (error.value.status_code, error.value.field) == (400, "profile")
    assert "unknown profile 'gpu-large'" in error.value.log_message % error.value.args
    assert owned_by(fake, "bo") == set()


async def test_an_override_beyond_the_profile_is_refused_before_anything_exists(fake):
    spawner = make_spawner(fake, "cy", "gpu", groups=["gpu-users"])
    spawner.user_options = {"profile": "gpu-large", "gpus": 2}
    with pytest.raises(web.HTTPError) as error:
        await spawner.start()
    assert (error.value.status_code, error.value.field) == (400, "gpus")
    assert owned_by(fake, "cy") == set()
