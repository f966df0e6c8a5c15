"""``python3 -m mlhubspawner.front.health``: the hub image's HEALTHCHECK.

Asks the hub API on loopback for ``<base_url>hub/health``, the base URL being the one the hub runs with
(:data:`mlhubspawner.base_url.PUBLISHED`). Exit status 0 when it answers 200, else 1 with the reason.
"""

import sys
import urllib.error
import urllib.request

from ..base_url import PUBLISHED, hub_path, read_published

HUB_PORT = 8081  # layout.HUB_PORT (not imported: this runs every 30 s, without jinja2)


def health_url(base_url, port=HUB_PORT):
    return f"http://127.0.0.1:{port}{hub_path(base_url, 'health')}"


def main(published=PUBLISHED, timeout=4, port=HUB_PORT):
    url = health_url(read_published(published), port)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as e:
        print(f"mlhub health: {url}: {e}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"mlhub health: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
