"""NativeAuthenticator as ML Hub ships it: sign-up plus admin authorization, safe from the first start.

- The admin accounts (``Authenticator.admin_users``) are never signed up: they are made at hub start with
  ``admin_password`` (``MLHUB_ADMIN_PASSWORD``), else with a password generated once, kept in
  ``admin_password_file`` (mode 0600) and logged once. Signing up an admin name is refused.
- Lockout after failed logins, a minimum password length and the common-password check are on by default.
- ``username_pattern`` refuses whitespace, control and invisible formatting characters, commas and slashes.

jupyterhub-nativeauthenticator 1.3.0 (its latest release) times logins with ``self.statsd``,
which JupyterHub 6 removed from its handlers: every login POST ends in a 500. Our subclass swaps
in a login handler that has a no-op ``statsd``; everything else is NativeAuthenticator's own.
"""

import re
import secrets
from pathlib import Path

import bcrypt
from nativeauthenticator import NativeAuthenticator as _NativeAuthenticator
from nativeauthenticator import handlers as _native_handlers
from nativeauthenticator.orm import UserInfo
from traitlets import Bool, Integer, Unicode, default

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


class AdminPasswordError(ValueError):
    """The configured or stored admin password cannot be used; the hub does not start."""


def generate_password():
    """A new random admin password: 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


def hash_password(password):
    """NativeAuthenticator's stored form of a password (bcrypt, salt included)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt())


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

    def _render(self, login_error=None, username=None):
        if login_error and username and self.authenticator.is_locked_out(username):
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
        help="""Failed logins in a row after which an account is locked for ``seconds_before_next_try``.

        0 disables the lockout. Counted per username, in the hub's memory (a hub restart clears it).
        """,
    )
    seconds_before_next_try = Integer(
        600, config=True, help="How long an account stays locked after too many failed logins."
    )

    @default("username_pattern")
    def _default_username_pattern(self):
        return USERNAME_PATTERN

    @default("username_regex")
    def _default_username_regex(self):
        # JupyterHub compiles username_pattern only when it is set (observe), not for a default
        return re.compile(self.username_pattern) if self.username_pattern else None

    def __init__(self, add_new_table=True, *args, **kwargs):
        super().__init__(add_new_table, *args, **kwargs)
        if add_new_table:
            self.ensure_admin_accounts()

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
                "change it at /hub/change-password)",
                " or ".join(repr(n) for n in missing),
                GENERATED_MARKER,
                password,
                self.admin_password_file,
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
        self.login_attempts.pop(name, None)

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

    def is_locked_out(self, username):
        """Whether logins of ``username`` are refused for now after too many failures."""
        return bool(self.allowed_failed_logins) and self.is_blocked(self.normalize_username(username))

    def get_handlers(self, app):
        replace = {_native_handlers.LoginHandler: LoginHandler, _native_handlers.SignUpHandler: SignUpHandler}
        return [(path, replace.get(handler, handler)) for path, handler in super().get_handlers(app)]
