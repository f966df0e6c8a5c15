#!/bin/sh
# Build stage of a flavor (ml/Dockerfile, gpu/Dockerfile): install /tmp/mlhub/requirements.txt from the wheels in
# /tmp/mlhub/wheels into the workspace venv (no index), then write out only what pip changed, for the final stage:
# added or rewritten files under /tmp/mlhub-delta, removed ones listed in /tmp/mlhub-gone. The final image thus
# shares the lower flavor's venv layer instead of repeating it.
set -eu
venv=/opt/mlhub/venv
find "$venv" | sort > /tmp/mlhub/before
touch /tmp/mlhub/marker
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --no-index \
    --find-links /tmp/mlhub/wheels -r /tmp/mlhub/requirements.txt
"$venv/bin/pip" check
find "$venv" | sort > /tmp/mlhub/after
comm -23 /tmp/mlhub/before /tmp/mlhub/after > /tmp/mlhub-gone
mkdir /tmp/mlhub-delta
{ comm -13 /tmp/mlhub/before /tmp/mlhub/after; find "$venv" -newer /tmp/mlhub/marker ! -type d; } \
    | sort -u | while read -r path; do [ -d "$path" ] && [ ! -L "$path" ] || printf '%s\0' "${path#/}"; done \
    | tar -C / -cf - --null --no-recursion -T - | tar -xf - -C /tmp/mlhub-delta
[ -d /tmp/mlhub-delta/opt/mlhub/venv/lib ]
rm -rf /tmp/mlhub  # the wheels: disk space while the next stage builds
