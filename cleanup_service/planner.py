"""What a cleanup sweep removes, and why (pure).

Inputs are plain values: the hub's complete user list (with each server's expiration), the
resources the backend found under this hub's labels, the time, and the rules. The output is a list
of :class:`Action` — the dry-run report and the executor's work list are the same object, so a
report always equals what a POST then removes.
"""

from dataclasses import asdict, dataclass, field

from mlhubspawner import naming

CONTAINER, NETWORK, VOLUME = "container", "network", "volume"

# action kinds, in the order the executor runs them
DELETE_SERVER = "delete_server"  # stop (and, for named servers, delete) through the Hub API
REMOVE = "remove"  # remove a container, network or volume from the engine
MARK_ORPHANED = "mark_orphaned"  # a volume whose owner is gone: start its grace period
UNMARK = "unmark"  # a volume marked orphaned has an owner again
KEEP = "keep"  # reported only: e.g. a volume still in its grace period

SWEEP_USERS = "users"
SWEEP_EXPIRED = "expired"


@dataclass(frozen=True)
class Resource:
    """One labelled thing on the engine/cluster. ``created`` is epoch seconds."""

    kind: str
    name: str
    labels: dict
    created: float
    running: bool = False
    attached: int = 0  # networks: containers still attached
    orphaned_since: float | None = None  # volumes: when their owner was first seen gone
    id: str = ""  # the engine's/cluster's id of what was listed: removal goes by it, never by name

    @property
    def user(self):
        return self.labels.get(naming.LABEL_USER)

    @property
    def server(self):
        return self.labels.get(naming.LABEL_SERVER_NAME, "")


@dataclass(frozen=True)
class HubServer:
    user: str
    name: str
    expiration: float = 0.0
    active: bool = False


@dataclass(frozen=True)
class Rules:
    hub_name: str
    min_age_seconds: float = 600
    volume_grace_seconds: float = 7 * 86400


@dataclass(frozen=True)
class Action:
    kind: str
    reason: str
    resource: Resource | None = None
    server: HubServer | None = None
    detail: dict = field(default_factory=dict)

    def to_dict(self):
        data = {"action": self.kind, "reason": self.reason}
        if self.resource is not None:
            r = self.resource
            data.update(kind=r.kind, name=r.name, user=r.user, server=r.server)
        if self.server is not None:
            data.update(kind="server", user=self.server.user, server=self.server.name)
            data["expiration"] = self.server.expiration
        data.update(self.detail)
        return data


def _ours(resource, rules):
    if resource.labels.get(naming.LABEL_COMPONENT) == naming.COMPONENT_FRONT:
        return False  # the hub's own front network belongs to no user: never planned
    return resource.labels.get(naming.LABEL_ORIGIN) == rules.hub_name


def _volume_action(volume, why, now, rules):
    """A volume whose workspace is gone: mark it, keep it during the grace period, then remove it."""
    if volume.orphaned_since is None:
        until = now + rules.volume_grace_seconds
        return Action(
            MARK_ORPHANED, f"{why}; kept until the grace period ends", volume, detail={"remove_after": until}
        )
    until = volume.orphaned_since + rules.volume_grace_seconds
    if now >= until:
        return Action(REMOVE, f"{why}; grace period over", volume)
    return Action(KEEP, f"{why}; in its grace period", volume, detail={"remove_after": until})


def plan_deleted_users(users, resources, now, rules):
    """Resources whose user no longer exists, and stopped containers whose server no longer exists.

    ``users`` maps every hub user name to the set of their server names (default server ``""``
    included when it exists); it must be the *complete* list.
    """
    actions = []
    gone_containers = set()
    for r in resources:
        if not _ours(r, rules) or r.kind != CONTAINER or now - r.created < rules.min_age_seconds:
            continue
        if r.user not in users:
            actions.append(Action(REMOVE, "its user no longer exists", r))
            gone_containers.add(r.name)
        elif r.server not in users[r.user] and not r.running:
            actions.append(Action(REMOVE, "stopped, and its server no longer exists", r))
            gone_containers.add(r.name)
    users_with_staying_containers = {
        r.user for r in resources if r.kind == CONTAINER and _ours(r, rules) and r.name not in gone_containers
    }
    for r in resources:
        if not _ours(r, rules) or now - r.created < rules.min_age_seconds:
            continue
        if r.kind == NETWORK and r.user not in users:
            if r.user in users_with_staying_containers:
                actions.append(Action(KEEP, "its user no longer exists, but containers are still on it", r))
            else:
                actions.append(Action(REMOVE, "its user no longer exists", r))
        elif r.kind == VOLUME:
            if r.user not in users:
                actions.append(_volume_action(r, "its user no longer exists", now, rules))
            elif r.server not in users[r.user]:
                actions.append(_volume_action(r, "its server no longer exists", now, rules))
            elif r.orphaned_since is not None:
                actions.append(Action(UNMARK, "its server exists again", r))
    return actions


def plan_expired(servers, resources, now, rules):
    """Servers past their expiration: delete them through the hub, then remove their containers."""
    actions = []
    containers = {(r.user, r.server): r for r in resources if r.kind == CONTAINER and _ours(r, rules)}
    for server in servers:
        if not server.expiration or server.expiration > now:
            continue
        reason = f"expired {int(now - server.expiration)} s ago"
        actions.append(Action(DELETE_SERVER, reason, server=server))
        container = containers.get((server.user, server.name))
        if container is not None:
            actions.append(Action(REMOVE, reason, container))
    return actions


def summarize(actions):
    """Counts by action and resource kind, for the status page and metrics."""
    counts = {}
    for action in actions:
        kind = action.resource.kind if action.resource else "server"
        key = f"{action.kind}:{kind}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def as_report(sweep, actions, now):
    return {
        "sweep": sweep,
        "time": now,
        "actions": [a.to_dict() for a in actions],
        "counts": summarize(actions),
    }


def resource_dict(resource):
    return asdict(resource)
