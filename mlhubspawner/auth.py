"""NativeAuthenticator as ML Hub ships it: sign-up plus admin authorization, safe from the first start.

- The admin accounts (``Authenticator.admin_users``) are never signed up: they are made at hub start with
  ``admin_password`` (``MLHUB_ADMIN_PASSWORD``), else with a password generated once, kept in
  ``admin_password_file`` (mode 0600) and logged once. Signing up an admin name is refused.
- Lockout after failed logins, a minimum password length and the common-password check are on by default.
  Failures count per (username, client address), so nobody can lock another person out; the client address
  comes from the connection, or from the proxy's own X-Forwarded-For entry (``login_source``).
- ``username_pattern`` refuses whitespace, control and invisible formatting characters, commas and slashes.
- ``allowed_users_file`` (``DYNAMIC_WHITELIST_ENABLED``): only the users it lists, the configured
  ``allowed_users`` and the admins may log in, checked in ``check_allowed`` at each login (allowlist.py).

jupyterhub-nativeauthenticator 1.3.0 (its latest release) times logins with ``self.statsd``,
which JupyterHub 6 removed from its handlers: every login POST ends in a 500. Our subclass swaps
in a login handler that has a no-op ``statsd``; everything else is NativeAuthenticator's own.
"""

import ipaddress
import re
import secrets
import time
from collections import OrderedDict
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator as _NativeAuthenticator
from nativeauthenticator import handlers as _native_handlers
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Bool, Integer, List, TraitError, Unicode, default, validate

from .allowlist import AllowListError, AllowListFile
from .files import write_atomic
from .settings import MIN_ADMIN_PASSWORD_LENGTH

# 1-128 characters (NativeAuthenticator's column), none of: whitespace, C0/C1 controls, commas, slashes,
# zero-width and bidirectional formatting characters. \Z, not $: $ also matches before a final newline.
USERNAME_PATTERN = (
    r"^[^\s\x00-\x1f\x7f-\x9f,/\\\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]{1,128}\Z"
)
USERNAME_RULES = (
    "A username has 1 to 128 characters and no spaces, line breaks, control or invisible characters, "
    "commas or slashes."
)
GENERATED_MARKER = "generated admin password:"
# where DYNAMIC_WHITELIST_ENABLED=true reads the allow list (the original's path)
ALLOW_LIST_FILE = "/resources/users/dynamic_whitelist.txt"
LOOPBACK = ["127.0.0.0/8", "::1/128"]


class AdminPasswordError(ValueError):
    """The configured or stored admin password cannot be used; the hub does not start."""


class AllowListConfigError(ValueError):
    """``allowed_users_file`` set together with ``allow_all``; the hub does not start."""


def generate_password():
    """A new random admin password: 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


def hash_password(password):
    """NativeAuthenticator's stored form of a password (bcrypt, salt included)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt())


def _ip(text):
    """``text`` as an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return (address.ipv4_mapped or address) if address.version == 6 else address


def login_source(peer, forwarded_for, trusted_proxies):
    """The client address a login is counted against, as text.

    ``peer`` is the connection's address. When it is in one of ``trusted_proxies`` (networks), the client
    is the last ``X-Forwarded-For`` entry: the one that proxy added (CHP appends it, nginx sets it); earlier
    entries and ``X-Real-IP`` come from the client and are ignored. Otherwise the peer is the client.
    IPv6 clients count per /64, the block one host usually holds.
    """
    address = _ip(peer)
    if address is None:
        return peer or "unknown"
    if any(address in network for network in trusted_proxies):
        address = _ip(forwarded_for.rsplit(",", 1)[-1]) or address
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


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
    refusal = None  # the message of a 403 the authenticator raised (check_allowed: the allow list)

    async def login_user(self, data=None):
        try:
            return await super().login_user(data)
        except web.HTTPError as e:
            if e.status_code != 403:
                raise
            self.refusal = e.log_message
            return None

    def _render(self, login_error=None, username=None):
        auth = self.authenticator
        if self.refusal:
            self.set_status(403)
            login_error = self.refusal
        elif login_error and username and auth.is_locked_out(username, auth.request_source(self.request)):
            minutes = max(1, round(self.authenticator.seconds_before_next_try / 60))
            login_error = f"Too many failed logins for {username}: try again in {minutes} minutes."
        return super()._render(login_error=login_error, username=username)


class SignUpHandler(_native_handlers.SignUpHandler):
    """NativeAuthenticator's sign-up, answering admin names and invalid names with the reason."""

    async def post(self):
        if not self.authenticator.enable_signup:
            return await super().post()
        username = self.get_body_argument("username", "", strip=False)
        status, message = self.authenticator.signup_refusal(username)
        if status is None:
            return await super().post()
        self.log.warning("Sign-up refused for %r: %s", username, message)
        html = await self.render_template(
            "signup.html",
            ask_email=self.authenticator.ask_email_on_signup,
            result_message=message,
            alert="alert-danger",
            two_factor_auth=self.authenticator.allow_2fa,
            recaptcha_key=self.authenticator.recaptcha_key,
            tos=self.authenticator.tos,
        )
        self.set_status(status)
        self.finish(html)


class NativeAuthenticator(_NativeAuthenticator):
    """NativeAuthenticator with admin accounts made at start, closed admin sign-up and safe defaults."""

    admin_password = Unicode(
        "",
        config=True,
        help="""The admins' password (ML Hub sets it from MLHUB_ADMIN_PASSWORD).

        When set, every account in ``admin_users`` gets this password at each hub start (created and
        authorized when missing): set it to recover a lost admin password, unset it to let admins keep
        the password they change to. When empty, missing admin accounts get the password in
        ``admin_password_file`` (generated once).
        """,
    )
    admin_password_file = Unicode(
        "",
        config=True,
        help="""Where the generated admin password is kept (mode 0600), e.g. ``/data/admin-password``.

        Written once, at the first start without ``admin_password``, and logged once then. It is not
        updated when an admin changes their password. Empty: no password is generated and admin
        accounts are only made from ``admin_password``.
        """,
    )
    # NativeAuthenticator tags its defaults but its traits default to off; ML Hub's are on
    check_common_password = Bool(
        True, config=True, help="Refuse the 10,000 most common passwords at sign-up and password change."
    )
    minimum_password_length = Integer(
        MIN_ADMIN_PASSWORD_LENGTH,
        config=True,
        help="Shortest password accepted at sign-up and password change.",
    )
    allowed_failed_logins = Integer(
        5,
        config=True,
        help="""Failed logins in a row after which a username is locked for ``seconds_before_next_try``.

        0 disables the lockout. Counted per (username, client address), so a lock holds only the address
        that failed: nobody can lock another person out. A failure older than ``seconds_before_next_try``
        is forgotten. Kept in the hub's memory (a hub restart clears it).
        """,
    )
    seconds_before_next_try = Integer(
        600, config=True, help="How long a username stays locked for an address after too many failed logins."
    )
    failed_login_memory = Integer(
        10000,
        config=True,
        help="""Most (username, client address) pairs whose failed logins are remembered.

        Bounds the hub's memory against many usernames or addresses. When full, failures older than
        ``seconds_before_next_try`` go first, then the oldest.
        """,
    )
    trusted_proxies = List(
        Unicode(),
        LOOPBACK,
        config=True,
        help="""Networks (e.g. ``10.0.0.0/8``) of the proxies in front of the hub.

        A login arriving from one of them counts against the last ``X-Forwarded-For`` entry (the client as
        that proxy saw it); from anywhere else, against the connection's own address, headers ignored.
        Default: loopback, where configurable-http-proxy runs beside the hub.
        """,
    )

    allowed_users_file = Unicode(
        "",
        config=True,
        help="""A file of the users who may log in, one name a line (``DYNAMIC_WHITELIST_ENABLED=true`` sets
        ``/resources/users/dynamic_whitelist.txt``); empty: no such file, NativeAuthenticator's authorization
        alone decides.

        Read again at the next login after every change, so adding or removing a name needs no restart. Blank
        lines and ``#`` comments are skipped; names are compared as the authenticator normalizes usernames
        (lower case), literally (``*`` is no wildcard). The admins (``admin_users`` and users made admin in
        JupyterHub) and ``allowed_users`` may always log in. A missing or unreadable file is logged as an
        error and lets only them in. Sign-ups still need an administrator's authorization: a user needs both.
        Symbolic links are followed (a Kubernetes ConfigMap). Needs ``allow_all = False``.
        """,
    ).tag(allow_config=True)

    @default("allow_existing_users")
    def _default_allow_existing_users(self):
        # with the file, a name removed from it must keep its user out although the user exists
        return False if self.allowed_users_file else super()._allow_existing_users_default()

    @validate("trusted_proxies")
    def _validate_trusted_proxies(self, proposal):
        for value in proposal.value:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as e:
                raise TraitError(
                    f"NativeAuthenticator.trusted_proxies: {value!r} is not a network ({e})"
                ) from e
        return proposal.value

    @validate("failed_login_memory")
    def _validate_failed_login_memory(self, proposal):
        if proposal.value < 1:
            raise TraitError(
                f"NativeAuthenticator.failed_login_memory must be at least 1, not {proposal.value}"
            )
        return proposal.value

    @default("username_pattern")
    def _default_username_pattern(self):
        return USERNAME_PATTERN

    @default("username_regex")
    def _default_username_regex(self):
        # JupyterHub compiles username_pattern only when it is set (observe), not for a default
        return re.compile(self.username_pattern) if self.username_pattern else None

    def __init__(self, add_new_table=True, *args, **kwargs):
        super().__init__(add_new_table, *args, **kwargs)
        # (username, client address) -> {"count", "time" (monotonic)}, least recently failed first
        self.login_attempts = OrderedDict()
        self.allow_list = None
        if self.allowed_users_file:
            self._start_allow_list()
        if add_new_table:
            self.ensure_admin_accounts()

    # ---- the allow-list file ----------------------------------------------------------------

    def _start_allow_list(self):
        if self.allow_all:
            raise AllowListConfigError(
                f"NativeAuthenticator.allowed_users_file ({self.allowed_users_file}) is set, but "
                "Authenticator.allow_all = True lets every user in without reading it: set "
                "c.NativeAuthenticator.allow_all = False (DYNAMIC_WHITELIST_ENABLED=true does)"
            )
        self.allow_list = AllowListFile(
            self.allowed_users_file, self.normalize_username, self.validate_username, self.log
        )
        try:
            self.allow_list.load()
        except AllowListError as e:
            self.log.error("Allow list unreadable (%s): only admins can log in until it is fixed", e)

    def _is_admin_name(self, username):
        if username in self._admin_names():
            return True
        from jupyterhub import orm  # users made admin in JupyterHub (its admin page or REST API)

        user = orm.User.find(self.db, username)
        return bool(user is not None and user.admin)

    def check_allowed(self, username, authentication=None):
        """JupyterHub's check after a successful password check; with ``allowed_users_file``, the file too.

        A refusal raises a 403 whose message the login page shows.
        """
        if self.allow_list is None:
            return super().check_allowed(username, authentication)
        if self._is_admin_name(username) or super().check_allowed(username, authentication):
            return True
        try:
            names = self.allow_list.load().names
        except AllowListError as e:
            self.log.error(
                "Login of %r refused: allow list unreadable (%s); only admins can log in until it is fixed",
                username,
                e,
            )
            raise web.HTTPError(
                403, "The list of users allowed on this hub cannot be read: ask an administrator."
            ) from None
        if username in names:
            return True
        self.log.warning("Login of %r refused: not in the allow list %s", username, self.allow_list.path)
        raise web.HTTPError(
            403,
            f"{username} is not on the list of users allowed on this hub: ask an administrator to add you.",
        )

    # ---- admin accounts -------------------------------------------------------------------

    def _admin_names(self):
        return sorted({self.normalize_username(name) for name in self.admin_users})

    def _stored_password(self):
        """The generated password from ``admin_password_file``: (password, newly generated)."""
        path = Path(self.admin_password_file)
        if path.exists():
            password = path.read_text().strip()
            if len(password) < MIN_ADMIN_PASSWORD_LENGTH:
                raise AdminPasswordError(
                    f"{path} holds no usable admin password: delete it to generate a new one, "
                    "or set MLHUB_ADMIN_PASSWORD"
                )
            return password, False
        password = generate_password()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, password + "\n", 0o600)
        return password, True

    def ensure_admin_accounts(self):
        """Create (or, with ``admin_password``, reset) the admins' accounts, authorized; at hub start."""
        names = self._admin_names()
        if not names:
            return
        if self.admin_password:
            if not self.is_password_strong(self.admin_password):
                raise AdminPasswordError(
                    "MLHUB_ADMIN_PASSWORD (NativeAuthenticator.admin_password) is too short or too common: "
                    f"use at least {self.minimum_password_length} characters, e.g. a generated one"
                )
            for name in names:
                self._set_admin_account(name, self.admin_password)
            self.log.info("Admin accounts %s have the password from MLHUB_ADMIN_PASSWORD", ", ".join(names))
            return
        missing = [name for name in names if UserInfo.find(self.db, name) is None]
        if not missing:
            return
        if not self.admin_password_file:
            self.log.warning(
                "No account for admin %s and no MLHUB_ADMIN_PASSWORD: nobody can log in as admin",
                ", ".join(missing),
            )
            return
        password, generated = self._stored_password()
        for name in missing:
            self._set_admin_account(name, password)
        if generated:
            self.log.warning(
                "First start: log in as %s with the %s %s (kept in %s, mode 0600; "
                "change it at %schange-password)",
                " or ".join(repr(n) for n in missing),
                GENERATED_MARKER,
                password,
                self.admin_password_file,
                getattr(self.parent, "hub_prefix", "/hub/"),  # under the hub's base_url
            )
        else:
            self.log.info("Admin accounts %s made with the password in %s", missing, self.admin_password_file)

    def _set_admin_account(self, name, password):
        info = UserInfo.find(self.db, name)
        if info is None:
            self.db.add(UserInfo(username=name, password=hash_password(password), is_authorized=True))
        else:
            info.password = hash_password(password)
            info.is_authorized = True
        self.db.commit()
        for key in [key for key in self.login_attempts if key[0] == name]:
            del self.login_attempts[key]

    # ---- sign-up and login ----------------------------------------------------------------

    def signup_refusal(self, username):
        """Why ``username`` may not sign up, as (HTTP status, message); (None, None) when it may."""
        name = self.normalize_username(username)
        if not self.validate_username(name):
            return 400, f"This username cannot be used. {USERNAME_RULES}"
        if name in self._admin_names():
            return 403, (
                f"{name!r} is the hub administrator's account and cannot be signed up. The administrator "
                "logs in with the password set by MLHUB_ADMIN_PASSWORD or printed at the hub's first start."
            )
        return None, None

    def create_user(self, username, password, **kwargs):
        """NativeAuthenticator's sign-up, never for an admin name (those are made at hub start)."""
        if self.normalize_username(username) in self._admin_names():
            return None
        return super().create_user(username, password, **kwargs)

    # ---- lockout, per (username, client address) -------------------------------------------

    def request_source(self, request):
        """The client address of a tornado request, as ``login_source`` reads it."""
        context = getattr(request.connection, "context", None)
        address = getattr(context, "address", None)
        peer = address[0] if isinstance(address, tuple) and address else ""
        networks = [ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies]
        return login_source(peer, request.headers.get("X-Forwarded-For", ""), networks)

    def _expired(self, entry, now):
        return now - entry["time"] > self.seconds_before_next_try

    def add_login_attempt(self, username, source):
        """Remember a failed login; forget expired failures, and the oldest when memory is full."""
        now = time.monotonic()
        attempts = self.login_attempts
        while attempts and self._expired(next(iter(attempts.values())), now):
            attempts.popitem(last=False)
        key = (username, source)
        count = attempts.pop(key, {"count": 0})["count"] + 1
        while len(attempts) >= self.failed_login_memory:
            attempts.popitem(last=False)
        attempts[key] = {"count": count, "time": now}
        if count == self.allowed_failed_logins:
            self.log.warning(
                "Logins as %r from %s locked for %ss after %s failures",
                username,
                source,
                self.seconds_before_next_try,
                count,
            )

    def is_blocked(self, username, source):
        """Whether ``username`` has failed too often from ``source`` lately."""
        entry = self.login_attempts.get((username, source))
        if not entry or self._expired(entry, time.monotonic()):
            return False
        return entry["count"] >= self.allowed_failed_logins

    def successful_login(self, username, source):
        self.login_attempts.pop((username, source), None)

    def is_locked_out(self, username, source):
        """Whether logins of ``username`` from ``source`` are refused for now after too many failures."""
        return bool(self.allowed_failed_logins) and self.is_blocked(self.normalize_username(username), source)

    async def authenticate(self, handler, data):
        """NativeAuthenticator's check (authorized, password, 2FA), locked per (username, client address)."""
        username = self.normalize_username(data.get("username", ""))
        user = self.get_user(username)
        if user is None:
            return None
        source = self.request_source(handler.request) if handler is not None else "unknown"
        if self.is_locked_out(username, source):
            return None
        valid = user.is_authorized and user.is_valid_password(data.get("password", ""))
        if valid and user.has_2fa:
            valid = user.is_valid_token(data.get("2fa"))
        if valid:
            self.successful_login(username, source)
            return username
        if self.allowed_failed_logins:
            self.add_login_attempt(username, source)
        return None

    def get_handlers(self, app):
        replace = {_native_handlers.LoginHandler: LoginHandler, _native_handlers.SignUpHandler: SignUpHandler}
        return [(path, replace.get(handler, handler)) for path, handler in super().get_handlers(app)]
