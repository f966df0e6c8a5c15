"""The allow-list file (the original's ``DYNAMIC_WHITELIST_ENABLED``): who may log in, one name a line.

:func:`parse_allow_list` is pure. :class:`AllowListFile` re-reads the file whenever it changed (device,
inode, size or modification time differ, or it was modified in the last seconds, where a same-size
rewrite could share the cached time), so an edit takes effect at the next login. Symbolic links are
followed: Kubernetes mounts a ConfigMap as links it swaps on update.
"""

import os
import time
from dataclasses import dataclass

# a file this large is a mistake (the wrong path), not a list of people
MAX_BYTES = 4 * 1024 * 1024
# a file modified this recently is read again even when it looks unchanged (coarse file system clocks)
RECENT_SECONDS = 2.0


class AllowListError(OSError):
    """The allow-list file cannot be read or decoded: only administrators may log in."""


@dataclass(frozen=True)
class AllowList:
    """The names in an allow-list file, and the lines that were ignored as ``(line number, reason)``."""

    names: frozenset
    ignored: tuple = ()


def parse_allow_list(text, normalize, valid):
    """The names in ``text``, one a line, as ``normalize`` makes them and ``valid`` accepts them.

    Blank lines and lines starting with ``#`` are skipped, as is anything after whitespace and a ``#``
    (``alice  # the PI``). Names are literal: ``*`` or ``.*`` name nobody but a user called that. A line
    with more than one name, or a name ``valid`` refuses, is ignored and reported.
    """
    names = set()
    ignored = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        name, rest = parts[0], parts[1] if len(parts) > 1 else ""
        if rest and not rest.startswith("#"):
            ignored.append((number, "more than one name on the line (one name a line)"))
            continue
        normalized = normalize(name)
        if not valid(normalized):
            ignored.append((number, f"{name!r} is not a valid username"))
            continue
        names.add(normalized)
    return AllowList(frozenset(names), tuple(ignored))


def _key(status):
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class AllowListFile:
    """An allow-list file, read again when it changed; :meth:`load` raises :class:`AllowListError`."""

    def __init__(self, path, normalize, valid, log, clock=time.time):
        self.path = path
        self._normalize = normalize
        self._valid = valid
        self._log = log
        self._clock = clock
        self._key = None
        self._list = None

    def _fresh(self, status):
        recent = self._clock() - status.st_mtime_ns / 1e9 < RECENT_SECONDS
        return self._list is not None and _key(status) == self._key and not recent

    def load(self):
        """The current :class:`AllowList` (from the cache while the file is unchanged)."""
        try:
            if self._fresh(os.stat(self.path)):
                return self._list
            with open(self.path, "rb") as f:
                status = os.fstat(f.fileno())
                if status.st_size > MAX_BYTES:
                    raise AllowListError(f"{self.path}: larger than {MAX_BYTES} bytes")
                data = f.read(MAX_BYTES + 1)
        except AllowListError:
            raise
        except OSError as e:
            raise AllowListError(f"{self.path}: {e.strerror or e}") from e
        if len(data) > MAX_BYTES:
            raise AllowListError(f"{self.path}: larger than {MAX_BYTES} bytes")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise AllowListError(f"{self.path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        allow_list = parse_allow_list(text, self._normalize, self._valid)
        for number, reason in allow_list.ignored:
            self._log.warning("Allow list %s, line %d ignored: %s", self.path, number, reason)
        self._log.info("Allow list %s: %d users may log in", self.path, len(allow_list.names))
        self._key, self._list = _key(status), allow_list
        return allow_list
