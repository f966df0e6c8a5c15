"""Thread settings of an ML Hub workspace from its CPU quota (run by start-workspace.sh at every start).

The CPU count is the smallest of: the cgroup CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``, on the process's cgroup and its visible ancestors), the cgroup's cpuset and the CPUs
this process may run on (affinity); rounded down, at least 1 (1.5 CPUs: 1 thread, 0.5: 1).
``MAX_NUM_THREADS``, when given (the hub sets it), is used but never above that count; each library
variable (``OMP_NUM_THREADS``...) that is already set is kept as it is.

Prints ``NAME=value`` lines of the variables to export, nothing else. Runs with ``python3 -I -S`` at every
start: only ``os`` and ``sys`` (already loaded by the interpreter), no pathlib (~20 ms of imports).
"""

import os
import sys

CGROUP_ROOT = "/sys/fs/cgroup"
# the variables set to the thread count unless given (OpenMP, BLAS/LAPACK builds, numexpr, numba)
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "NUMBA_NUM_THREADS",
)


def parse_cpu_max(text):
    """CPUs of a cgroup v2 ``cpu.max`` (``"150000 100000"``: 1.5); None for ``max`` or nonsense."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text, period_text):
    """CPUs of cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None for -1 (no quota) or nonsense."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cpuset(text):
    """How many CPUs a cpuset list names (``"0-3,6"``: 5); None when empty or malformed."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            return None
        if high < low:
            return None
        count += high - low + 1
    return count or None


def cgroup_paths(proc_self_cgroup):
    """Controller -> cgroup path from ``/proc/self/cgroup`` text; cgroup v2's unified entry is ``""``."""
    paths = {}
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _read(*parts):
    try:
        with open(os.path.join(*parts), encoding="ascii") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):
        return None


def _levels(mount, path):
    """The cgroup directories to read under ``mount``: the process's own and its ancestors up to the mount,
    if its path exists there (no cgroup namespace), else just the mount (a container's own cgroup)."""
    mount = os.fspath(mount)
    relative = [p for p in (path or "/").split("/") if p and p != ".."]
    if not (relative and os.path.isdir(os.path.join(mount, *relative))):
        return [mount]
    return [os.path.join(mount, *relative[:n]) for n in range(len(relative), -1, -1)]


def _smallest(values):
    known = [v for v in values if v is not None]
    return min(known) if known else None


def cgroup_cpus(root, proc_self_cgroup):
    """(quota CPUs, cpuset CPUs) of the cgroup tree under ``root``; None where there is no limit or no file."""
    root = os.fspath(root)
    paths = cgroup_paths(proc_self_cgroup)
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):  # cgroup v2 (unified)
        levels = _levels(root, paths.get("", "/"))
        quota = _smallest(parse_cpu_max(_read(d, "cpu.max") or "") for d in levels)
        cpuset = _smallest(parse_cpuset(_read(d, "cpuset.cpus.effective") or "") for d in levels)
        return quota, cpuset
    quota = cpuset = None
    for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        if os.path.isdir(os.path.join(root, name)):
            levels = _levels(os.path.join(root, name), paths.get("cpu", "/"))
            quota = _smallest(
                parse_cfs(_read(d, "cpu.cfs_quota_us") or "", _read(d, "cpu.cfs_period_us") or "")
                for d in levels
            )
            break
    if os.path.isdir(os.path.join(root, "cpuset")):
        levels = _levels(os.path.join(root, "cpuset"), paths.get("cpuset", "/"))
        cpuset = _smallest(parse_cpuset(_read(d, "cpuset.cpus") or "") for d in levels)
    return quota, cpuset


def thread_count(quota=None, cpuset=None, available=None):
    """Threads for a workspace: the smallest known CPU count, rounded down, at least 1."""
    cpus = _smallest([quota, cpuset, available])
    return max(1, int(cpus)) if cpus is not None else 1  # int(): down, for positive numbers


def given_threads(value):
    """A ``MAX_NUM_THREADS`` value as a positive int; None when unset, ``auto`` or not a number."""
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def thread_env(environ, cpus):
    """The variables to export: ``MAX_NUM_THREADS`` (the given one, capped at ``cpus``, else ``cpus``)
    and each library variable not set already (an empty value counts as unset)."""
    given = given_threads(environ.get("MAX_NUM_THREADS", ""))
    threads = min(given, cpus) if given else cpus
    env = {"MAX_NUM_THREADS": str(threads)}
    env.update({name: str(threads) for name in THREAD_VARS if not environ.get(name)})
    return env


def available_cpus():
    """The CPUs this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def main(environ=os.environ, root=CGROUP_ROOT):
    quota, cpuset = cgroup_cpus(root, _read("/proc", "self", "cgroup") or "")
    cpus = thread_count(quota, cpuset, available_cpus())
    for name, value in thread_env(environ, cpus).items():
        sys.stdout.write(f"{name}={value}\n")


if __name__ == "__main__":
    main()
