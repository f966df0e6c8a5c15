"""The Pod Security Standards checks (tests/pod_security.py): a table of pods that pass and fail each rule of
``baseline`` and ``restricted``, with the admission controller's wording."""

import copy

import pytest

import pod_security
from pod_security import check_ids, check_pod, namespace_policy, pod_template, violations


def restricted_pod():
    """A pod that conforms to ``restricted`` (and so to ``baseline``)."""
    secure = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return {
        "metadata": {"name": "ok", "annotations": {}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "notebook", "image": "x", "securityContext": copy.deepcopy(secure)}],
            "initContainers": [{"name": "init", "image": "x", "securityContext": copy.deepcopy(secure)}],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "sec", "secret": {"secretName": "s"}},
                {"name": "api", "projected": {"sources": []}},
            ],
        },
    }


def with_changes(*changes):
    pod = restricted_pod()
    for change in changes:
        change(pod)
    return pod


def spec(**fields):
    return lambda pod: pod["spec"].update(fields)


def pod_sc(**fields):
    return lambda pod: pod["spec"]["securityContext"].update(fields)


def ctr_sc(index=0, key="containers", **fields):
    return lambda pod: (
        pod["spec"].setdefault(key, [{}])[index].setdefault("securityContext", {}).update(fields)
    )


def annotate(**annotations):
    return lambda pod: pod["metadata"]["annotations"].update(annotations)


def ephemeral(sc):
    return lambda pod: pod["spec"].update(
        ephemeralContainers=[{"name": "debug", "image": "x", "securityContext": sc}]
    )


SECURE = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

# (id, change, level that refuses it, expected message) — baseline failures fail restricted too
FAILING = [
    # ---- baseline
    (
        "hostProcess",
        pod_sc(windowsOptions={"hostProcess": True}),
        "baseline",
        "hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)",
    ),
    ("hostNetwork", spec(hostNetwork=True), "baseline", "host namespaces (hostNetwork=true)"),
    (
        "hostPID+hostIPC",
        spec(hostPID=True, hostIPC=True),
        "baseline",
        "host namespaces (hostPID=true, hostIPC=true)",
    ),
    (
        "privileged",
        ctr_sc(privileged=True),
        "baseline",
        'privileged (container "notebook" must not set securityContext.privileged=true)',
    ),
    (
        "privileged-ephemeral",
        ephemeral({**SECURE, "privileged": True}),
        "baseline",
        'privileged (container "debug" must not set securityContext.privileged=true)',
    ),
    (
        "capabilities-baseline",
        ctr_sc(capabilities={"add": ["NET_ADMIN", "CHOWN"]}),
        "baseline",
        'non-default capabilities (container "notebook" must not include "NET_ADMIN" in '
        "securityContext.capabilities.add)",
    ),
    (
        "hostPath",
        spec(volumes=[{"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}}]),
        "baseline",
        'hostPath volumes (volume "docker")',
    ),
    (
        "hostPort",
        lambda pod: pod["spec"]["containers"][0].update(ports=[{"containerPort": 22, "hostPort": 22}]),
        "baseline",
        'hostPort (container "notebook" uses hostPort 22)',
    ),
    (
        "appArmor-annotation",
        annotate(**{"container.apparmor.security.beta.kubernetes.io/notebook": "unconfined"}),
        "baseline",
        'forbidden AppArmor profile (container.apparmor.security.beta.kubernetes.io/notebook="unconfined")',
    ),
    (
        "appArmor-field",
        ctr_sc(appArmorProfile={"type": "Unconfined"}),
        "baseline",
        'forbidden AppArmor profile (container "notebook" must not set securityContext.appArmorProfile.type '
        'to "Unconfined")',
    ),
    (
        "seLinux-type",
        pod_sc(seLinuxOptions={"type": "spc_t"}),
        "baseline",
        'seLinuxOptions (pod sets forbidden securityContext.seLinuxOptions: type "spc_t")',
    ),
    (
        "seLinux-user",
        ctr_sc(key="initContainers", seLinuxOptions={"user": "system_u"}),
        "baseline",
        'seLinuxOptions (container "init" sets forbidden securityContext.seLinuxOptions: user "system_u")',
    ),
    (
        "procMount",
        ctr_sc(procMount="Unmasked"),
        "baseline",
        'procMount (container "notebook" must not set securityContext.procMount to "Unmasked")',
    ),
    (
        "seccomp-unconfined",
        ctr_sc(seccompProfile={"type": "Unconfined"}),
        "baseline",
        'seccompProfile (container "notebook" must not set securityContext.seccompProfile.type to '
        '"Unconfined")',
    ),
    (
        "sysctls",
        pod_sc(
            sysctls=[{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}, {"name": "kernel.msgmax"}]
        ),
        "baseline",
        "forbidden sysctls (kernel.msgmax)",
    ),
    # ---- restricted only
    (
        "volume-types",
        spec(volumes=[{"name": "shared", "nfs": {"server": "n", "path": "/"}}]),
        "restricted",
        'restricted volume types (volume "shared" uses restricted volume type "nfs")',
    ),
    (
        "allowPrivilegeEscalation-unset",
        lambda pod: pod["spec"]["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "restricted",
        'allowPrivilegeEscalation != false (container "notebook" must set '
        "securityContext.allowPrivilegeEscalation=false)",
    ),
    (
        "allowPrivilegeEscalation-ephemeral",
        ephemeral({"capabilities": {"drop": ["ALL"]}}),
        "restricted",
        'allowPrivilegeEscalation != false (container "debug" must set '
        "securityContext.allowPrivilegeEscalation=false)",
    ),
    (
        "runAsNonRoot-unset",
        lambda pod: pod["spec"]["securityContext"].pop("runAsNonRoot"),
        "restricted",
        'runAsNonRoot != true (pod or containers "notebook", "init" must set securityContext.runAsNonRoot=true)',
    ),
    (
        "runAsNonRoot-false",
        ctr_sc(runAsNonRoot=False),
        "restricted",
        'runAsNonRoot != true (container "notebook" must not set securityContext.runAsNonRoot=false)',
    ),
    (
        "runAsUser-0",
        pod_sc(runAsUser=0),
        "restricted",
        "runAsUser=0 (pod must not set runAsUser=0)",
    ),
    (
        "runAsUser-0-container",
        ctr_sc(key="initContainers", runAsUser=0),
        "restricted",
        'runAsUser=0 (container "init" must not set runAsUser=0)',
    ),
    (
        "seccomp-unset",
        lambda pod: pod["spec"]["securityContext"].pop("seccompProfile"),
        "restricted",
        'seccompProfile (pod or containers "notebook", "init" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")',
    ),
    (
        "capabilities-no-drop",
        lambda pod: pod["spec"]["containers"][0]["securityContext"].pop("capabilities"),
        "restricted",
        'unrestricted capabilities (container "notebook" must set securityContext.capabilities.drop=["ALL"])',
    ),
    (
        "capabilities-add",
        ctr_sc(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}),
        "restricted",
        'unrestricted capabilities (container "notebook" must not include "CHOWN" in '
        "securityContext.capabilities.add)",
    ),
]

PASSING = [
    ("the restricted pod", lambda pod: None),
    ("safe sysctls", pod_sc(sysctls=[{"name": n, "value": "1"} for n in sorted(pod_security.SAFE_SYSCTLS)])),
    ("NET_BIND_SERVICE added", ctr_sc(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})),
    ("Localhost seccomp", pod_sc(seccompProfile={"type": "Localhost", "localhostProfile": "p.json"})),
    ("container_t SELinux type", pod_sc(seLinuxOptions={"type": "container_t", "level": "s0:c1,c2"})),
    (
        "runtime/default AppArmor",
        annotate(**{"container.apparmor.security.beta.kubernetes.io/notebook": "runtime/default"}),
    ),
    (
        "hostPort 0",
        lambda pod: pod["spec"]["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 0}]),
    ),
    ("uid 1000", pod_sc(runAsUser=1000, runAsGroup=100, fsGroup=100)),
    (
        "csi and ephemeral volumes",
        spec(volumes=[{"name": "c", "csi": {"driver": "d"}}, {"name": "e", "ephemeral": {}}]),
    ),
    ("procMount Default", ctr_sc(procMount="Default")),
]


@pytest.mark.parametrize(("case", "change", "level", "message"), FAILING, ids=[f[0] for f in FAILING])
def test_each_rule_fails_with_the_admission_wording(case, change, level, message):
    pod = with_changes(change)
    assert violations(pod, level) == [message]
    if level == "baseline":  # restricted refuses it too (capabilities/hostPath by its stricter checks)
        assert violations(pod, "restricted")
    else:
        assert violations(pod, "baseline") == []
    assert violations(pod, "privileged") == []


@pytest.mark.parametrize(("case", "change"), PASSING, ids=[p[0] for p in PASSING])
def test_conforming_pods_pass_restricted(case, change):
    pod = with_changes(change)
    assert violations(pod, "restricted") == []
    assert check_pod(pod, "restricted") is None


def test_every_check_is_seen_failing():
    reasons = {m.split(" (")[0] for _, change, level, m in FAILING}
    assert len(check_ids("baseline")) == 11 and len(check_ids("restricted")) == 14
    # one reason per check (seccompProfile: baseline and restricted share it)
    assert reasons == {
        "hostProcess",
        "host namespaces",
        "privileged",
        "non-default capabilities",
        "hostPath volumes",
        "hostPort",
        "forbidden AppArmor profile",
        "seLinuxOptions",
        "procMount",
        "seccompProfile",
        "forbidden sysctls",
        "restricted volume types",
        "allowPrivilegeEscalation != false",
        "runAsNonRoot != true",
        "runAsUser=0",
        "unrestricted capabilities",
    }


def test_container_level_settings_satisfy_restricted():
    pod = restricted_pod()
    pod["spec"]["securityContext"] = {}
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        c["securityContext"].update(runAsNonRoot=True, seccompProfile={"type": "RuntimeDefault"})
    assert violations(pod, "restricted") == []
    pod["spec"]["initContainers"][0]["securityContext"].pop("runAsNonRoot")
    assert violations(pod, "restricted") == [
        'runAsNonRoot != true (pod or container "init" must set securityContext.runAsNonRoot=true)'
    ]


def test_a_default_pod_is_baseline_but_not_restricted():
    """The minimally specified pod (root, no securityContext): baseline admits it, restricted lists
    every rule it breaks, in the admission controller's order, as one message."""
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "notebook", "image": "x"}]}}
    assert violations(pod, "baseline") == []
    assert check_pod(pod, "restricted") == (
        'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "notebook" must '
        'set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "notebook" '
        'must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container '
        '"notebook" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "notebook" '
        'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
    )
    # a bare pod spec is accepted too
    assert violations(pod["spec"], "restricted") == violations(pod, "restricted")


def test_several_containers_are_named_together():
    pod = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "securityContext": {"privileged": True}},
                {"name": "b", "image": "x", "securityContext": {"privileged": True}},
            ]
        }
    }
    assert violations(pod, "baseline") == [
        'privileged (containers "a", "b" must not set securityContext.privileged=true)'
    ]


def test_windows_pods_skip_the_linux_only_restricted_checks():
    pod = {
        "spec": {
            "os": {"name": "windows"},
            "securityContext": {"runAsNonRoot": True},
            "containers": [{"name": "w", "image": "x"}],
        }
    }
    assert violations(pod, "restricted") == []


def test_pod_templates_of_workloads():
    template = restricted_pod()
    deployment = {"kind": "Deployment", "spec": {"template": template}}
    cronjob = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}}
    assert pod_template(deployment) is template and pod_template(cronjob) is template
    assert pod_template({"kind": "ConfigMap"}) is None


def test_namespace_policy_from_labels_and_defaults():
    labels = {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/enforce-version": "v1.30",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    policy, errors = namespace_policy(labels, {"audit": "restricted"})
    assert errors == []
    assert policy == {
        "enforce": ("baseline", "v1.30"),
        "warn": ("restricted", "latest"),
        "audit": ("restricted", "latest"),
    }
    assert namespace_policy({})[0]["enforce"] == ("privileged", "latest")
    policy, errors = namespace_policy({"pod-security.kubernetes.io/enforce": "strict"})
    assert (
        policy["enforce"][0] == "restricted"
        and "must be one of privileged, baseline, restricted" in errors[0]
    )
    with pytest.raises(ValueError, match="unknown Pod Security level"):
        violations({}, "strict")
