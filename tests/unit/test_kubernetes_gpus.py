"""GPUs on Kubernetes, pure parts: pools from NodeLists, what workspaces hold, GPU types in the options and form."""

import pytest

from mlhubspawner.form import form_values, render_options_form
from mlhubspawner.kubernetes import gpus, objects
from mlhubspawner.options import (
    OptionsError,
    WorkspaceOptions,
    check_quota,
    form_to_options,
    is_extended_resource,
    parse_options,
)
from mlhubspawner.policy import GPUTypes, Policy, WorkspacePolicy, gpu_limits

GPU, MIG1, MIG3 = "nvidia.com/gpu", "nvidia.com/mig-1g.5gb", "nvidia.com/mig-3g.20gb"
NAMES = [GPU, MIG1, MIG3]
A100, H100 = "NVIDIA-A100-SXM4-40GB", "NVIDIA-H100-80GB-HBM3"


def node(name, allocatable, product=None, ready="True", unschedulable=False, memory=None):
    labels = {"kubernetes.io/hostname": name}
    if product:
        labels[gpus.PRODUCT_LABEL] = product
    if memory:
        labels["nvidia.com/gpu.memory"] = str(memory)
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", **allocatable},
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
        },
    }


CLUSTER = {
    "kind": "NodeList",
    "items": [
        node("a100-1", {GPU: "2"}, A100, memory=40960),
        node("a100-2", {GPU: "4"}, A100, memory=40960),
        node("h100-1", {GPU: "8"}, H100, memory=81559),
        node("mig-1", {MIG1: "7"}, A100),
        node("mig-2", {MIG1: "2", MIG3: "2"}, A100),
        node("plain", {GPU: "1"}),  # no GPU Feature Discovery: no product label
        node("cpu-only", {}),
        node("down", {GPU: "16"}, H100, ready="Unknown"),
        node("cordoned", {GPU: "16"}, H100, unschedulable=True),
        node("notready", {GPU: "16"}, H100, ready="False"),
    ],
}


def test_pools_per_resource_and_product_from_schedulable_nodes_only():
    pools = gpus.gpu_pools(CLUSTER, NAMES)
    assert [(p.resource, p.product, p.total, p.per_node, p.nodes) for p in pools] == [
        (GPU, "", 1, 1, 1),
        (GPU, A100, 6, 4, 2),
        (GPU, H100, 8, 8, 1),  # the unready, cordoned and NotReady H100 nodes give nothing
        (MIG1, A100, 9, 7, 2),
        (MIG3, A100, 2, 2, 1),
    ]
    memory = {(p.resource, p.product): p.memory_mb for p in pools}
    assert memory[(GPU, A100)] == 40960 and memory[(GPU, H100)] == 81559 and memory[(GPU, "")] == 0
    assert [p.type for p in pools][1:3] == [f"{GPU}:{A100}", f"{GPU}:{H100}"]
    # only the configured resources count
    assert [p.resource for p in gpus.gpu_pools(CLUSTER["items"], [GPU])] == [GPU, GPU, GPU]
    assert gpus.gpu_pools({"items": []}, NAMES) == ()


@pytest.mark.parametrize(
    "quantity, expected", [("4", 4), (3, 3), ("0", 0), ("1k", 0), ("-2", 0), (None, 0), (True, 0)]
)
def test_odd_quantities_count_as_nothing(quantity, expected):
    assert gpus.count(quantity) == expected


def test_a_product_label_that_is_no_label_value_never_becomes_a_pool():
    bad = node("odd", {GPU: "2"}, "x" * 64)
    bad["metadata"]["labels"][gpus.PRODUCT_LABEL] = "A100,evil=true"
    (pool,) = gpus.gpu_pools([bad], [GPU])
    assert pool.product == ""


def test_types_offered_and_the_most_one_workspace_can_get():
    types = gpus.gpu_types(gpus.gpu_pools(CLUSTER, NAMES), NAMES)
    assert isinstance(types, GPUTypes)
    assert [(t.name, t.resource, t.product, t.max_count) for t in types] == [
        ("", GPU, "", 8),
        (GPU, GPU, "", 8),
        (MIG1, MIG1, "", 7),
        (MIG3, MIG3, "", 2),
        (f"{GPU}:{A100}", GPU, A100, 4),
        (f"{GPU}:{H100}", GPU, H100, 8),
        (f"{MIG1}:{A100}", MIG1, A100, 7),
        (f"{MIG3}:{A100}", MIG3, A100, 2),
    ]
    # the policy: max_gpus capped by the largest node, the types carried along
    count, offered = gpu_limits(types)
    assert count == 8
    policy = WorkspacePolicy(max_gpus=16).policy("img", gpu_count=count, gpu_types=offered)
    assert policy.max_gpus == 8 and policy.gpu_type(f"{GPU}:{A100}").max_count == 4
    # a cluster without GPUs: the default type exists, with nothing to give
    none = gpus.gpu_types((), NAMES)
    assert [(t.name, t.max_count) for t in none] == [("", 0), (GPU, 0)] and gpu_limits(none)[0] == 0


def test_unknown_nodes_offer_the_configured_names_without_sizes():
    types = gpus.unknown_gpu_types(NAMES)
    assert [(t.name, t.max_count) for t in types] == [("", None), (GPU, None), (MIG1, None), (MIG3, None)]
    assert gpu_limits(types)[0] is None  # the admin's max_gpus alone applies
    # Docker's answers keep their meaning
    assert (
        gpu_limits(None) == (None, None)
        and gpu_limits([object()] * 3) == (3, None)
        and gpu_limits([]) == (0, None)
    )


def pod(limits, node_name=None, selector=None, phase="Running"):
    spec = {"containers": [{"name": "notebook", "resources": {"limits": limits}}]}
    if node_name:
        spec["nodeName"] = node_name
    if selector:
        spec["nodeSelector"] = selector
    return {"spec": spec, "status": {"phase": phase}}


def test_gpus_held_per_user_for_the_metrics():
    def owned(user, limits, phase="Running"):
        return dict(pod(limits, "a100-1", phase=phase), metadata={"annotations": {"mlhub.user": user}})

    pods = [
        owned("ann", {GPU: "2"}),
        owned("ann", {MIG1: "1", "cpu": "2"}),
        owned("bob", {GPU: "1"}, phase="Failed"),  # done: holds nothing
        owned("cy", {"cpu": "1"}),
        pod({GPU: "1"}, "a100-1"),  # no owner annotation: not ours to count
    ]
    assert gpus.held_by_user(pods, NAMES) == {"ann": 3}


def test_held_gpus_by_the_pool_of_the_node_or_the_selector():
    pods = [
        pod({GPU: "2", "cpu": "4"}, "a100-2"),
        pod({GPU: "1"}, "a100-1"),
        pod({GPU: "3"}, "h100-1", phase="Succeeded"),  # done: holds nothing
        pod({MIG1: "1", MIG3: "1"}, "mig-2"),
        pod({GPU: "1"}, selector={gpus.PRODUCT_LABEL: H100}),  # pending, bound for an H100
        pod({GPU: "5"}, "cordoned"),  # on a node outside every pool
        pod({"cpu": "1"}, "plain"),
    ]
    held = gpus.held_gpus(pods, NAMES, gpus.node_products(CLUSTER))
    assert held == {(GPU, A100): 3, (GPU, H100): 1, (MIG1, A100): 1, (MIG3, A100): 1}
    status = {s["type"]: s for s in gpus.pool_status(gpus.gpu_pools(CLUSTER, NAMES), held)}
    a100 = status[f"{GPU}:{A100}"]
    assert (a100["kind"], a100["free"], a100["total"], a100["per_node"], a100["memory_mb"]) == (
        "pool",
        3,
        6,
        4,
        40960,
    )
    assert (status[GPU]["free"], status[f"{MIG3}:{A100}"]["free"]) == (1, 1)


def test_extended_resource_names():
    for good in (GPU, MIG1, MIG3, "amd.com/gpu", "gpu.intel.com/i915", "example.com/Fancy_GPU.v2"):
        assert is_extended_resource(good), good
    for bad in (
        "cpu",
        "memory",
        "gpu",
        "kubernetes.io/gpu",
        "foo.kubernetes.io/gpu",
        "requests.nvidia.com/gpu",
        "nvidia.com/",
        "/gpu",
        "NVIDIA.com/gpu",
        "nvidia.com/gpu/x",
        "nvidia.com/gpu:A100",
        "nvidia.com/" + "g" * 64,
        "nvidia.com/gpu\n",
        None,
        7,
    ):
        assert not is_extended_resource(bad), bad


def test_product_node_selector():
    assert objects.gpu_node_selector({"nvidia.com/gpu.present": "true"}, A100) == {
        "nvidia.com/gpu.present": "true",
        gpus.PRODUCT_LABEL: A100,
    }
    assert objects.gpu_node_selector(None) == {}
    with pytest.raises(ValueError):
        objects.gpu_node_selector({}, "A100,x=y")


# ---- the gpu_type option ---------------------------------------------------------------------------------------

TYPES = gpus.gpu_types(gpus.gpu_pools(CLUSTER, NAMES), NAMES)
K8S = Policy(default_image="img", max_gpus=8, max_gpus_per_user=6, gpu_types=tuple(TYPES))
DOCKER = Policy(default_image="img", max_gpus=4)


@pytest.mark.parametrize(
    "raw, gpus_, gpu_type",
    [
        ({"gpus": 2}, "2", ""),
        ({"gpus": "2", "gpu_type": ""}, "2", ""),
        ({"gpus": 4, "gpu_type": f"{GPU}:{A100}"}, "4", f"{GPU}:{A100}"),
        ({"gpus": 7, "gpu_type": MIG1}, "7", MIG1),
        ({"gpus": 1, "gpu_type": f"  {MIG3}:{A100} "}, "1", f"{MIG3}:{A100}"),
        ({"gpu_type": f"{GPU}:{H100}"}, "", ""),  # no GPUs: checked, then dropped
    ],
)
def test_offered_gpu_types_are_accepted(raw, gpus_, gpu_type):
    options = parse_options(raw, K8S)
    assert (options.gpus, options.gpu_type) == (gpus_, gpu_type)
    assert WorkspaceOptions.from_dict(options.to_dict()) == options  # kept in the stored options


@pytest.mark.parametrize(
    "value, message",
    [
        ("nvidia.com/mig-7g.40gb", "not offered"),  # a resource the admin did not configure
        ("amd.com/gpu", "not offered"),
        ("cpu", "not a GPU type"),
        ("memory", "not a GPU type"),
        ("nvidia.com/gpu:NVIDIA-B200", "not offered"),  # a product no schedulable node has
        ("nvidia.com/gpu:" + H100.lower(), "not offered"),
        (f"nvidia.com/gpu:{A100},kubernetes.io/hostname=victim", "not a GPU type"),  # selector injection
        (f"nvidia.com/gpu:{A100}\nx", "not a GPU type"),
        ("nvidia.com/gpu:", "not a GPU type"),
        (":" + A100, "not a GPU type"),
        ("nvidia.com/gpu:A100:B", "not a GPU type"),
        ("nvidia.com/gpu;rm -rf", "not a GPU type"),
        ("<script>alert(1)</script>", "not a GPU type"),
        ("nvidia.com/gpu " + "x" * 5000, "not a GPU type"),
        (["nvidia.com/gpu"], "expected the name of a GPU type"),
        ({"resource": "nvidia.com/gpu"}, "expected the name of a GPU type"),
        (7, "expected the name of a GPU type"),
        (True, "expected the name of a GPU type"),
    ],
)
def test_every_gpu_type_not_offered_is_a_400_naming_gpu_type(value, message):
    for gpus_ in ("1", ""):  # refused even without GPUs: never silently ignored
        with pytest.raises(OptionsError) as error:
            parse_options({"gpus": gpus_, "gpu_type": value}, K8S)
        assert error.value.field == "gpu_type" and message in error.value.message
        assert len(error.value.message) < 400


def test_a_type_caps_the_count_at_one_node():
    with pytest.raises(OptionsError) as error:
        parse_options({"gpus": 5, "gpu_type": f"{GPU}:{A100}"}, K8S)
    assert error.value.field == "gpus" and "at most 4 GPUs of type" in error.value.message
    with pytest.raises(OptionsError) as error:
        parse_options({"gpus": 9}, K8S)
    assert error.value.field == "gpus"


def test_docker_refuses_any_gpu_type():
    assert parse_options({"gpus": 1, "gpu_type": ""}, DOCKER).gpu_type == ""
    for value in (GPU, "x", f"{GPU}:{A100}"):
        with pytest.raises(OptionsError) as error:
            parse_options({"gpus": 1, "gpu_type": value}, DOCKER)
        assert (error.value.field, error.value.message) == (
            "gpu_type",
            "GPU types can only be chosen on Kubernetes",
        )


def test_quotas_count_gpus_of_every_type():
    running = [parse_options({"gpus": 3, "gpu_type": MIG1}, K8S), parse_options({"gpus": 2}, K8S)]
    check_quota(parse_options({"gpus": 1, "gpu_type": f"{GPU}:{H100}"}, K8S), running, K8S)
    with pytest.raises(OptionsError) as error:
        check_quota(parse_options({"gpus": 2, "gpu_type": f"{MIG3}:{A100}"}, K8S), running, K8S)
    assert error.value.field == "gpus" and "7 GPUs in total, at most 6" in error.value.message


# ---- the form --------------------------------------------------------------------------------------------------


def test_form_lists_pools_and_offers_a_type_select():
    held = {(GPU, A100): 1}
    pools = gpus.pool_status(gpus.gpu_pools(CLUSTER, NAMES), held)
    last = parse_options({"gpus": 2, "gpu_type": f"{MIG1}:{A100}"}, K8S)
    html = render_options_form(K8S, form_values(K8S, last), gpus=pools)
    assert f"{GPU} · {A100} (40 GB):" in html
    assert "5 of 6 free</span>\n        (at most 4 on one node)" in html
    assert f"{GPU} · {H100} (79.6 GB):" in html and "8 of 8 free" in html
    assert 'name="gpu_type"' in html
    assert f'<option value="{MIG1}:{A100}" selected>{MIG1} · {A100}</option>' in html
    assert f'<option value="">{GPU} (any model)</option>' in html
    assert f'<option value="{GPU}">' not in html  # the same as ""
    assert "none or a count (1)" in html and "from one node" in html
    # the form's answer reaches the options
    raw = form_to_options({"gpus": ["1"], "gpu_type": [f"{GPU}:{H100}"], "defined_image": ["img"]})
    assert parse_options(raw, K8S).gpu_type == f"{GPU}:{H100}"


def test_form_with_one_type_has_no_select_and_shows_a_refused_type():
    one = Policy(default_image="img", max_gpus=2, gpu_types=tuple(gpus.gpu_types((), [GPU])))
    html = render_options_form(one, form_values(one), OptionsError("gpu_type", "'x' is not offered"))
    assert 'name="gpu_type"' not in html and "&#39;x&#39; is not offered" in html
    # Docker without GPUs: the error still shows, at the top
    html = render_options_form(
        Policy(default_image="img"), form_values(one), OptionsError("gpu_type", "only k8s")
    )
    assert 'class="alert alert-danger mlhub-error"' in html and "only k8s" in html


def test_form_lists_docker_gpus_one_by_one():
    uuid = "GPU-6d3c1e1a-0000-1111-2222-333344445555"
    status = [
        {
            "id": uuid,
            "index": "0",
            "uuid": uuid,
            "name": "NVIDIA A100-SXM4-40GB",
            "memory_mb": 40960,
            "free": True,
        },
        {"id": "3", "index": "3", "uuid": "", "name": "", "memory_mb": 0, "free": False, "holders": ["w"]},
        {"id": "5", "name": "old shape", "memory_mb": 0, "free": True},
        {
            "id": uuid[:-1] + "6",
            "index": "",
            "uuid": uuid[:-1] + "6",
            "name": "",
            "memory_mb": 0,
            "free": True,
        },
    ]
    html = render_options_form(DOCKER, form_values(DOCKER), gpus=status)
    assert "GPU 0: NVIDIA A100-SXM4-40GB, 40 GB" in html
    assert f'<small class="text-muted mlhub-gpu-uuid">{uuid}</small>' in html
    assert "GPU 3\n" in html and "GPU 5: old shape" in html
    assert f"<li>{uuid[:-1]}6\n" in html  # known by its UUID only (configured so)
    assert html.count(">free</span>") == 3 and html.count("in use</span>") == 1
    assert html.count("mlhub-gpu-uuid") == 1
    assert "GPU-&lt;uuid&gt;" in html and 'name="gpu_type"' not in html and "of 6 free" not in html
