"""Password login for a shared server: a password file of ``user:salt:hash`` lines, hashed with scrypt.

Each line holds a user name, a random 16-byte salt and the scrypt hash of the password (both in hex;
n = 2**14, r = 8, p = 1, 32 bytes). Add a user or change a password with
``python -m sccore add-user --password-file FILE USER``. The file is read at each login, so users can be
added while the server runs; it is replaced atomically by a file only its owner can read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

from .errors import InputError

USER_NAME = re.compile(r"[A-Za-z0-9@._-]{1,64}")
MIN_PASSWORD_LENGTH = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


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
