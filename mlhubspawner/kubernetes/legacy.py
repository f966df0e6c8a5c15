"""A stock KubeSpawner deployment's objects, as ML Hub's ``handle_legacy_names`` migration finds them (pure).

KubeSpawner named a user's PVC ``claim-{user_server}`` (KubeSpawner 7, the ``safe`` slug scheme),
``claim-{username}--{servername}`` (before 7, the ``escape`` scheme) or ``claim-{username}-{servername}``
(before 0.12, the server name then carried its own ``-``; z2jh's old ``claim-{username}{servername}`` as
KubeSpawner 7 renders it is looked for too), and the pod ``jupyter-`` likewise; an operator's own ``pvc_name_template``/``pod_name_template`` comes first. A name alone proves nothing:
escaping lets one user name render as another's (``a.b`` escapes to ``a-2eb``, which is also a user
name of its own), so an object is the user's only when KubeSpawner's owner metadata says so.
"""

from kubespawner.slugs import escape_slug

from .. import naming

USERNAME_KEY = "hub.jupyter.org/username"  # KubeSpawner's label (a slug) and annotation (the raw name)
PVC_TEMPLATES = (
    "claim-{user_server}",
    "claim-{username}--{servername}",
    "claim-{username}-{servername}",
    "claim-{username}{servername}",
)
POD_TEMPLATES = (
    "jupyter-{user_server}",
    "jupyter-{username}--{servername}",
    "jupyter-{username}-{servername}",
    "jupyter-{username}{servername}",
)
SLUG_SCHEMES = ("safe", "escape")


def candidate_names(expand, templates, configured=None):
    """The names to look for, first found first: ``expand(template, scheme)`` of the operator's template
    (``configured``, if any) and of KubeSpawner's, in both slug schemes, without repeats."""
    names = []
    for template in ([configured] if configured else []) + list(templates):
        for scheme in SLUG_SCHEMES:
            name = expand(template, scheme)
            if name and name not in names:
                names.append(name)
    return names


def is_users_legacy_object(labels, annotations, username):
    """Whether an object is ``username``'s, made by KubeSpawner (not by ML Hub).

    KubeSpawner ≥ 0.12 annotates the raw user name: it must be ``username`` exactly. Without that
    annotation (older KubeSpawner) the label must be ``username`` escaped, which no other user name
    escapes to. An object with ML Hub's ``mlhub.origin`` label is ML Hub's: its own owner check decides.
    """
    labels, annotations = labels or {}, annotations or {}
    if naming.LABEL_ORIGIN in labels:
        return False
    if USERNAME_KEY in annotations:
        return annotations[USERNAME_KEY] == username
    return labels.get(USERNAME_KEY) == escape_slug(username)
