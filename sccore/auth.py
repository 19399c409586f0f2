"""Login for a shared server: a password file of ``user:salt:hash`` lines hashed with scrypt, a back-off after
failed logins, and which OpenID Connect identities may log in.

Each line holds a user name, a random 16-byte salt and the scrypt hash of the password (both in hex;
n = 2**14, r = 8, p = 1, 32 bytes). Add a user or change a password with
``python -m sccore add-user --password-file FILE USER``. The file is read at each login, so users can be
added while the server runs; it is replaced atomically by a file only its owner can read.

Every failed login is logged (logger ``sccore.auth``) and :class:`LoginThrottle` makes a user name wait longer
after each failure in a row. With OpenID Connect, :func:`oidc_user` admits a verified e-mail address only, and only
when the settings allow it (``auth.allowed_users``, ``auth.allowed_domains``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import InputError

USER_NAME = re.compile(r"[A-Za-z0-9@._-]{1,64}")
MIN_PASSWORD_LENGTH = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
FREE_ATTEMPTS = 3  # failed logins in a row before a user name has to wait
MAX_WAIT_S = 900.0  # the longest wait between two attempts (15 minutes)
log = logging.getLogger("sccore.auth")


def hash_password(password: str, salt: bytes) -> bytes:
    """The scrypt hash of ``password`` with ``salt``."""
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT)


def read_password_file(path: str | os.PathLike) -> dict[str, tuple[bytes, bytes]]:
    """The users in a password file: name -> (salt, hash). Blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Password file {path} not found. Create it with "
                         f"`python -m sccore add-user --password-file {path} USER`.")
    users = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(":")
        try:
            if len(parts) != 3 or not USER_NAME.fullmatch(parts[0]):
                raise ValueError
            users[parts[0]] = (bytes.fromhex(parts[1]), bytes.fromhex(parts[2]))
        except ValueError:
            raise InputError(f"Line {number} of the password file {path} is not 'user:salt:hash'. "
                             "Remove it and add the user again with `python -m sccore add-user`.") from None
    return users


def verify_password(path: str | os.PathLike, user: str, password: str) -> bool:
    """Whether ``password`` is ``user``'s password in the password file (compared in constant time; an
    unknown user costs the same hashing, so timing does not tell which names exist)."""
    salt, expected = read_password_file(path).get(user, (b"\x00" * 16, b""))
    return hmac.compare_digest(hash_password(password, salt), expected)


def add_user(path: str | os.PathLike, user: str, password: str) -> bool:
    """Add ``user`` with ``password`` to the password file (created if missing), or change their password.
    Returns True when the user was already there."""
    if not USER_NAME.fullmatch(user):
        raise InputError(f"User name '{user}' is not allowed: use 1 to 64 letters, digits and @ . _ - characters.")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters.")
    path = Path(path)
    lines = []
    if path.is_file():
        read_password_file(path)  # refuse to rewrite a damaged file
        lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.split(":", 1)[0].strip() != user]
    salt = secrets.token_bytes(16)
    kept.append(f"{user}:{salt.hex()}:{hash_password(password, salt).hex()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # private (0600)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write("\n".join(kept) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(kept) == len(lines)


class LoginThrottle:
    """Failed logins per user name, shared by every session of a server: after :data:`FREE_ATTEMPTS` failures in a
    row, the name must wait 2, 4, 8, ... seconds (at most :data:`MAX_WAIT_S`) after its last failure before it is
    checked again; a successful login clears its count. Times are ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}  # user name -> (failures in a row, time of the last)
        self._lock = threading.Lock()

    def wait_s(self, user: str, now: float) -> float:
        """Seconds ``user`` must still wait before a password is checked (0: check it now)."""
        with self._lock:
            count, last = self._failures.get(user, (0, 0.0))
        if count < FREE_ATTEMPTS:
            return 0.0
        return max(0.0, last + min(MAX_WAIT_S, 2.0 ** (count - FREE_ATTEMPTS + 1)) - now)

    def failed(self, user: str, now: float, origin: str = "") -> int:
        """Record (and log) a failed login of ``user``; returns its failures in a row."""
        with self._lock:
            count = self._failures.get(user, (0, 0.0))[0] + 1
            self._failures[user] = (count, now)
        log.warning("Failed login for user %r (%d in a row)%s", user, count, f" from {origin}" if origin else "")
        return count

    def succeeded(self, user: str) -> None:
        """Forget ``user``'s failures after a successful login."""
        with self._lock:
            self._failures.pop(user, None)


def oidc_user(claims: Mapping, allowed_users: Iterable[str], allowed_domains: Iterable[str]) -> str:
    """The user name (the e-mail address, lower case) of an OpenID Connect identity with ``claims``, when its
    provider verified the address (``email_verified``) and the address is in ``allowed_users`` or its domain in
    ``allowed_domains`` (``"*"``: any domain); else :class:`InputError` saying why (and the refusal is logged)."""
    email = str(claims.get("email") or "").strip().lower()
    verified = claims.get("email_verified")
    if not email or not (verified is True or str(verified).lower() == "true"):
        log.warning("OpenID Connect login refused: no verified e-mail address (sub %r)", claims.get("sub"))
        raise InputError("Your identity provider did not confirm an e-mail address for this account, so this server "
                         "cannot tell who you are. Verify your address with the provider, or ask the administrator.")
    users = {user.strip().lower() for user in allowed_users}
    domains = {domain.strip().lower().lstrip("@") for domain in allowed_domains}
    if email in users or "*" in domains or email.rpartition("@")[2] in domains:
        return email
    log.warning("OpenID Connect login refused: %r is not allowed", email)
    raise InputError(f"{email} may not use this server. Ask the administrator to add you to auth.allowed_users (or "
                     "your domain to auth.allowed_domains) in the settings file.")
