"""A kubelet for the fake API server's node that RUNS pods on the Docker engine (opt-in test double).

``FakeKubernetes`` (tests/fake_k8s.py) only pretends pods run. ``FakeKubelet(fake, client).start()`` takes
over the pods the fake schedules to its node (``fake-node`` by default) and runs them as Docker containers,
so that what only a real kubelet shows (volume ownership, uid/gid, unprivileged ports, sysctls, capabilities)
shows here too. It reports back as a kubelet does: ``status.phase`` Pending/Running/Succeeded/Failed,
``podIP`` (the pod's address on one Docker network shared by the fake cluster), ``containerStatuses`` and
``initContainerStatuses`` with ``ready``/``started``/``restartCount`` and ``state`` waiting/running/terminated
(exit code), plus Events. ``stop()`` removes every container, volume and network it made (all labelled
``mlhub.test=fake-kubelet-<id>``).

One pod = one "pause" container (the pod's first image running ``sleep infinity`` as uid 65535 with no
capabilities; it owns the network namespace, hostname, sysctls and the pod IP) + its init containers, run to
completion in order, + its main containers, all joined to the pause container's network
(``network_mode=container:``). Mapped, per container:

- image: must exist on the engine (never pulled), with the kubelet's Events just before each container is
  created: ``imagePullPolicy`` (default: Always for ``:latest``/untagged, else IfNotPresent) IfNotPresent or
  Never -> ``Pulled`` "Container image "X" already present on machine"; Always -> ``Pulling`` "Pulling image
  "X"" and ``Pulled`` "Successfully pulled image "X" in 3ms (3ms including waiting). Image size: N bytes."
  (the time the engine took to find it); a missing image is ``waiting: ErrImageNeverPull`` under Never, else
  ``Pulling`` + Warning ``Failed`` "Failed to pull image ..." and ``waiting: ErrImagePull`` (no back-off
  retries); then ``Created`` "Created container: <name>" and ``Started``;
  ``command``/``args`` as Kubernetes means them (entrypoint / cmd); ``workingDir``; ``env`` with plain values,
  ``valueFrom`` secretKeyRef/configMapKeyRef (from the fake's stored objects; ``optional``) and fieldRef
  metadata.name/namespace/uid, spec.nodeName/serviceAccountName; ``envFrom`` secretRef/configMapRef.
- securityContext (pod's, overridden by the container's): runAsUser/runAsGroup -> ``--user uid[:gid]``
  (without runAsGroup the gid comes from the image's /etc/passwd, as containerd does), runAsNonRoot (refused
  as CreateContainerConfigError when the effective user is root), fsGroup and supplementalGroups ->
  ``group_add``, capabilities add/drop -> cap_add/cap_drop (the engine's default set, which is containerd's),
  privileged, allowPrivilegeEscalation false -> ``no-new-privileges``, readOnlyRootFilesystem -> read_only;
  pod sysctls -> the pause container's sysctls, with containerd's default
  ``net.ipv4.ip_unprivileged_port_start=1024`` unless the pod sets it (Docker's own default is 0, so a
  plain ``docker run`` hides a bind to port 22 that fails on a cluster).
- volumes: emptyDir -> a Docker volume, root 0777 (``medium: Memory`` -> a tmpfs per container, mode 1777,
  ``sizeLimit``; not shared between the pod's containers); persistentVolumeClaim -> one Docker volume per
  claim, kept across pods until ``stop()``, whose root starts root-owned 0755 like a fresh CSI block volume;
  secret/configMap -> files written into a fresh volume (``items`` with ``path``/``mode``, ``defaultMode``,
  ``optional``), group fsGroup when set. fsGroup is applied as the kubelet does: chgrp, g+rw(x) and setgid on
  directories, recursively (``fsGroupChangePolicy: OnRootMismatch``: only when the root does not already
  match). volumeMounts: ``readOnly``; ``subPath`` is refused (CreateContainerConfigError: Docker 20.10 cannot
  mount a volume's subdirectory), except for Secret/ConfigMap files (below). Other volume types are mounted as an empty volume with a Warning event.
- restartPolicy: Never -> the pod ends Succeeded/Failed when its containers exit; Always/OnFailure ->
  restarted after a back-off (1 s doubling to 10 s; ``waiting: CrashLoopBackOff`` meanwhile). A failing
  init container fails the pod whatever the policy (a kubelet would retry it under Always/OnFailure).

Services resolve by DNS name: the pause container gets Docker network aliases ``<svc>``, ``<svc>.<ns>``,
``<svc>.<ns>.svc``, ``<svc>.<ns>.svc.cluster.local`` for every Service of its namespace whose selector matches
the pod (re-checked every poll: a Service made later is added by reconnecting the pod at the same IP;
the kubelet hands out pod IPs itself, never twice, so a pod starting meanwhile cannot take that address). A name
resolves to the pod IPs themselves: no clusterIP, no kube-proxy, no load balancing, and no port remapping (a
Service's ``port`` is not opened: clients must use the ``targetPort``, e.g. proxy-public 80 -> 8080).

The API server as pods see it: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` point at a TLS
forwarder (``ApiForwarder``) on the kubelet network's gateway IP that relays to the fake's plain-HTTP
127.0.0.1 port; unless ``automountServiceAccountToken: false`` the pod gets
``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`` (ca.crt: the forwarder's
self-signed certificate; the token is a dummy the fake accepts), so in-cluster clients work unchanged.
``subPath`` of a Secret/ConfigMap file is bind-mounted read-only from its volume's directory on the engine's
host, as a kubelet bind-mounts it (so it works under ``readOnlyRootFilesystem``; no updates either); ``fieldRef``
status.podIP/status.hostIP are set.

Not done (yet): no probes (a running container is ready), no resource limits, no hostPath/projected/
downwardAPI volumes, no real image pulls, no NetworkPolicy, no ephemeral containers, no pod-level ``hostNetwork``,
no graceful termination hooks (a deleted pod's containers are removed with SIGKILL after ``stop_timeout``),
no re-scheduling after ``stop()``. Updates of Secrets/ConfigMaps do not reach mounted files.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import logging
import os
import re
import socket
import ssl
import tarfile
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import docker
from docker.types import Mount
from fake_k8s import NODE_IP, NODE_NAME

log = logging.getLogger(__name__)

LABEL = "mlhub.test"
LABEL_POD = "mlhub.test.pod"  # <namespace>/<name>/<uid> of the pod a container belongs to
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"
CONTAINERD_UNPRIVILEGED_PORT_START = "1024"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CLUSTER_DOMAIN = "cluster.local"


class PodConfigError(Exception):
    """The pod cannot start as specified (a kubelet's CreateContainerConfigError / ErrImageNeverPull)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _docker_time(text: str | None) -> str:
    """Docker's RFC3339Nano timestamp as the API's seconds precision."""
    return (text or "")[:19] + "Z" if text and not text.startswith("0001") else _now()


def parse_quantity(text) -> int:
    """A Kubernetes quantity (``64Mi``, ``1G``, ``500``) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTE]i?)?", str(text).strip())
    if not match:
        raise PodConfigError("CreateContainerConfigError", f"bad quantity {text!r}")
    number, unit = float(match.group(1)), match.group(2) or ""
    power = "KMGTE".index(unit[0]) + 1 if unit else 0
    return int(number * ((1024 if unit.endswith("i") else 1000) ** power))


def security_settings(pod_sc: dict | None, container_sc: dict | None) -> dict:
    """The Docker create() arguments of a container's effective securityContext (pure)."""
    pod_sc, sc = pod_sc or {}, container_sc or {}

    def pick(key):
        return sc.get(key, pod_sc.get(key))

    out: dict = {}
    uid, gid = pick("runAsUser"), pick("runAsGroup")
    if uid is not None:
        out["user"] = f"{uid}:{gid}" if gid is not None else str(uid)
    elif gid is not None:
        out["user_group_only"] = gid  # resolved against the image's user by the caller
    groups = [g for g in [pod_sc.get("fsGroup"), *(pod_sc.get("supplementalGroups") or [])] if g is not None]
    if groups:
        out["group_add"] = [str(g) for g in dict.fromkeys(groups)]
    caps = sc.get("capabilities") or {}
    if caps.get("add"):
        out["cap_add"] = list(caps["add"])
    if caps.get("drop"):
        out["cap_drop"] = list(caps["drop"])
    if sc.get("privileged"):
        out["privileged"] = True
    if sc.get("allowPrivilegeEscalation") is False:
        out["security_opt"] = ["no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        out["read_only"] = True
    return out


def pod_sysctls(pod_sc: dict | None) -> dict:
    """The pod's sysctls with containerd's unprivileged-port default (pure)."""
    sysctls = {s["name"]: str(s["value"]) for s in (pod_sc or {}).get("sysctls") or []}
    sysctls.setdefault(UNPRIVILEGED_PORT_SYSCTL, CONTAINERD_UNPRIVILEGED_PORT_START)
    return sysctls


def command_settings(container: dict) -> dict:
    """Kubernetes command/args as Docker entrypoint/command (pure): command replaces the entrypoint (and
    the image's cmd), args replace the cmd."""
    out: dict = {}
    if container.get("command"):
        out["entrypoint"] = list(container["command"])
        out["command"] = list(container.get("args") or [])
    elif container.get("args"):
        out["command"] = list(container["args"])
    return out


def pull_policy(container: dict) -> str:
    """The container's ``imagePullPolicy``, else the API server's default: Always for a ``:latest`` or
    untagged image, IfNotPresent otherwise (pure)."""
    if container.get("imagePullPolicy"):
        return container["imagePullPolicy"]
    image = container.get("image") or ""
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    return "IfNotPresent" if "@" in image or (tag and tag != "latest") else "Always"


def go_duration(seconds: float) -> str:
    """A duration truncated to milliseconds as Go prints it (``0s``, ``12ms``, ``1.2s``, ``1m2.5s``; pure)."""
    ms = int(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, ms = divmod(ms, 60000)
    whole, frac = divmod(ms, 1000)
    text = f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def pull_events(image: str, policy: str, present: bool, size: int = 0, seconds: float = 0.0) -> list:
    """The kubelet's image Events for one container as ``(type, reason, message)`` (pure): an image
    present under IfNotPresent/Never is not pulled; Always pulls (here: it only checks the engine);
    a missing one fails the pull, or under Never is refused."""
    if policy == "Never" or (policy == "IfNotPresent" and present):
        if present:
            return [("Normal", "Pulled", f'Container image "{image}" already present on machine')]
        return [
            (
                "Warning",
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
        ]
    events = [("Normal", "Pulling", f'Pulling image "{image}"')]
    if not present:
        return [
            *events,
            (
                "Warning",
                "Failed",
                f'Failed to pull image "{image}": the fake kubelet never pulls: load it into the engine',
            ),
        ]
    took = go_duration(seconds)
    return [
        *events,
        (
            "Normal",
            "Pulled",
            f'Successfully pulled image "{image}" in {took} ({took} including waiting). Image size: {size} bytes.',
        ),
    ]


def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """A Service's equality selector against a pod's labels (pure; an empty selector selects nothing)."""
    labels = labels or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_aliases(services: list[dict], pod: dict) -> list[str]:
    """The DNS names a pod answers to: for every Service of its namespace selecting it, ``<svc>``,
    ``<svc>.<ns>``, ``<svc>.<ns>.svc`` and ``<svc>.<ns>.svc.cluster.local`` (pure, sorted)."""
    ns = pod["metadata"]["namespace"]
    names = set()
    for svc in services:
        if svc["metadata"].get("namespace", ns) != ns:
            continue
        if selector_matches((svc.get("spec") or {}).get("selector"), pod["metadata"].get("labels")):
            name = svc["metadata"]["name"]
            names.update({name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"})
    return sorted(names)


def api_certificate(ip: str) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) and its key for the API server at ``ip`` (also the pods' ca.crt)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kube-apiserver")])
    now = datetime.now(UTC)
    names = [x509.IPAddress(ipaddress.ip_address(ip))] + [
        x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc")
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class ApiForwarder:
    """The API server as pods see it: TLS on ``ip:port`` (the kubelet network's gateway), forwarded in
    plain HTTP to the fake on 127.0.0.1 (the fake serves no TLS and listens on loopback only)."""

    def __init__(self, ip: str, target_port: int):
        self.ip, self.target_port = ip, target_port
        self.ca_pem, key_pem = api_certificate(ip)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            with open(cert_file, "wb") as f:
                f.write(self.ca_pem)
            with open(key_file, "wb") as f:
                f.write(key_pem)
            self._context.load_cert_chain(cert_file, key_file)
        self._server = socket.create_server((ip, 0))
        self._server.settimeout(0.5)
        self.port = self._server.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-kubelet-api")
        self._thread.start()

    def _serve(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.settimeout(10)
            tls = self._context.wrap_socket(conn, server_side=True)
            tls.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            upstream.settimeout(None)
        except (OSError, ssl.SSLError) as e:
            log.info("fake kubelet API forwarder: %s", e)
            conn.close()
            return

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(upstream, tls), daemon=True).start()
        pump(tls, upstream)

    def stop(self):
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)


def _archive_has_file(archive: bytes, member: str) -> bool:
    """Whether the tar ``archive`` holds the regular file ``member`` (pure)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            return tar.getmember(member).isfile()
        except KeyError:
            return False


class FakeKubelet:
    """Runs the pods ``fake`` binds to ``node`` as containers on the engine of ``client``."""

    def __init__(self, fake, client, node=NODE_NAME, poll_seconds=0.25, stop_timeout=2, init_timeout=120):
        self.fake = fake
        self.client = client
        self.node = node
        self.poll_seconds = poll_seconds
        self.stop_timeout = stop_timeout
        self.init_timeout = init_timeout
        self.id = uuid.uuid4().hex[:8]
        self.label = f"fake-kubelet-{self.id}"
        self.network_name = f"fake-kubelet-{self.id}"
        self.network = None
        self.errors: list[str] = []  # unexpected failures of pod workers (a test may assert it stays empty)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pvc_lock = threading.Lock()
        self.api: ApiForwarder | None = None
        self._pod_ips: dict[str, str] = {}  # pod uid -> IP, for fieldRef status.podIP
        self._ip_lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> FakeKubelet:
        # a subnet of our own choosing (the engine's next free pool) so that a pod keeps its IP when it is
        # reconnected with new Service aliases (Docker assigns fixed addresses only on such networks)
        probe = self.client.networks.create(self.network_name, driver="bridge", labels={LABEL: self.label})
        probe.reload()
        pool = dict(probe.attrs["IPAM"]["Config"][0])
        probe.remove()
        self.network = self.client.networks.create(
            self.network_name,
            driver="bridge",
            labels={LABEL: self.label},
            ipam=docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=pool["Subnet"], gateway=pool["Gateway"])]
            ),
        )
        self.gateway = pool["Gateway"]
        # pod IPs are handed out here, never twice: a pod reconnected for new aliases keeps its address, which
        # the engine would otherwise give to a pod starting meanwhile ("Address already in use")
        self._free_ips = (
            str(ip) for ip in ipaddress.ip_network(pool["Subnet"]).hosts() if str(ip) != self.gateway
        )
        self.api = ApiForwarder(self.gateway, int(self.fake.url.rsplit(":", 1)[1]))
        self.fake.kubelet = self._claim
        return self

    def stop(self) -> None:
        """Stop taking pods, stop the pod workers and remove everything labelled as ours."""
        if self.fake.kubelet == self._claim:
            self.fake.kubelet = None
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=self.stop_timeout + 10)
        if self.api is not None:
            self.api.stop()
        self.remove_all()

    def remove_all(self) -> None:
        selector = {"label": f"{LABEL}={self.label}"}
        for container in self.client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
        for volume in self.client.volumes.list(filters=selector):
            volume.remove(force=True)
        for network in self.client.networks.list(filters=selector):
            network.remove()

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _claim(self, pod: dict) -> bool:
        """The fake's hook (on its event loop): take pods bound to our node, run each in a thread."""
        if pod["spec"].get("nodeName") != self.node or self._stopping.is_set():
            return False
        thread = threading.Thread(target=self._run_pod, args=(pod,), daemon=True, name="fake-kubelet-pod")
        self._threads.append(thread)
        thread.start()
        return True

    # ---- naming and status ------------------------------------------------------------------------------------

    def _labels(self, pod) -> dict:
        meta = pod["metadata"]
        return {LABEL: self.label, LABEL_POD: f"{meta['namespace']}/{meta['name']}/{meta['uid']}"}

    def _name(self, pod, suffix) -> str:
        meta = pod["metadata"]
        base = f"fk{self.id}-{meta['namespace']}-{meta['name']}"[:80]
        return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{base}-{meta['uid'][:8]}-{suffix}")

    def container_of(self, pod: dict, container_name: str):
        """The Docker container running ``container_name`` of ``pod`` (for tests: exec, logs)."""
        return self.client.containers.get(self._name(pod, f"c-{container_name}"))

    def _update(self, pod, fn) -> dict | None:
        meta = pod["metadata"]
        return self.fake.update_pod_status(meta["namespace"], meta["name"], meta["uid"], fn)

    def _current(self, pod) -> dict | None:
        meta = pod["metadata"]
        current = self.fake.get("pods", meta["namespace"], meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return None
        return current

    def _gone(self, pod) -> bool:
        current = self._current(pod)
        return (
            self._stopping.is_set() or current is None or bool(current["metadata"].get("deletionTimestamp"))
        )

    @staticmethod
    def _status_entry(c, state, ready=False, restarts=0, last=None, container_id="") -> dict:
        return {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "containerID": f"docker://{container_id}" if container_id else "",
            "ready": ready,
            "started": "running" in state,
            "restartCount": restarts,
            "state": state,
            "lastState": last or {},
        }

    @staticmethod
    def _conditions(initialized: bool, ready: bool) -> list[dict]:
        now = _now()
        return [
            {"type": t, "status": "True" if ok else "False", "lastProbeTime": None, "lastTransitionTime": now}
            for t, ok in (
                ("PodReadyToStartContainers", True),
                ("Initialized", initialized),
                ("Ready", ready),
                ("ContainersReady", ready),
                ("PodScheduled", True),
            )
        ]

    def _report(self, pod, phase, ip=None, init=None, main=None, reason=None, message=None):
        """Write the pod's status (init/main: lists of container status entries)."""

        def apply(p):
            status = p["status"]
            ready = phase == "Running" and bool(main) and all(s["ready"] for s in main)
            initialized = phase in ("Running", "Succeeded") or (
                init is not None and all("terminated" in s["state"] for s in init)
            )
            status.update(
                phase=phase,
                hostIP=NODE_IP,
                hostIPs=[{"ip": NODE_IP}],
                startTime=status.get("startTime") or _now(),
                conditions=self._conditions(initialized, ready),
            )
            if ip:
                status.update(podIP=ip, podIPs=[{"ip": ip}])
            if init is not None:
                status["initContainerStatuses"] = init
            if main is not None:
                status["containerStatuses"] = main
            for key, value in (("reason", reason), ("message", message)):
                if value:
                    status[key] = value
                else:
                    status.pop(key, None)

        return self._update(pod, apply)

    # ---- the pod worker -----------------------------------------------------------------------------------------

    def _run_pod(self, pod: dict) -> None:
        spec = pod["spec"]
        init_specs = spec.get("initContainers") or []
        main_specs = spec.get("containers") or []
        waiting = {"waiting": {"reason": "PodInitializing" if init_specs else "ContainerCreating"}}
        self._report(
            pod,
            "Pending",
            init=[self._status_entry(c, {"waiting": {"reason": "PodInitializing"}}) for c in init_specs],
            main=[self._status_entry(c, waiting) for c in main_specs],
        )
        try:
            self._run_pod_checked(pod, init_specs, main_specs)
        except PodConfigError as e:
            self._report(
                pod,
                "Pending",
                init=[
                    self._status_entry(c, {"waiting": {"reason": e.reason, "message": e.message}})
                    for c in init_specs
                ],
                main=[
                    self._status_entry(c, {"waiting": {"reason": e.reason, "message": e.message}})
                    for c in main_specs
                ],
            )
            detail = e.reason if e.reason.startswith("ErrImage") else e.message  # as the kubelet words it
            self.fake.record_event(pod, "Failed", f"Error: {detail}", etype="Warning")
            self._wait_until_gone(pod)
        except Exception as e:  # the engine or this double went wrong: visible in the pod and in errors
            log.exception("fake kubelet: pod %s", pod["metadata"]["name"])
            self.errors.append(f"{pod['metadata']['name']}: {e}")
            self._report(pod, "Failed", reason="Error", message=str(e))
            self._wait_until_gone(pod)
        finally:
            self._remove_pod(pod)

    def _wait_until_gone(self, pod):
        while not self._gone(pod):
            time.sleep(self.poll_seconds)

    def _image(self, name):
        try:
            return self.client.images.get(name)
        except docker.errors.ImageNotFound:
            return None

    def _pull(self, pod, c) -> None:
        """What the kubelet does with a container's image before creating it, as Events (nothing is pulled:
        under Always the engine is only asked for it); PodConfigError when it is missing."""
        started = time.monotonic()
        image = self._image(c["image"])
        policy = pull_policy(c)
        size = (image.attrs.get("Size") or 0) if image is not None else 0
        events = pull_events(c["image"], policy, image is not None, size, time.monotonic() - started)
        for etype, reason, message in events:
            self.fake.record_event(pod, reason, message, etype=etype)
        if image is None:
            reason = "ErrImageNeverPull" if policy == "Never" else "ErrImagePull"
            raise PodConfigError(reason, events[-1][2])

    def _sandbox_image(self, pod, specs) -> str:
        """An image of the pod present on the engine, for its pause container and volume helpers (a
        kubelet's sandbox has its own pause image); when none is, the first container's pull fails."""
        for c in specs:
            if self._image(c["image"]) is not None:
                return c["image"]
        self._pull(pod, specs[0])
        raise PodConfigError("ErrImagePull", f'image "{specs[0]["image"]}" not present')

    def _run_pod_checked(self, pod, init_specs, main_specs):
        image = self._sandbox_image(pod, [*init_specs, *main_specs])
        mounts = self._prepare_volumes(pod, image)
        with self._ip_lock:
            ip = next(self._free_ips)
        aliases = service_aliases(self.fake.list("services", pod["metadata"]["namespace"]), pod)
        pause = self._start_pause(pod, image, ip, aliases)
        self._pod_ips[pod["metadata"]["uid"]] = ip
        init_done = []
        for i, c in enumerate(init_specs):
            if self._gone(pod):
                return
            self._pull(pod, c)
            container = self._create(pod, c, mounts, pause)
            self.fake.record_event(pod, "Created", f"Created container: {c['name']}")
            self.fake.record_event(pod, "Started", f"Started container {c['name']}")
            container.start()
            try:
                result = container.wait(timeout=self.init_timeout)
            except Exception as e:  # requests' ReadTimeout or ConnectionError: the init container hangs
                raise PodConfigError(
                    "InitTimeout", f"init container {c['name']} ran over {self.init_timeout} s"
                ) from e
            container.reload()
            state = self._terminated(container)
            init_done.append(self._status_entry(c, state, container_id=container.id))
            if result["StatusCode"] != 0:
                rest = [
                    self._status_entry(x, {"waiting": {"reason": "PodInitializing"}})
                    for x in init_specs[i + 1 :]
                ]
                self._report(
                    pod,
                    "Failed",
                    ip=ip,
                    init=init_done + rest,
                    main=[
                        self._status_entry(x, {"waiting": {"reason": "PodInitializing"}}) for x in main_specs
                    ],
                )
                return
        containers = []
        for c in main_specs:
            self._pull(pod, c)
            container = self._create(pod, c, mounts, pause)
            self.fake.record_event(pod, "Created", f"Created container: {c['name']}")
            container.start()
            self.fake.record_event(pod, "Started", f"Started container {c['name']}")
            containers.append(container)
        self._supervise(pod, main_specs, containers, init_done, ip, pause, aliases)

    def _sync_aliases(self, pod, pause, ip, current) -> list[str]:
        """Give the pause container the DNS names of the Services selecting the pod (reconnecting it to the
        network at the same IP when they changed); returns the names now set."""
        wanted = service_aliases(self.fake.list("services", pod["metadata"]["namespace"]), pod)
        if wanted != current:
            self.network.disconnect(pause)
            self.network.connect(pause, aliases=wanted, ipv4_address=ip)
        return wanted

    def _supervise(self, pod, specs, containers, init_done, ip, pause, aliases):
        """Report the containers' states until the pod is deleted (or ends, restartPolicy Never)."""
        policy = pod["spec"].get("restartPolicy") or "Always"
        restarts = [0] * len(specs)
        last = [{} for _ in specs]
        restart_at: list[float | None] = [None] * len(specs)
        reported = None
        while not self._gone(pod):
            aliases = self._sync_aliases(pod, pause, ip, aliases)  # Services created after the pod
            entries = []
            for i, (c, container) in enumerate(zip(specs, containers, strict=True)):
                container.reload()
                if container.status == "running":
                    state = {"running": {"startedAt": _docker_time(container.attrs["State"]["StartedAt"])}}
                    entries.append(self._status_entry(c, state, True, restarts[i], last[i], container.id))
                    continue
                terminated = self._terminated(container)
                code = terminated["terminated"]["exitCode"]
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    entries.append(
                        self._status_entry(c, terminated, False, restarts[i], last[i], container.id)
                    )
                    continue
                if restart_at[i] is None:
                    restart_at[i] = time.monotonic() + min(10, 2 ** restarts[i])
                    last[i] = terminated
                if time.monotonic() >= restart_at[i]:
                    restarts[i] += 1
                    restart_at[i] = None
                    container.start()
                    entries.append(
                        self._status_entry(
                            c,
                            {"waiting": {"reason": "ContainerCreating"}},
                            False,
                            restarts[i],
                            last[i],
                            container.id,
                        )
                    )
                else:
                    state = {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off restarting {c['name']}",
                        }
                    }
                    entries.append(self._status_entry(c, state, False, restarts[i], last[i], container.id))
            phase = "Running"
            if all("terminated" in e["state"] for e in entries):
                codes = [e["state"]["terminated"]["exitCode"] for e in entries]
                phase = "Succeeded" if not any(codes) else "Failed"
            if entries != reported:
                self._report(pod, phase, ip=ip, init=init_done, main=entries)
                reported = entries
            if phase != "Running":
                self._wait_until_gone(pod)
                return
            time.sleep(self.poll_seconds)

    @staticmethod
    def _terminated(container) -> dict:
        state = container.attrs["State"]
        code = state.get("ExitCode", 0)
        reason = "Completed" if code == 0 else ("OOMKilled" if state.get("OOMKilled") else "Error")
        return {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": _docker_time(state.get("StartedAt")),
                "finishedAt": _docker_time(state.get("FinishedAt")),
                "containerID": f"docker://{container.id}",
            }
        }

    def _remove_pod(self, pod):
        """Remove the pod's containers and its own volumes (PVC volumes stay until stop())."""
        self._pod_ips.pop(pod["metadata"]["uid"], None)
        selector = {"label": f"{LABEL_POD}={self._labels(pod)[LABEL_POD]}"}
        for container in self.client.containers.list(all=True, filters=selector):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for volume in self.client.volumes.list(filters=selector):
            try:
                volume.remove(force=True)
            except docker.errors.APIError as e:
                log.warning("fake kubelet: volume %s not removed: %s", volume.name, e)

    # ---- containers -------------------------------------------------------------------------------------------

    def _start_pause(self, pod, image, ip, aliases):
        spec = pod["spec"]
        endpoint = self.client.api.create_endpoint_config(ipv4_address=ip, aliases=aliases)
        pause = self.client.containers.create(
            image,
            entrypoint=["sleep", "infinity"],
            command=[],
            name=self._name(pod, "pause"),
            hostname=(spec.get("hostname") or pod["metadata"]["name"])[:63],
            labels=self._labels(pod),
            network=self.network_name,
            networking_config={self.network_name: endpoint},
            user="65535:65535",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            sysctls=pod_sysctls(spec.get("securityContext")),
        )
        pause.start()
        return pause

    def _create(self, pod, c, mounts, pause):
        spec = pod["spec"]
        settings = security_settings(spec.get("securityContext"), c.get("securityContext"))
        image_user = (self.client.images.get(c["image"]).attrs.get("Config") or {}).get("User") or ""
        if "user_group_only" in settings:
            gid = settings.pop("user_group_only")
            settings["user"] = f"{image_user.split(':')[0] or 0}:{gid}"
        effective = settings.get("user", image_user).split(":")[0]
        non_root = (c.get("securityContext") or {}).get(
            "runAsNonRoot", (spec.get("securityContext") or {}).get("runAsNonRoot")
        )
        if non_root and effective in ("", "0", "root"):
            raise PodConfigError(
                "CreateContainerConfigError", "container has runAsNonRoot and image will run as root"
            )
        if non_root and not effective.isdigit():
            raise PodConfigError(
                "CreateContainerConfigError",
                f"container has runAsNonRoot and image has non-numeric user ({effective}), "
                "cannot verify user is non-root",
            )
        container_mounts = []
        for m in c.get("volumeMounts") or []:
            kind, source, extra = mounts[m["name"]]
            if m.get("subPath") and "files" in extra:
                # a Secret/ConfigMap file by subPath: a read-only bind mount of that file of the volume, as a
                # kubelet does (copying it in fails under a read-only root filesystem)
                if not _archive_has_file(extra["files"], m["subPath"]):
                    raise PodConfigError("CreateContainerConfigError", f"subPath {m['subPath']} not found")
                host_dir = self.client.volumes.get(source).attrs["Mountpoint"]
                container_mounts.append(
                    Mount(m["mountPath"], f"{host_dir}/{m['subPath']}", type="bind", read_only=True)
                )
                continue
            if m.get("subPath") or m.get("subPathExpr"):
                raise PodConfigError(
                    "CreateContainerConfigError",
                    "subPath is supported by the fake kubelet only for Secret/ConfigMap files",
                )
            read_only = bool(m.get("readOnly")) or extra.get("read_only", False)
            if kind == "tmpfs":
                container_mounts.append(
                    Mount(m["mountPath"], None, type="tmpfs", tmpfs_size=extra.get("size"), tmpfs_mode=0o1777)
                )
            else:
                container_mounts.append(
                    Mount(m["mountPath"], source, type="volume", read_only=read_only, no_copy=True)
                )
        if "serviceaccount" in mounts and not any(
            m["mountPath"] == SERVICE_ACCOUNT_DIR for m in c.get("volumeMounts") or []
        ):
            container_mounts.append(
                Mount(
                    SERVICE_ACCOUNT_DIR,
                    mounts["serviceaccount"][1],
                    type="volume",
                    read_only=True,
                    no_copy=True,
                )
            )
        container = self.client.containers.create(
            c["image"],
            name=self._name(pod, f"c-{c['name']}"),
            labels=self._labels(pod),
            environment=self._environment(pod, c),
            working_dir=c.get("workingDir"),
            network_mode=f"container:{pause.id}",
            mounts=container_mounts,
            stdin_open=bool(c.get("stdin")),
            tty=bool(c.get("tty")),
            **command_settings(c),
            **settings,
        )
        return container

    def _lookup(self, kind, namespace, ref, key=None):
        """A Secret's/ConfigMap's data (decoded), or one key of it; None when optional and missing."""
        obj = self.fake.get(kind, namespace, ref["name"])
        optional = bool(ref.get("optional"))
        if obj is None:
            if optional:
                return None
            raise PodConfigError("CreateContainerConfigError", f'{kind[:-1]} "{ref["name"]}" not found')
        data = (
            {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            if kind == "secrets"
            else {
                **{k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()},
                **{k: v.encode() for k, v in (obj.get("data") or {}).items()},
            }
        )
        if kind == "secrets":
            data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        if key is None:
            return data
        if key not in data:
            if optional:
                return None
            raise PodConfigError(
                "CreateContainerConfigError", f"couldn't find key {key} in {kind[:-1]} {ref['name']}"
            )
        return data[key]

    def _environment(self, pod, c) -> dict:
        namespace = pod["metadata"]["namespace"]
        # what a kubelet gives every container: the API server's address (here the TLS forwarder)
        env: dict[str, str] = {
            "KUBERNETES_SERVICE_HOST": self.gateway,
            "KUBERNETES_SERVICE_PORT": str(self.api.port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api.port),
        }
        for source in c.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for kind, field in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if field in source:
                    data = self._lookup(kind, namespace, source[field]) or {}
                    env.update({prefix + k: v.decode() for k, v in data.items()})
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": namespace,
            "metadata.uid": pod["metadata"]["uid"],
            "spec.nodeName": self.node,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": self._pod_ips.get(pod["metadata"]["uid"], ""),
            "status.hostIP": NODE_IP,
        }
        for item in c.get("env") or []:
            source = item.get("valueFrom")
            if source is None:
                env[item["name"]] = str(item.get("value", ""))
                continue
            value = None
            if "secretKeyRef" in source:
                value = self._lookup(
                    "secrets", namespace, source["secretKeyRef"], source["secretKeyRef"]["key"]
                )
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = self._lookup("configmaps", namespace, ref, ref["key"])
            elif "fieldRef" in source and source["fieldRef"]["fieldPath"] in fields:
                value = fields[source["fieldRef"]["fieldPath"]].encode()
            else:
                raise PodConfigError(
                    "CreateContainerConfigError", f"env {item['name']}: unsupported valueFrom"
                )
            if value is not None:
                env[item["name"]] = value.decode()
        return env

    # ---- volumes ----------------------------------------------------------------------------------------------

    def _helper(self, pod, image, volume_name, script, files=None):
        """Run ``script`` as root in a short-lived container of ``image`` with the volume at /v (after
        copying ``files``, a tar archive, into it)."""
        helper = self.client.containers.create(
            image,
            entrypoint=["sh", "-c", script],
            command=[],
            name=self._name(pod, f"h-{uuid.uuid4().hex[:6]}"),
            labels=self._labels(pod),
            user="0:0",
            network_mode="none",
            mounts=[Mount("/v", volume_name, type="volume", no_copy=True)],
        )
        try:
            if files is not None:
                helper.put_archive("/v", files)
            helper.start()
            result = helper.wait(timeout=60)
            if result["StatusCode"] != 0:
                logs = helper.logs().decode(errors="replace")
                raise docker.errors.DockerException(f"volume helper for {volume_name} failed: {logs}")
        finally:
            helper.remove(
                force=True, v=True
            )  # an image VOLUME (the hub image: /data) leaves no anonymous volume

    def _prepare_volumes(self, pod, image) -> dict:
        """Create the pod's volumes (helpers run ``image``); returns {volume name: (kind, docker volume, extra)}."""
        spec = pod["spec"]
        namespace = pod["metadata"]["namespace"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        policy = (spec.get("securityContext") or {}).get("fsGroupChangePolicy") or "Always"
        mounts = {}
        for v in spec.get("volumes") or []:
            name = v["name"]
            if "emptyDir" in v and (v["emptyDir"] or {}).get("medium") == "Memory":
                limit = (v["emptyDir"] or {}).get("sizeLimit")
                mounts[name] = ("tmpfs", None, {"size": parse_quantity(limit) if limit else None})
                continue
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]
                volume = self._pvc_volume(pod, namespace, claim["claimName"], image)
                if fs_group is not None:
                    self._apply_fs_group(pod, image, volume, fs_group, policy)
                mounts[name] = ("volume", volume, {"read_only": bool(claim.get("readOnly"))})
                continue
            volume = self.client.volumes.create(self._name(pod, f"v-{name}"), labels=self._labels(pod))
            if "emptyDir" in v:
                self._helper(pod, image, volume.name, "chmod 0777 /v")
                if fs_group is not None:
                    self._apply_fs_group(pod, image, volume.name, fs_group, "Always")
                mounts[name] = ("volume", volume.name, {})
            elif "secret" in v or "configMap" in v:
                kind, source = ("secrets", v["secret"]) if "secret" in v else ("configmaps", v["configMap"])
                ref = {
                    "name": source.get("secretName") or source.get("name"),
                    "optional": source.get("optional"),
                }
                data = self._lookup(kind, namespace, ref) or {}
                archive = self._files_archive(data, source, fs_group)
                self._helper(pod, image, volume.name, "chmod 0755 /v", files=archive)
                mounts[name] = ("volume", volume.name, {"read_only": True, "files": archive})
            else:
                kinds = ", ".join(k for k in v if k != "name")
                self.fake.record_event(
                    pod,
                    "FailedMount",
                    f"fake kubelet: volume {name} ({kinds}) not supported: mounted empty",
                    "Warning",
                )
                mounts[name] = ("volume", volume.name, {})
        if spec.get("automountServiceAccountToken") is not False:
            volume = self.client.volumes.create(self._name(pod, "v-sa"), labels=self._labels(pod))
            files = {
                "token": f"fake-token-{spec.get('serviceAccountName') or 'default'}".encode(),
                "ca.crt": self.api.ca_pem,
                "namespace": namespace.encode(),
            }
            archive = self._files_archive(files, {"defaultMode": 0o644}, None)
            self._helper(pod, image, volume.name, "chmod 0755 /v", files=archive)
            mounts["serviceaccount"] = ("volume", volume.name, {"read_only": True})
        return mounts

    def _pvc_volume(self, pod, namespace, claim, image) -> str:
        """The claim's Docker volume; a new one starts root-owned 0755 like a freshly formatted CSI disk."""
        name = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"fk{self.id}-pvc-{namespace}-{claim}")
        with self._pvc_lock:
            try:
                self.client.volumes.get(name)
                return name
            except docker.errors.NotFound:
                pass
            if self.fake.get("persistentvolumeclaims", namespace, claim) is None:
                raise PodConfigError(
                    "CreateContainerConfigError", f'persistentvolumeclaim "{claim}" not found'
                )
            self.client.volumes.create(name, labels={LABEL: self.label})
            self._helper(pod, image, name, "chown 0:0 /v && chmod 0755 /v")
        return name

    def _apply_fs_group(self, pod, image, volume, gid, policy):
        """What the kubelet does with fsGroup: group ownership, g+rw(x), setgid on directories."""
        script = f"chgrp -R {int(gid)} /v && chmod -R g+rwX /v && find /v -type d -exec chmod g+s {{}} +"
        if policy == "OnRootMismatch":
            script = f'[ "$(stat -c %g:%A /v)" = "{int(gid)}:drwxrwsr-x" ] || {{ {script}; }}'
        self._helper(pod, image, volume, script)

    @staticmethod
    def _files_archive(data: dict, source: dict, fs_group) -> bytes:
        """A tar of a Secret's/ConfigMap's files as the kubelet lays them out (items, modes)."""
        default_mode = source.get("defaultMode", 0o644)
        items = source.get("items")
        if items:
            files = [
                (i["path"], data[i["key"]], i.get("mode", default_mode)) for i in items if i["key"] in data
            ]
            missing = [i["key"] for i in items if i["key"] not in data]
            if missing and not source.get("optional"):
                raise PodConfigError("CreateContainerConfigError", f"keys not found: {', '.join(missing)}")
        else:
            files = [(k, value, default_mode) for k, value in data.items()]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            made = set()
            for path, content, mode in files:
                parts = path.split("/")
                for depth in range(1, len(parts)):
                    directory = "/".join(parts[:depth])
                    if directory not in made:
                        info = tarfile.TarInfo(directory)
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        info.gid = fs_group or 0
                        tar.addfile(info)
                        made.add(directory)
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(content), mode | (0o040 if fs_group is not None else 0)
                info.gid = fs_group or 0
                tar.addfile(info, io.BytesIO(content))
        return buffer.getvalue()
