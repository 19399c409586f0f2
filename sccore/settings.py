"""Where the app reads and writes, who may log in, and which scheduler runs jobs: one settings file.

Settings come from a TOML file (the path in ``SCCORE_SETTINGS``, else ``sccore.toml`` in the working
directory when there is one; ``sccore.example.toml`` documents every key), and each key can be
overridden by an environment variable: ``SCCORE_<KEY>`` for a top-level key (``SCCORE_DATA_DIRS``,
``:``-separated, ``SCCORE_MODEL_DIR``, ``SCCORE_CACHE_DIR``, ``SCCORE_UPLOAD_DIR``,
``SCCORE_MAX_UPLOAD_MB``, ``SCCORE_CACHE_MAX_GB``, ``SCCORE_MAX_JOBS_PER_USER``,
``SCCORE_MEMORY_BUDGET_MB``, ``SCCORE_SCHEDULER_ADDRESS``) and ``SCCORE_AUTH_<KEY>`` for a
key of the ``[auth]`` table (``SCCORE_AUTH_MODE``, ``SCCORE_AUTH_PASSWORD_FILE``, ``SCCORE_AUTH_OIDC_PROVIDER``,
``SCCORE_AUTH_ALLOWED_USERS``, ``SCCORE_AUTH_ALLOWED_DOMAINS``: comma-separated).
Relative paths in the file are relative to the file's folder; in variables and defaults, to the
working directory.

The defaults suit a laptop: no login, the single user ``local``, data in ``./data`` and models in
``./models``. With login on (a server), the data and model folders are shared and read-only, and each
user's uploads, trained models and the results derived from their uploads are kept in folders of their own.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

SETTINGS_FILE = "sccore.toml"
AUTH_MODES = ("none", "password", "oidc")
LOCAL_USER = "local"
DEFAULT_MEMORY_SHARE = 0.6  # of the machine's memory: the default memory budget (memory_budget_mb = 0)
_HOME_CACHE = Path("~/.cache/sccore")
_TOP_KEYS = ("data_dirs", "model_dir", "cache_dir", "upload_dir", "max_upload_mb", "cache_max_gb",
             "max_jobs_per_user", "memory_budget_mb", "scheduler_address")
_AUTH_KEYS = ("mode", "password_file", "oidc_provider", "allowed_users", "allowed_domains")


@dataclass(frozen=True)
class AuthSettings:
    """Access control: ``mode`` is ``"none"`` (a laptop), ``"password"`` (a password file of
    ``user:salt:hash`` lines, see :mod:`sccore.auth`) or ``"oidc"`` (OpenID Connect through Streamlit's
    ``st.login``, configured in ``.streamlit/secrets.toml``; ``oidc_provider`` names an ``[auth.<provider>]``
    section there, ``""`` for the ``[auth]`` section alone; ``allowed_users`` and ``allowed_domains`` say whose
    verified e-mail addresses may log in, ``"*"`` in the domains for anyone's). ``explicit`` says whether a settings
    file or variable chose the mode (the server profile refuses to start on the default)."""

    mode: str = "none"
    password_file: Path | None = None
    oidc_provider: str = ""
    allowed_users: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    explicit: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Settings:
    """Folders the app offers and writes, the upload limit, the job scheduler and access control.

    ``scheduler_address`` is a Dask scheduler reached over TLS (``tls://host:8786``, see
    :mod:`sccore.dask_security`) for background jobs; ``""`` means a
    local cluster the app starts itself.
    """

    data_dirs: tuple[Path, ...] = (Path("data"),)
    model_dir: Path = Path("models")
    cache_dir: Path = _HOME_CACHE.expanduser() / "results"
    upload_dir: Path = _HOME_CACHE.expanduser() / "uploads"
    max_upload_mb: int = 2000
    cache_max_gb: float = 50.0  # the entries of each cache folder are kept under this size (least recently used go)
    max_jobs_per_user: int = 4  # background jobs a user may have queued or running at once
    memory_budget_mb: int = 0  # memory the app's process may use, every dataset it holds counted; 0: a share of the
    # machine's memory (DEFAULT_MEMORY_SHARE)
    scheduler_address: str = ""
    auth: AuthSettings = field(default_factory=AuthSettings)

    @property
    def login_required(self) -> bool:
        """Whether users log in (a server) rather than the app serving one local user (a laptop)."""
        return self.auth.mode != "none"

    def user_upload_dir(self, user: str) -> Path:
        """The folder of ``user``'s uploads (and, with login on, of the models they train)."""
        return self.upload_dir / user_folder_name(user)

    def user_model_dir(self, user: str) -> Path:
        """Where models trained in the app go: the model folder on a laptop; with login on, a folder of the
        user's own, since the model folder is shared and read-only."""
        return self.user_upload_dir(user) / "models" if self.login_required else self.model_dir

    def results_dir(self, source: str | os.PathLike | None) -> Path:
        """The cache folder for results computed from ``source``: a folder of the user's own for an upload,
        the shared cache folder for the demo (``None``) and the data folders' files."""
        if source is not None:
            path, uploads = Path(source).resolve(), self.upload_dir.resolve()
            if path.is_relative_to(uploads) and path != uploads:
                return self.cache_dir / "users" / path.relative_to(uploads).parts[0]
        return self.cache_dir

    @property
    def cache_max_bytes(self) -> int | None:
        """:attr:`cache_max_gb` in bytes (None: no limit, ``cache_max_gb = 0``)."""
        return int(self.cache_max_gb * 2**30) if self.cache_max_gb > 0 else None

    def check_upload_size(self, name: str, n_bytes: int) -> None:
        """Raise :class:`InputError` when an upload of ``n_bytes`` exceeds ``max_upload_mb``."""
        if n_bytes > self.max_upload_mb * 2**20:
            raise InputError(
                f"{name} is {n_bytes / 2**20:,.1f} MB, over this server's upload limit of {self.max_upload_mb:,} MB. "
                "Ask the administrator to put it in a data folder, or to raise max_upload_mb in the settings file.")


def user_folder_name(user: str) -> str:
    """A folder name for ``user``: letters, digits, ``@._-`` kept; anything else (and a leading dot) replaced,
    with a short hash of the name appended so that two users never share a folder."""
    safe = re.sub(r"[^A-Za-z0-9@._-]", "_", user).lstrip(".")[:64]
    if safe == user and safe:
        return safe
    return f"{safe or 'user'}-{hashlib.blake2b(user.encode('utf-8', 'surrogatepass'), digest_size=4).hexdigest()}"


def safe_file_name(name: str, max_length: int = 100) -> str:
    """The last part of ``name`` reduced to letters, digits, ``._-`` (no folders, no leading dot), at most
    ``max_length`` characters (the end, with the extension, is kept)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).lstrip("._") or "file"
    return base[-max_length:]


def resolve_inside(path: str | os.PathLike, folders: Iterable[str | os.PathLike], fix: str) -> Path:
    """``path`` with ``..`` and symlinks resolved, when it lies inside one of ``folders``; else
    :class:`InputError` with ``fix`` (what the user can do instead)."""
    folders = list(folders)
    resolved = Path(path).expanduser().resolve()
    for folder in folders:
        root = Path(folder).expanduser().resolve()
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    shown = printable(Path(path).name) or printable(str(path))
    offered = ", ".join(printable(str(folder)) for folder in folders) or "none"
    raise InputError(f"'{shown}' lies outside the folders this app may open ({offered}). {fix}")


def printable(text: str) -> str:
    """``text`` with what is not valid Unicode escaped: a file name's undecodable bytes as ``\\xe9``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings: defaults, then the settings file, then ``SCCORE_*`` environment variables."""
    environ = os.environ if environ is None else environ
    path = environ.get("SCCORE_SETTINGS") or (SETTINGS_FILE if Path(SETTINGS_FILE).is_file() else "")
    values, auth = _read_file(Path(path).expanduser().absolute()) if path else ({}, {})
    for key in _TOP_KEYS:
        if f"SCCORE_{key.upper()}" in environ:
            values[key] = environ[f"SCCORE_{key.upper()}"]
    for key in _AUTH_KEYS:
        if f"SCCORE_AUTH_{key.upper()}" in environ:
            auth[key] = environ[f"SCCORE_AUTH_{key.upper()}"]
    return _build(values, auth, origin=str(path) if path else "the environment")


def _read_file(path: Path) -> tuple[dict, dict]:
    """Top-level values and ``[auth]`` values of a settings file, relative paths made relative to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"Settings file {path} cannot be read ({error.strerror}). Fix SCCORE_SETTINGS, or copy "
                         "sccore.example.toml there.") from error
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"Settings file {path} is not valid TOML ({error}). Compare it with sccore.example.toml."
                         ) from error
    auth = data.pop("auth", {})
    unknown = sorted(set(data) - set(_TOP_KEYS)) + sorted(f"auth.{key}" for key in set(auth) - set(_AUTH_KEYS))
    if unknown or not isinstance(auth, dict):
        raise InputError(f"Settings file {path} has unknown keys ({', '.join(unknown) or 'auth'}). "
                         f"Known keys: {', '.join(_TOP_KEYS)} and [auth] {', '.join(_AUTH_KEYS)}.")

    def relative_to_file(value):
        if isinstance(value, str) and value:
            return str(path.parent / Path(value).expanduser())
        return value

    for key in ("model_dir", "cache_dir", "upload_dir"):
        if key in data:
            data[key] = relative_to_file(data[key])
    if isinstance(data.get("data_dirs"), list):
        data["data_dirs"] = [relative_to_file(value) for value in data["data_dirs"]]
    elif "data_dirs" in data:
        data["data_dirs"] = relative_to_file(data["data_dirs"])
    if "password_file" in auth:
        auth["password_file"] = relative_to_file(auth["password_file"])
    return data, auth


def _build(values: dict, auth: dict, origin: str) -> Settings:
    """Check the types and values of the merged settings and make the :class:`Settings`."""
    default = Settings()

    def text(key: str, value) -> str:
        if not isinstance(value, str):
            raise InputError(f"Setting {key} must be text, not {value!r} (from {origin}).")
        return value

    def folder(key: str, value) -> Path:
        if not text(key, value).strip():
            raise InputError(f"Setting {key} is empty (from {origin}); name a folder.")
        return Path(value).expanduser()

    data_dirs = values.get("data_dirs", [str(path) for path in default.data_dirs])
    if isinstance(data_dirs, str):
        data_dirs = data_dirs.split(os.pathsep)
    if not isinstance(data_dirs, list):
        raise InputError(f"Setting data_dirs must be a list of folders (from {origin}).")
    def number(key: str, kind: type, minimum: float, unit: str):
        value = values.get(key, getattr(default, key))
        try:
            parsed = kind(value)
        except (TypeError, ValueError):
            parsed = minimum - 1
        if parsed < minimum:
            raise InputError(f"Setting {key} must be a {'whole ' if kind is int else ''}number of {unit} >= "
                             f"{minimum}, not {value!r} (from {origin}).")
        return parsed

    max_upload_mb = number("max_upload_mb", int, 1, "megabytes")
    mode = text("auth.mode", auth.get("mode", "none")).strip().lower()
    if mode not in AUTH_MODES:
        raise InputError(f"Setting auth.mode must be one of {', '.join(AUTH_MODES)}, not '{mode}' (from {origin}).")
    scheduler_address = text("scheduler_address", values.get("scheduler_address", "")).strip()
    if scheduler_address and not re.fullmatch(r"tls://\S+", scheduler_address):
        raise InputError(f"Setting scheduler_address '{scheduler_address}' is not a Dask scheduler reached over TLS "
                         f"such as tls://host:8786 (from {origin}): a scheduler without TLS runs code from anyone who "
                         "reaches its port (README, 'An existing cluster'); leave it empty for a local cluster.")
    allowed = {key: _names(f"auth.{key}", auth.get(key, []), origin) for key in ("allowed_users", "allowed_domains")}
    if mode == "oidc" and not any(allowed.values()):
        raise InputError(f"auth.mode is 'oidc' but neither auth.allowed_users nor auth.allowed_domains is set (from "
                         f"{origin}), so any account of the provider could log in. List the users' e-mail addresses "
                         "or the lab's domains (allowed_domains = [\"lab.example.org\"]; [\"*\"] admits everyone).")
    password_file = text("auth.password_file", auth.get("password_file", "")).strip()
    if mode == "password" and not password_file:
        raise InputError(f"auth.mode is 'password' but auth.password_file is not set (from {origin}). Name the file "
                         "and add users with `python -m sccore add-user --password-file FILE USER`.")
    return Settings(
        data_dirs=tuple(folder("data_dirs", part) for part in data_dirs if part != ""),
        model_dir=folder("model_dir", values.get("model_dir", str(default.model_dir))),
        cache_dir=folder("cache_dir", values.get("cache_dir", str(default.cache_dir))),
        upload_dir=folder("upload_dir", values.get("upload_dir", str(default.upload_dir))),
        max_upload_mb=max_upload_mb,
        cache_max_gb=number("cache_max_gb", float, 0, "gigabytes (0: no limit)"),
        max_jobs_per_user=number("max_jobs_per_user", int, 1, "jobs"),
        memory_budget_mb=number("memory_budget_mb", int, 0, f"megabytes (0: {DEFAULT_MEMORY_SHARE:.0%} of the memory)"),
        scheduler_address=scheduler_address,
        auth=AuthSettings(mode=mode, password_file=Path(password_file).expanduser() if password_file else None,
                          oidc_provider=text("auth.oidc_provider", auth.get("oidc_provider", "")).strip(),
                          explicit="mode" in auth, **allowed),
    )


def _names(key: str, value, origin: str) -> tuple[str, ...]:
    """A list setting of names: a TOML list of text, or (from a variable) text separated by commas."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise InputError(f"Setting {key} must be a list of text such as [\"a@lab.org\"], not {value!r} "
                         f"(from {origin}).")
    return tuple(name.strip() for name in value if name.strip())
