"""The Kubernetes Pod Security Standards (``baseline`` and ``restricted``, version ``latest``) as pure checks.

Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ and words each violation as the
Pod Security admission controller does: ``<reason> (<detail>)``, e.g. ``allowPrivilegeEscalation != false
(container "notebook" must set securityContext.allowPrivilegeEscalation=false)``. The checks run in the
admission controller's order (baseline checks, then restricted ones; restricted replaces the baseline checks
of capabilities, seccomp and hostPath volumes with its stricter ones).

Not modelled: the per-version rules of older ``-version`` labels (every version is checked as ``latest``),
the user-namespace relaxation (``hostUsers: false``) and exemptions (usernames, runtime classes, namespaces).
"""

from __future__ import annotations

LEVELS = ("privileged", "baseline", "restricted")
MODES = ("enforce", "audit", "warn")
LABEL_PREFIX = "pod-security.kubernetes.io/"

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",  # 1.27
        "net.ipv4.tcp_keepalive_time",  # 1.29
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",  # 1.32
        "net.ipv4.tcp_wmem",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_VOLUME_META_KEYS = frozenset({"name"})

# pod-template paths of the workload kinds the admission controller checks (warnings only)
TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


# ---- helpers --------------------------------------------------------------------------------------------


def _quote(names) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _plural(names, one: str, many: str) -> str:
    return one if len(names) == 1 else many


def _containers(spec) -> list[dict]:
    """Every container of the spec: containers, initContainers, ephemeralContainers."""
    out = []
    for key in ("containers", "initContainers", "ephemeralContainers"):
        out.extend(c for c in spec.get(key) or [] if isinstance(c, dict))
    return out


def _sc(obj) -> dict:
    sc = obj.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def _split(obj) -> tuple[dict, dict]:
    """(metadata, spec) of a pod, a pod template or a bare pod spec."""
    if isinstance(obj.get("spec"), dict) and not any(k in obj for k in ("containers", "initContainers")):
        return obj.get("metadata") or {}, obj["spec"]
    return {}, obj


def _names_where(spec, predicate) -> list[str]:
    return [c.get("name", "") for c in _containers(spec) if predicate(c)]


def _windows(spec) -> bool:
    return ((spec.get("os") or {}).get("name") or "") == "windows"


# ---- baseline -------------------------------------------------------------------------------------------


def _app_armor(meta, spec):
    bad = []
    for key, value in sorted((meta.get("annotations") or {}).items()):
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if value not in ("runtime/default", "") and not value.startswith("localhost/"):
                bad.append(f'{key}="{value}"')
    if (_sc(spec).get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad.append('pod must not set securityContext.appArmorProfile.type to "Unconfined"')
    names = _names_where(spec, lambda c: (_sc(c).get("appArmorProfile") or {}).get("type") == "Unconfined")
    if names:
        bad.append(
            f"{_plural(names, 'container', 'containers')} {_quote(names)} must not set "
            'securityContext.appArmorProfile.type to "Unconfined"'
        )
    if bad:
        reason = "forbidden AppArmor profile" if len(bad) == 1 else "forbidden AppArmor profiles"
        return reason, "; ".join(bad)
    return None


def _capabilities_baseline(meta, spec):
    names, caps = [], []
    for c in _containers(spec):
        added = [
            a for a in (_sc(c).get("capabilities") or {}).get("add") or [] if a not in BASELINE_CAPABILITIES
        ]
        if added:
            names.append(c.get("name", ""))
            caps.extend(a for a in added if a not in caps)
    if not names:
        return None
    return (
        "non-default capabilities",
        f"{_plural(names, 'container', 'containers')} {_quote(names)} must not include {_quote(caps)} in "
        "securityContext.capabilities.add",
    )


def _host_namespaces(meta, spec):
    bad = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True]
    return ("host namespaces", ", ".join(bad)) if bad else None


def _host_path_volumes(meta, spec):
    names = [v.get("name", "") for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
    if not names:
        return None
    return "hostPath volumes", f"{_plural(names, 'volume', 'volumes')} {_quote(names)}"


def _host_ports(meta, spec):
    names, ports = [], []
    for c in _containers(spec):
        used = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if used:
            names.append(c.get("name", ""))
            ports.extend(p for p in used if p not in ports)
    if not names:
        return None
    verb = "uses" if len(names) == 1 else "use"
    return (
        "hostPort",
        f"{_plural(names, 'container', 'containers')} {_quote(names)} {verb} "
        f"{_plural(ports, 'hostPort', 'hostPorts')} {', '.join(ports)}",
    )


def _privileged(meta, spec):
    names = _names_where(spec, lambda c: _sc(c).get("privileged") is True)
    if not names:
        return None
    return (
        "privileged",
        f"{_plural(names, 'container', 'containers')} {_quote(names)} must not set securityContext.privileged=true",
    )


def _proc_mount(meta, spec):
    names, values = [], []
    for c in _containers(spec):
        mount = _sc(c).get("procMount")
        if mount not in (None, "", "Default"):
            names.append(c.get("name", ""))
            if mount not in values:
                values.append(mount)
    if not names:
        return None
    return (
        "procMount",
        f"{_plural(names, 'container', 'containers')} {_quote(names)} must not set securityContext.procMount to "
        f"{_quote(values)}",
    )


def _seccomp_unconfined(spec) -> list[str]:
    bad = []
    if (_sc(spec).get("seccompProfile") or {}).get("type") == "Unconfined":
        bad.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    names = _names_where(spec, lambda c: (_sc(c).get("seccompProfile") or {}).get("type") == "Unconfined")
    if names:
        bad.append(
            f"{_plural(names, 'container', 'containers')} {_quote(names)} must not set "
            'securityContext.seccompProfile.type to "Unconfined"'
        )
    return bad


def _seccomp_baseline(meta, spec):
    bad = _seccomp_unconfined(spec)
    return ("seccompProfile", "; ".join(bad)) if bad else None


def _selinux(meta, spec):
    def forbidden(options):
        if not isinstance(options, dict):
            return []
        out = []
        if options.get("type", "") not in SELINUX_TYPES:
            out.append(f'type "{options["type"]}"')
        for key in ("user", "role"):
            if options.get(key):
                out.append(f'{key} "{options[key]}"')
        return out

    details, subjects = [], []
    pod_bad = forbidden(_sc(spec).get("seLinuxOptions"))
    if pod_bad:
        subjects.append("pod")
        details.extend(pod_bad)
    names = []
    for c in _containers(spec):
        bad = forbidden(_sc(c).get("seLinuxOptions"))
        if bad:
            names.append(c.get("name", ""))
            details.extend(d for d in bad if d not in details)
    if names:
        subjects.append(f"{_plural(names, 'container', 'containers')} {_quote(names)}")
    if not details:
        return None
    verb = "sets" if subjects == ["pod"] or (len(subjects) == 1 and len(names) == 1) else "set"
    return (
        "seLinuxOptions",
        f"{' and '.join(subjects)} {verb} forbidden securityContext.seLinuxOptions: {'; '.join(details)}",
    )


def _sysctls(meta, spec):
    bad = [s.get("name", "") for s in _sc(spec).get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    return ("forbidden sysctls", ", ".join(bad)) if bad else None


def _host_process(meta, spec):
    pod = (_sc(spec).get("windowsOptions") or {}).get("hostProcess") is True
    names = _names_where(spec, lambda c: (_sc(c).get("windowsOptions") or {}).get("hostProcess") is True)
    if not pod and not names:
        return None
    subjects = (["pod"] if pod else []) + (
        [f"{_plural(names, 'container', 'containers')} {_quote(names)}"] if names else []
    )
    return (
        "hostProcess",
        f"{' and '.join(subjects)} must not set securityContext.windowsOptions.hostProcess=true",
    )


# ---- restricted -----------------------------------------------------------------------------------------


def _allow_privilege_escalation(meta, spec):
    if _windows(spec):
        return None
    names = _names_where(spec, lambda c: _sc(c).get("allowPrivilegeEscalation") is not False)
    if not names:
        return None
    return (
        "allowPrivilegeEscalation != false",
        f"{_plural(names, 'container', 'containers')} {_quote(names)} must set "
        "securityContext.allowPrivilegeEscalation=false",
    )


def _capabilities_restricted(meta, spec):
    if _windows(spec):
        return _capabilities_baseline(meta, spec)
    no_drop, bad_add, caps = [], [], []
    for c in _containers(spec):
        capabilities = _sc(c).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            no_drop.append(c.get("name", ""))
        added = [a for a in capabilities.get("add") or [] if a != "NET_BIND_SERVICE"]
        if added:
            bad_add.append(c.get("name", ""))
            caps.extend(a for a in added if a not in caps)
    details = []
    if no_drop:
        details.append(
            f"{_plural(no_drop, 'container', 'containers')} {_quote(no_drop)} must set "
            'securityContext.capabilities.drop=["ALL"]'
        )
    if bad_add:
        details.append(
            f"{_plural(bad_add, 'container', 'containers')} {_quote(bad_add)} must not include {_quote(caps)} in "
            "securityContext.capabilities.add"
        )
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def _volume_type(volume) -> str:
    kinds = [k for k in volume if k not in _VOLUME_META_KEYS]
    return kinds[0] if kinds else "<unknown>"


def _restricted_volumes(meta, spec):
    names, kinds = [], []
    for v in spec.get("volumes") or []:
        kind = _volume_type(v)
        if kind not in RESTRICTED_VOLUME_TYPES:
            names.append(v.get("name", ""))
            if kind not in kinds:
                kinds.append(kind)
    if not names:
        return None
    verb = "uses" if len(names) == 1 else "use"
    return (
        "restricted volume types",
        f"{_plural(names, 'volume', 'volumes')} {_quote(names)} {verb} restricted "
        f"{_plural(kinds, 'volume type', 'volume types')} {_quote(kinds)}",
    )


def _run_as_non_root(meta, spec):
    pod_value = _sc(spec).get("runAsNonRoot")
    details = []
    if pod_value is False:
        details.append("pod must not set securityContext.runAsNonRoot=false")
    explicit_false = _names_where(spec, lambda c: _sc(c).get("runAsNonRoot") is False)
    if explicit_false:
        details.append(
            f"{_plural(explicit_false, 'container', 'containers')} {_quote(explicit_false)} must not set "
            "securityContext.runAsNonRoot=false"
        )
    if pod_value is not True:
        unset = _names_where(spec, lambda c: _sc(c).get("runAsNonRoot") is None)
        if unset:
            details.append(
                f"pod or {_plural(unset, 'container', 'containers')} {_quote(unset)} must set "
                "securityContext.runAsNonRoot=true"
            )
    return ("runAsNonRoot != true", "; ".join(details)) if details else None


def _run_as_user(meta, spec):
    details = []
    if _sc(spec).get("runAsUser") == 0:
        details.append("pod must not set runAsUser=0")
    names = _names_where(spec, lambda c: _sc(c).get("runAsUser") == 0)
    if names:
        details.append(
            f"{_plural(names, 'container', 'containers')} {_quote(names)} must not set runAsUser=0"
        )
    return ("runAsUser=0", "; ".join(details)) if details else None


def _seccomp_restricted(meta, spec):
    if _windows(spec):
        return _seccomp_baseline(meta, spec)
    details = _seccomp_unconfined(spec)
    pod_type = (_sc(spec).get("seccompProfile") or {}).get("type")
    if pod_type not in ("RuntimeDefault", "Localhost"):
        unset = _names_where(spec, lambda c: not (_sc(c).get("seccompProfile") or {}).get("type"))
        if unset:
            details.append(
                f"pod or {_plural(unset, 'container', 'containers')} {_quote(unset)} must set "
                'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'
            )
    return ("seccompProfile", "; ".join(details)) if details else None


BASELINE_CHECKS = (
    ("appArmorProfile", _app_armor),
    ("capabilities_baseline", _capabilities_baseline),
    ("hostNamespaces", _host_namespaces),
    ("hostPathVolumes", _host_path_volumes),
    ("hostPorts", _host_ports),
    ("privileged", _privileged),
    ("procMount", _proc_mount),
    ("seccompProfile_baseline", _seccomp_baseline),
    ("seLinuxOptions", _selinux),
    ("sysctls", _sysctls),
    ("windowsHostProcess", _host_process),
)
RESTRICTED_CHECKS = (
    ("allowPrivilegeEscalation", _allow_privilege_escalation),
    ("capabilities_restricted", _capabilities_restricted),
    ("restrictedVolumes", _restricted_volumes),
    ("runAsNonRoot", _run_as_non_root),
    ("runAsUser", _run_as_user),
    ("seccompProfile_restricted", _seccomp_restricted),
)
# baseline checks a restricted one replaces
_OVERRIDDEN = frozenset({"capabilities_baseline", "hostPathVolumes", "seccompProfile_baseline"})


# ---- public API -----------------------------------------------------------------------------------------


def check_ids(level: str) -> list[str]:
    """The IDs of the checks applied at ``level``, in the order they run."""
    return [check_id for check_id, _ in _checks(level)]


def _checks(level: str):
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r} (one of {', '.join(LEVELS)})")
    if level == "privileged":
        return []
    if level == "baseline":
        return list(BASELINE_CHECKS)
    return [c for c in BASELINE_CHECKS if c[0] not in _OVERRIDDEN] + list(RESTRICTED_CHECKS)


def violations(pod_spec_or_pod: dict, level: str) -> list[str]:
    """The violations of ``level`` by a pod (or a pod template, or a bare pod spec), each worded
    ``<reason> (<detail>)`` as the admission controller words them; [] when it conforms."""
    meta, spec = _split(pod_spec_or_pod or {})
    out = []
    for _, check in _checks(level):
        found = check(meta, spec)
        if found:
            out.append(f"{found[0]} ({found[1]})")
    return out


def policy_name(level: str, version: str = "latest") -> str:
    return f'"{level}:{version}"'


def check_pod(pod: dict, level: str, version: str = "latest") -> str | None:
    """None when ``pod`` conforms to ``level``, else ``violates PodSecurity "<level>:<version>": ...``."""
    found = violations(pod, level)
    if not found:
        return None
    return f"violates PodSecurity {policy_name(level, version)}: {', '.join(found)}"


def forbidden_message(name: str, level: str, version: str, found: list[str]) -> str:
    """The message of the 403 answer to creating pod ``name``."""
    return (
        f'pods "{name}" is forbidden: violates PodSecurity {policy_name(level, version)}: {", ".join(found)}'
    )


def warning_message(level: str, version: str, found: list[str]) -> str:
    """The text of the ``Warning`` header for a pod or workload that would violate ``level``."""
    return f"would violate PodSecurity {policy_name(level, version)}: {', '.join(found)}"


def pod_template(obj: dict) -> dict | None:
    """The pod template of a workload object (Deployment, Job, CronJob, ...), or None."""
    path = TEMPLATE_PATHS.get(obj.get("kind", ""))
    if path is None:
        return None
    cur = obj
    for key in path:
        cur = cur.get(key) if isinstance(cur, dict) else None
    return cur if isinstance(cur, dict) else None


def namespace_policy(labels: dict | None, defaults: dict | None = None) -> tuple[dict, list[str]]:
    """The policy of a namespace from its labels: ({mode: (level, version)}, errors).

    ``defaults`` ({mode: level} or {mode: (level, version)}) apply to modes without a label (the
    AdmissionConfiguration's ``defaults``); otherwise a mode is ``privileged``. An invalid level is an error
    and is evaluated as ``restricted``, as the admission controller fails closed."""
    labels = labels or {}
    defaults = defaults or {}
    policy, errors = {}, []
    for mode in MODES:
        default = defaults.get(mode, "privileged")
        level, version = default if isinstance(default, tuple) else (default, "latest")
        key = f"{LABEL_PREFIX}{mode}"
        if key in labels:
            level = labels[key]
            if level not in LEVELS:
                errors.append(
                    f'metadata.labels[{key}]: Invalid value: "{level}": must be one of privileged, baseline, '
                    "restricted"
                )
                level = "restricted"
        version = labels.get(f"{key}-version", version) or "latest"
        policy[mode] = (level, version)
    return policy, errors
