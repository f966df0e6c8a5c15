"""A small client of the JupyterHub REST API: the complete user list, and deleting servers."""

import asyncio
import json
import time
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

PAGINATION = "application/jupyterhub-pagination+json"


class HubError(RuntimeError):
    """The hub did not answer as expected."""


class IncompleteListing(HubError):
    """The user list could not be read completely: a sweep must not act on it."""


class HubClient:
    """Talks to ``api_url`` with the service's token; ``calls`` counts requests (for benchmarks)."""

    def __init__(self, api_url, token, concurrency=8, timeout=60, page_size=200):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.page_size = page_size
        self.semaphore = asyncio.Semaphore(concurrency)
        self.http = AsyncHTTPClient()
        self.calls = 0

    async def request(self, method, path, body=None, params=None, accept="application/json"):
        url = f"{self.api_url}/{path.lstrip('/')}"
        if params:
            url += "?" + urlencode(params)
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.token}", "Accept": accept},
            body=json.dumps(body) if body is not None else (b"" if method in ("POST", "PATCH") else None),
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
        )
        async with self.semaphore:
            self.calls += 1
            try:
                response = await self.http.fetch(request, raise_error=False)
            except (TimeoutError, OSError) as e:
                raise HubError(f"{method} {path}: {e}") from e
        if response.code >= 400 or response.code == 599:
            raise HubError(f"{method} {path}: HTTP {response.code} {(response.body or b'')[:200]!r}")
        return json.loads(response.body) if response.body else None

    async def list_users(self):
        """Every user with their servers (stopped ones too), page by page.

        Raises :class:`IncompleteListing` when a page fails or the pages do not add up to the
        total the hub reports, so that a partial list is never mistaken for the whole.
        """
        users, offset, total = [], 0, None
        for _ in range(100000):  # bounded: one page per iteration
            params = {"offset": offset, "limit": self.page_size, "include_stopped_servers": 1}
            try:
                page = await self.request("GET", "users", params=params, accept=PAGINATION)
            except HubError as e:
                raise IncompleteListing(f"listing users failed at offset {offset}: {e}") from e
            if not isinstance(page, dict) or "items" not in page:
                raise IncompleteListing("the hub did not answer with a paginated user list")
            info = page.get("_pagination") or {}
            total = info.get("total", total)
            users.extend(page["items"])
            following = info.get("next")
            if not following or not page["items"]:
                break
            offset = following["offset"]
        if total is None or len(users) != total or len({u["name"] for u in users}) != total:
            raise IncompleteListing(f"read {len(users)} users, but the hub reports {total}")
        return users

    async def delete_server(self, user, server, wait=60):
        """Stop a server and, if named, delete it; waits until the hub has done so."""
        path = f"users/{quote(user, safe='')}/" + (
            f"servers/{quote(server, safe='')}" if server else "server"
        )
        await self.request("DELETE", path, body={"remove": True} if server else None)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            model = await self.request("GET", f"users/{quote(user, safe='')}")
            current = (model.get("servers") or {}).get(server)
            if current is None or not (current.get("ready") or current.get("pending")):
                return
            await asyncio.sleep(0.5)
        raise HubError(f"server {user}/{server} did not stop within {wait}s")
