"""NativeAuthenticator as ML Hub ships it: sign-up plus admin authorization, on JupyterHub 5 and 6.

jupyterhub-nativeauthenticator 1.3.0 (its latest release) times logins with ``self.statsd``,
which JupyterHub 6 removed from its handlers: every login POST ends in a 500. Our subclass swaps
in a login handler that has a no-op ``statsd``; everything else is NativeAuthenticator's own.
"""

from nativeauthenticator import NativeAuthenticator as _NativeAuthenticator
from nativeauthenticator import handlers as _native_handlers


class _NoStatsd:
    """Stands in for the statsd client JupyterHub 6 dropped: timers that record nothing."""

    def timer(self, name):
        return self

    def start(self):
        return self

    def stop(self, send=True):
        return None


class LoginHandler(_native_handlers.LoginHandler):
    statsd = _NoStatsd()


class NativeAuthenticator(_NativeAuthenticator):
    """NativeAuthenticator whose login works on JupyterHub 6."""

    def get_handlers(self, app):
        return [
            (path, LoginHandler if handler is _native_handlers.LoginHandler else handler)
            for path, handler in super().get_handlers(app)
        ]
