"""The chart's singleuser.profiles (MLHubSpawner.profiles), singleuser.handleLegacyNames (handle_legacy_names) and
hub.allowList (DYNAMIC_WHITELIST_ENABLED: a ConfigMap mounted at /resources/users): rendered, checked by the
schema or the templates with a message naming the value, read by the hub as it starts, and installed on the fake
API server, where new names update the ConfigMap without rolling the hub."""

# ruff: noqa: F401, F811 (the fixtures helm_bin, render and fake come from test_chart; the tests take them as arguments)

import copy
import json
import re

import kubernetes_validate
import pytest
import yaml
from test_chart import (
    CHART,
    K8S_VERSIONS,
    NAMESPACE,
    container,
    env_of,
    fake,
    find,
    helm_bin,
    hub_values,
    mounts_of,
    one,
    render,
    run_helm,
    volumes_of,
)
from traitlets.config import Config

from mlhubspawner import chart_values
from mlhubspawner.allowlist import parse_allow_list
from mlhubspawner.auth import ALLOW_LIST_FILE, USERNAME_PATTERN
from mlhubspawner.kubernetes import MLHubKubernetesSpawner
from mlhubspawner.spawner_base import _config_probe, check_spawner_config, config_errors

PROFILES = [
    {"name": "Small", "slug": "small", "cpu_limit": 1, "mem_limit": "2G", "default": True},
    {
        "name": "GPU",
        "slug": "gpu",
        "description": "One GPU, 4 CPUs",
        "cpu_limit": 4,
        "mem_limit": "16G",
        "gpus": 1,
        "shm_size": "2G",
        "env": {"CUDA_CACHE_MAXSIZE": "2147483648"},
        "node_selector": {"node-pool": "gpu"},
        "days_to_live": 14,
        "groups": ["gpu-users"],
    },
]
GPU_ON = {"singleuser": {"gpu": {"max": 2}}}


def valid_user_name(name):
    return re.match(USERNAME_PATTERN, name) is not None


def listed(text):
    """The users a rendered dynamic_whitelist.txt lets in, as the hub reads it."""
    return set(parse_allow_list(text, str.lower, valid_user_name).names)


def spawner(config):
    """The hub's Kubernetes spawner with ``config`` (no user needed: as the hub-start check makes it)."""
    return _config_probe(MLHubKubernetesSpawner, config)


def values_file(tmp_path, values, name="values.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


def hub_config(docs, user_config=None):
    """The config the hub builds from the rendered values (then the operator's userConfig, which wins)."""
    c = chart_values.apply_chart_values(Config(), hub_values(docs))
    if user_config:
        c.merge(user_config)
    return c


def failure(helm_bin, *args):
    """helm lint --strict and helm template both refuse; their output (which must name the value)."""
    outputs = []
    for command in (["lint", "--strict", CHART], ["template", "x", CHART]):
        result = run_helm(helm_bin, *command, *args, check=False)
        assert result.returncode != 0, (command, args)
        outputs.append(result.stdout + result.stderr)
    return "\n".join(outputs)


# ---- singleuser.profiles ---------------------------------------------------------------------------------------


def test_profiles_reach_the_spawner_and_pass_the_hub_start_check(render, tmp_path):
    docs = render(
        "-f", values_file(tmp_path, {**GPU_ON, "singleuser": {**GPU_ON["singleuser"], "profiles": PROFILES}})
    )
    c = hub_config(docs)
    assert c.MLHubSpawner.profiles == PROFILES
    assert "profile_list" not in c.MLHubKubernetesSpawner
    assert config_errors(MLHubKubernetesSpawner, c) == []
    # the spawner the hub makes sees them, in the admin's order
    assert [p["slug"] for p in spawner(c).profiles] == ["small", "gpu"]


def test_no_profiles_by_default(default_docs_values):
    c = chart_values.apply_chart_values(Config(), default_docs_values)
    assert "profiles" not in c.MLHubSpawner


@pytest.fixture(scope="module")
def default_docs_values(render):
    return hub_values(render())


def test_a_profile_beyond_the_charts_limits_stops_the_hub_naming_it(render, tmp_path):
    big = [{"name": "Big", "slug": "big", "cpu_limit": 16, "image": "elsewhere/cuda:1"}]
    c = hub_config(render("-f", values_file(tmp_path, {"singleuser": {"profiles": big}})))
    errors = "; ".join(config_errors(MLHubKubernetesSpawner, c))
    assert "MLHubSpawner.profiles[0] ('big'): cpu_limit: 16 is above" in errors
    assert "image: elsewhere/cuda:1 is not an offered image" in errors
    with pytest.raises(SystemExit) as stopped:
        check_spawner_config(c)
    assert "ML Hub cannot start" in str(stopped.value) and "('big')" in str(stopped.value)


def test_profiles_with_a_profile_list_in_user_config_stop_the_hub(render, tmp_path):
    c = hub_config(
        render("-f", values_file(tmp_path, {"singleuser": {"profiles": PROFILES[:1]}})),
        Config({"MLHubKubernetesSpawner": {"profile_list": [{"display_name": "X", "slug": "x"}]}}),
    )
    assert any("are both set: keep one" in e for e in config_errors(MLHubKubernetesSpawner, c))


def test_user_config_profiles_win_over_the_charts(render, tmp_path):
    mine = [{"name": "Mine", "slug": "mine"}]
    c = hub_config(
        render("-f", values_file(tmp_path, {"singleuser": {"profiles": PROFILES[:1]}})),
        Config({"MLHubSpawner": {"profiles": mine}}),
    )
    assert spawner(c).profiles == mine


def test_profiles_and_profile_list_together_are_refused_by_the_chart(helm_bin, tmp_path):
    both = {"singleuser": {"profiles": PROFILES[:1], "profileList": [{"display_name": "X"}]}}
    result = run_helm(helm_bin, "template", "x", CHART, "-f", values_file(tmp_path, both), check=False)
    assert result.returncode != 0
    assert "singleuser.profiles and singleuser.profileList are both set: keep one" in result.stderr
    # and by the hub, should the template be skipped (values written by hand)
    with pytest.raises(chart_values.ChartValuesError, match="both set"):
        chart_values.profiles_trait(both)


@pytest.mark.parametrize(
    "profile, message",
    [
        ({"slug": "x"}, "singleuser.profiles.0: name is required"),
        ({"name": "A", "cpus": 2}, "singleuser.profiles.0: Additional property cpus is not allowed"),
        ({"name": "A", "slug": "Bad Slug"}, "singleuser.profiles.0.slug"),
        ({"name": "A", "slug": "custom"}, "singleuser.profiles.0.slug"),
        ({"name": "A", "cpu_limit": 0}, "singleuser.profiles.0.cpu_limit"),
        ({"name": "A", "cpu_limit": "lots"}, "singleuser.profiles.0.cpu_limit"),
        ({"name": "A", "mem_limit": "4Gi"}, "singleuser.profiles.0.mem_limit"),
        ({"name": "A", "mem_limit": -1}, "singleuser.profiles.0.mem_limit"),
        ({"name": "A", "shm_size": "big"}, "singleuser.profiles.0.shm_size"),
        ({"name": "A", "gpus": "some"}, "singleuser.profiles.0.gpus"),
        ({"name": "A", "gpus": -1}, "singleuser.profiles.0.gpus"),
        ({"name": "A", "default": "yes"}, "singleuser.profiles.0.default"),
        ({"name": "A", "groups": []}, "singleuser.profiles.0.groups"),
        ({"name": "A", "groups": "gpu-users"}, "singleuser.profiles.0.groups"),
        ({"name": "A", "env": {"1BAD": "x"}}, "singleuser.profiles.0.env"),
        ({"name": "A", "env": {"X": {"nested": 1}}}, "singleuser.profiles.0.env.X"),
        ({"name": "A", "node_selector": {"pool": 1}}, "singleuser.profiles.0.node_selector.pool"),
        ({"name": "A", "days_to_live": 0}, "singleuser.profiles.0.days_to_live"),
        ({"name": "A", "days_to_live": 5000}, "singleuser.profiles.0.days_to_live"),
        ("just-a-name", "singleuser.profiles.0: Invalid type. Expected: object"),
    ],
)
def test_schema_refuses_a_bad_profile_naming_it(helm_bin, tmp_path, profile, message):
    assert message in failure(helm_bin, "-f", values_file(tmp_path, {"singleuser": {"profiles": [profile]}}))


def test_what_the_schema_cannot_see_the_hub_refuses_naming_the_chart_value():
    """Checks across entries (duplicate slugs, two defaults) and name with display_name: ChartValuesError names
    singleuser.profiles before the hub has read anything else."""
    for table, message in (
        ([{"name": "A", "slug": "a"}, {"name": "B", "slug": "a"}], "slug 'a' is used by 2 profiles"),
        (
            [{"name": "A", "default": True}, {"name": "B", "default": True}],
            "only one profile may be the default",
        ),
        ([{"name": "A", "display_name": "B"}], "singleuser.profiles[0] ('A'): display_name"),
        ([{"name": "A", "env": {"X": "a\0b"}}], "singleuser.profiles[0] ('A'): env"),
    ):
        with pytest.raises(chart_values.ChartValuesError) as refused:
            chart_values.apply_chart_values(
                Config(),
                {"_chart": {"names": {"hub": "h", "proxyApi": "p"}}, "singleuser": {"profiles": table}},
            )
        assert "singleuser.profiles" in str(refused.value) and message in str(refused.value)


# ---- singleuser.handleLegacyNames ---------------------------------------------------------------------------------


def test_handle_legacy_names_is_off_by_default_and_reaches_the_spawner(render, default_docs_values):
    off = chart_values.apply_chart_values(Config(), default_docs_values)
    assert spawner(off).handle_legacy_names is False
    on = hub_config(render("--set", "singleuser.handleLegacyNames=true"))
    assert on.MLHubKubernetesSpawner.handle_legacy_names is True
    assert spawner(on).handle_legacy_names is True
    assert config_errors(MLHubKubernetesSpawner, on) == []


@pytest.mark.parametrize("value", ["yes", "1", "null-ish"])
def test_schema_refuses_a_handle_legacy_names_that_is_no_boolean(helm_bin, value):
    out = failure(helm_bin, "--set-string", f"singleuser.handleLegacyNames={value}")
    assert "singleuser.handleLegacyNames: Invalid type. Expected: boolean" in out


# ---- hub.allowList ------------------------------------------------------------------------------------------------

NAMES = ["alice", "Bob", "carol.smith@example.org", "josé"]
ENABLED = ["--set", "hub.allowList.enabled=true"]


def allow_list_docs(render, tmp_path, names=NAMES, *extra):
    return render(*ENABLED, "-f", values_file(tmp_path, {"hub": {"allowList": {"names": names}}}), *extra)


def allow_list_file(docs):
    return one(docs, "ConfigMap", "-hub-allow-list")["data"]["dynamic_whitelist.txt"]


def test_the_allow_list_is_a_config_map_the_hub_reads_as_its_file(render, tmp_path):
    docs = allow_list_docs(render, tmp_path)
    hub = one(docs, "Deployment", "-hub")
    assert env_of(hub)["DYNAMIC_WHITELIST_ENABLED"]["value"] == "true"
    # mounted read-only as a directory (never subPath: the kubelet updates only directory mounts)
    mount = mounts_of(hub)["/resources/users"]
    assert mount["readOnly"] is True and "subPath" not in mount
    assert ALLOW_LIST_FILE == "/resources/users/dynamic_whitelist.txt"
    volume = volumes_of(hub)[mount["name"]]
    assert volume["configMap"]["name"] == "mlhub-hub-allow-list" and "items" not in volume["configMap"]
    # the file the hub parses (mlhubspawner/allowlist.py) lets in exactly these users, lower-cased
    parsed = parse_allow_list(allow_list_file(docs), str.lower, valid_user_name)
    assert set(parsed.names) == {"alice", "bob", "carol.smith@example.org", "josé"}
    assert not parsed.ignored
    for doc in (hub, one(docs, "ConfigMap", "-hub-allow-list")):
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_an_empty_list_lets_only_the_admins_in(render, tmp_path):
    assert listed(allow_list_file(allow_list_docs(render, tmp_path, []))) == set()


def test_off_by_default_no_config_map_no_variable_no_mount(render, tmp_path):
    for docs in (render(), render("-f", values_file(tmp_path, {"hub": {"allowList": {"names": ["alice"]}}}))):
        hub = one(docs, "Deployment", "-hub")
        assert not find(docs, "ConfigMap")
        assert "DYNAMIC_WHITELIST_ENABLED" not in env_of(hub)
        assert "/resources/users" not in mounts_of(hub)


def test_new_names_do_not_roll_the_hub(render, tmp_path):
    """The hub reads the file again at the next login: a change of names changes the ConfigMap only."""

    def template(docs):
        spec = copy.deepcopy(one(docs, "Deployment", "-hub")["spec"]["template"])
        spec["metadata"]["annotations"].pop("checksum/secret")  # drawn anew at each offline rendering
        return spec

    before = allow_list_docs(render, tmp_path, ["alice"])
    after = allow_list_docs(render, tmp_path, ["alice", "bob"])
    assert allow_list_file(before) != allow_list_file(after)
    assert template(before) == template(after)
    assert "allowList" not in hub_values(after)["hub"]
    # turning it on is a change of the pod (its variable and mount): that one rolls it
    assert template(render()) != template(before)


def test_an_existing_config_map_is_mounted_instead(render):
    docs = render(
        *ENABLED, "--set", "hub.allowList.existingConfigMap=team-users", "--set", "hub.allowList.names={x}"
    )
    assert not find(docs, "ConfigMap")
    hub = one(docs, "Deployment", "-hub")
    assert volumes_of(hub)[mounts_of(hub)["/resources/users"]["name"]]["configMap"]["name"] == "team-users"
    assert env_of(hub)["DYNAMIC_WHITELIST_ENABLED"]["value"] == "true"


@pytest.mark.parametrize(
    "name",
    [
        "alice\nmallory",  # a second line: a second user
        "alice # admin",
        "#alice",  # the file's comment sign: would list nobody
        "a,b",
        "../etc",
        "tab\there",
        "zero\u200bwidth",
        "",
        "x" * 129,
    ],
)
def test_a_name_that_is_no_user_name_is_refused_naming_the_value(helm_bin, tmp_path, name):
    out = failure(helm_bin, *ENABLED, "--set-json", f"hub.allowList.names={json.dumps([name])}")
    assert "hub.allowList.names.0" in out


def test_a_name_with_a_control_character_yaml_cannot_hold_is_refused(helm_bin):
    """A DEL or C1 control character: helm itself refuses the values before the schema sees them."""
    names = json.dumps(["del\x7f"])
    assert "control characters are not allowed" in failure(
        helm_bin, *ENABLED, "--set-json", f"hub.allowList.names={names}"
    )


def test_the_names_the_schema_takes_are_user_names_the_list_keeps(render, tmp_path):
    """Ordinary and non-ASCII names pass the schema and come out of the rendered file as themselves."""
    names = ["alice", "Bob", "josé", "a.b-c_d@e", "ａlice", "'quoted'", "|pipe", "-dash", ":colon"]
    assert listed(allow_list_file(allow_list_docs(render, tmp_path, names))) == {n.lower() for n in names}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "hub.allowList.enabled=yes"], "hub.allowList.enabled: Invalid type. Expected: boolean"),
        (["--set", "hub.allowList.names=alice"], "hub.allowList.names: Invalid type. Expected: array"),
        (["--set", "hub.allowList.existingConfigMap=Team_Users"], "hub.allowList.existingConfigMap"),
        (["--set", "hub.allowList.path=/etc/passwd"], "Additional property path is not allowed"),
        # the variable alone would find no file: only the chart's value sets it, with its mount
        (["--set", "hub.extraEnv.DYNAMIC_WHITELIST_ENABLED=true"], "hub.extraEnv"),
    ],
)
def test_schema_refuses_bad_allow_list_values(helm_bin, args, message):
    assert message in failure(helm_bin, *args)


def test_install_then_new_names_update_the_config_map_and_leave_the_hub_running(helm_bin, fake, tmp_path):
    """helm install and upgrade on the fake API server: the ConfigMap follows the names, the hub's Deployment
    (its pod template, hence its pod) stays as it was."""
    common = ["--namespace", NAMESPACE, "--kubeconfig", fake.kubeconfig, *ENABLED]
    first = values_file(tmp_path, {"hub": {"allowList": {"names": ["alice"]}}}, "first.yaml")
    installed = run_helm(
        helm_bin, "install", "mlhub", CHART, *common, "-f", first, kubeconfig=fake.kubeconfig, check=False
    )
    assert installed.returncode == 0, installed.stderr
    assert not fake.rejected
    config_map = fake.get("configmaps", NAMESPACE, "mlhub-hub-allow-list")
    assert listed(config_map["data"]["dynamic_whitelist.txt"]) == {"alice"}
    before = fake.get("deployments", NAMESPACE, "mlhub-hub")["spec"]["template"]

    second = values_file(tmp_path, {"hub": {"allowList": {"names": ["alice", "bob"]}}}, "second.yaml")
    upgraded = run_helm(
        helm_bin, "upgrade", "mlhub", CHART, *common, "-f", second, kubeconfig=fake.kubeconfig, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    config_map = fake.get("configmaps", NAMESPACE, "mlhub-hub-allow-list")
    assert listed(config_map["data"]["dynamic_whitelist.txt"]) == {"alice", "bob"}
    assert fake.get("deployments", NAMESPACE, "mlhub-hub")["spec"]["template"] == before
