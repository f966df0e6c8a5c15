"""Entry point of the ml-workspace mimic: Jupyter behind the workspace's own proxy, as ml-workspace runs them.

- the base URL is ``$WORKSPACE_BASE_URL`` (normalised: leading slash, no trailing one); requests outside it are
  redirected into it, as the original's nginx does;
- Jupyter (``jupyterhub-singleuser`` when a hub started the workspace, else ``jupyter server``) listens on
  127.0.0.1:8090 only, whatever ``JUPYTERHUB_SERVICE_URL`` or the command line say; the proxy listens on
  ``$WORKSPACE_PORT`` (8080);
- ``<base>/tools/<name>/...`` is a "tool" the proxy serves itself; unless ``AUTHENTICATE_VIA_JUPYTER`` is
  ``false`` it first asks Jupyter whether the request's cookies/token are logged in (``<base>/api/status``),
  and redirects to ``<base>/`` if not;
- everything else under the base is forwarded to Jupyter (plain HTTP; websockets are not proxied here).
"""

import asyncio
import math
import os
import signal
import subprocess
import sys

from tornado import httpclient, web

JUPYTER = "http://127.0.0.1:8090"
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "server", "date"}


def base_url():
    base = "/" + os.environ.get("WORKSPACE_BASE_URL", "/").strip().strip("/")
    return base.rstrip("/")  # "" for the root


def thread_count():
    value = os.environ.get("MAX_NUM_THREADS", "auto").strip().lower()
    if value.isdigit() and int(value) > 0:
        return value
    return str(max(1, math.ceil(os.cpu_count() or 1)))


def jupyter_command(base):
    hub = bool(os.environ.get("JUPYTERHUB_API_TOKEN"))
    command = ["jupyterhub-singleuser"] if hub else ["jupyter", "server"]
    command += [
        "--ip=127.0.0.1",
        "--port=8090",
        f"--ServerApp.base_url={base}/",
        f"--ServerApp.root_dir={os.environ.get('WORKSPACE_HOME', '/workspace')}",
        "--ServerApp.allow_remote_access=True",
        "--allow-root",
    ]
    shutdown = os.environ.get("SHUTDOWN_INACTIVE_KERNELS", "false").strip().lower()
    if shutdown not in ("", "false"):
        seconds = "172800" if shutdown == "true" else shutdown
        command.append(f"--MappingKernelManager.cull_idle_timeout={seconds}")
    auth = os.environ.get("AUTHENTICATE_VIA_JUPYTER", "false").strip()
    if not hub:  # standalone: a custom value is the Jupyter token
        token = "" if auth.lower() in ("true", "false") else auth
        command.append(f"--IdentityProvider.token={token}")
    return command


class Workspace(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, base, authenticate):
        self.base, self.authenticate = base, authenticate

    def check_xsrf_cookie(self):
        """Jupyter checks its own requests."""

    async def handle(self):
        path = self.request.path
        if path in ("/healthy", "/ping"):
            return self.finish()
        if self.base and not (path == self.base or path.startswith(self.base + "/")):
            return self.redirect(self.base + self.request.uri)
        rest = path[len(self.base) :]
        if rest.startswith("/tools/"):
            if self.authenticate and not await self.logged_in():
                return self.redirect(self.base + "/")
            return self.finish({"tool": rest.split("/")[2], "user": os.environ.get("JUPYTERHUB_USER", "")})
        await self.forward()

    get = head = post = put = patch = delete = options = handle

    async def logged_in(self):
        headers = {
            k: v for k, v in self.request.headers.items() if k.lower() in ("cookie", "authorization", "host")
        }
        request = httpclient.HTTPRequest(
            f"{JUPYTER}{self.base}/api/status", headers=headers, follow_redirects=False, request_timeout=10
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError):
            return False
        return response.code == 200

    async def forward(self):
        method = self.request.method
        request = httpclient.HTTPRequest(
            JUPYTER + self.request.uri,
            method=method,
            headers={k: v for k, v in self.request.headers.get_all() if k.lower() not in HOP_HEADERS},
            body=self.request.body if method in ("POST", "PUT", "PATCH") else None,
            follow_redirects=False,
            allow_nonstandard_methods=True,
            request_timeout=120,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError):
            self.set_status(502)
            return self.finish("Jupyter is not answering (yet)")
        self.clear()
        self.set_status(response.code, response.reason)
        for key, value in response.headers.get_all():
            if key.lower() not in HOP_HEADERS:
                self.add_header(key, value)
        if response.body and method != "HEAD" and response.code not in (204, 304):
            self.write(response.body)
        self.finish()


async def main():
    base = base_url()
    os.environ["WORKSPACE_BASE_URL"] = base or "/"
    threads = thread_count()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[name] = threads
    if sys.argv[1:]:
        print(f"ml-workspace mimic: arguments ignored: {sys.argv[1:]}", file=sys.stderr, flush=True)
    jupyter = subprocess.Popen(jupyter_command(base))
    authenticate = os.environ.get("AUTHENTICATE_VIA_JUPYTER", "false").strip().lower() != "false"
    app = web.Application([(r".*", Workspace, {"base": base, "authenticate": authenticate})])
    app.listen(int(os.environ.get("WORKSPACE_PORT", "8080")), address="0.0.0.0", xheaders=True)
    print(
        f"ml-workspace mimic: serving {base or '/'} (auth via Jupyter: {authenticate})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set() and jupyter.poll() is None:
        try:
            await asyncio.wait_for(stop.wait(), 1)
        except TimeoutError:
            pass
    if jupyter.poll() is None:
        jupyter.terminate()
        jupyter.wait(20)
    return jupyter.returncode or 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
