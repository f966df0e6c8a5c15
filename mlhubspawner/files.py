"""Writing files that others read while we write (config, keys, tokens): atomically, with their mode."""

import grp
import os
from pathlib import Path


def write_atomic(path, data, mode=0o644, group=None):
    """Write ``data`` (str or bytes) to ``path`` via a temp file renamed over it; ``mode`` set before."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # an existing temp file keeps its mode otherwise
        if group:
            os.fchown(f.fileno(), 0, grp.getgrnam(group).gr_gid)
        f.write(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
