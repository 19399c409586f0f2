"""An on-disk cache keyed by content: the data's fingerprint plus the parameters of each step.

Every entry is written to a temporary name and renamed into place, so a crash or a killed job never
leaves half a result, and a restarted server or a reopened dataset recomputes nothing. Entries are private to the
account that wrote them (files 0600 in folders 0700: on a shared machine other local accounts cannot read what a
user computed), and with a size limit the least recently used entries are removed once the entries of a cache
folder outgrow it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

T = TypeVar("T")
KEY_NAME = re.compile(r"[0-9a-f]{24}")  # the folder of one entry: a key of make_key
_USED = ".used"  # an entry's last use: the modification time of this empty file


def current_umask() -> int:
    """This process's umask (read from /proc where it can be, so that no other thread sees it change)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def make_private_dirs(folder: str | os.PathLike) -> None:
    """Create ``folder`` and its missing parents, each readable by this account only (mode 0700)."""
    folder = Path(folder)
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for part in reversed(missing):
        try:
            os.mkdir(part, 0o700)
        except FileExistsError:
            pass


@contextmanager
def file_lock(path: str | os.PathLike, should_stop: Callable[[], bool] = lambda: False,
              waiting: Callable[[], None] = lambda: None, poll_s: float = 0.2):
    """Hold an exclusive lock on the file ``path`` (made private if missing) for the block, across threads and
    processes of this machine (and of machines sharing a file system with working ``flock``). While another holder
    has it, ``waiting()`` is called once and ``should_stop()`` every ``poll_s`` seconds; when that returns True,
    :class:`sccore.errors.Cancelled` is raised without the lock."""
    from .errors import Cancelled

    path = Path(path)
    make_private_dirs(path.parent)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    waiting()
                    announced = True
                if should_stop():
                    raise Cancelled("cancelled while waiting") from None
                time.sleep(poll_s)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "",
                 private: bool = False) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``, so no reader sees half a file.

    ``suffix`` keeps the extension some writers insist on (``np.savez`` adds ``.npz`` otherwise). A ``private``
    file (a user's data: uploads, cached results, job records) is readable by this account only (0600), and the
    folders made for it too (0700); otherwise the file gets the usual permissions of this process's umask.
    """
    path = Path(path)
    if private:
        make_private_dirs(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o600 if private else 0o666 & ~current_umask())  # mkstemp's files are private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _update_with_array(digest, array) -> None:
    if sp.issparse(array):
        array = sp.csr_matrix(array)
        for part in (array.data, array.indices, array.indptr):
            digest.update(np.ascontiguousarray(part).view(np.uint8))
        digest.update(repr(array.shape).encode())
    else:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(array.view(np.uint8) if array.dtype != object else repr(array.tolist()).encode())
        digest.update(repr((array.shape, str(array.dtype))).encode())


def fingerprint(adata) -> str:
    """A hash of what the analysis reads: ``X``, cell and gene names, and every ``obs`` column."""
    digest = hashlib.blake2b(digest_size=16)
    _update_with_array(digest, adata.X)
    digest.update("\x00".join(map(str, adata.obs_names)).encode())
    digest.update("\x00".join(map(str, adata.var_names)).encode())
    for name, column in adata.obs.items():
        digest.update(str(name).encode())
        digest.update(pd.util.hash_pandas_object(column.astype(str), index=False).to_numpy().view(np.uint8))
    return digest.hexdigest()


def make_key(*parts) -> str:
    """A short stable key from strings, dicts and dataclasses (e.g. a parent key and a step's parameters)."""
    normalised = [asdict(part) if is_dataclass(part) else part for part in parts]
    text = json.dumps(normalised, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


class DiskCache:
    """Results stored as ``root/<key>/<name>``, private to this account; ``root=None`` turns caching off.

    With ``max_bytes``, the entries (``root/<key>`` folders) are kept under that size: after each write the least
    recently used are removed (:func:`evict_least_recent`; a removed entry is computed again when next asked for).
    ``computed`` counts the entries computed (not loaded) by this object, for tests and logs.
    """

    def __init__(self, root: str | os.PathLike | None, max_bytes: int | None = None):
        self.root = Path(root) if root is not None else None
        self.max_bytes = max_bytes
        self.computed = 0

    def path(self, key: str, name: str) -> Path | None:
        """Where the entry ``name`` under ``key`` lives, or None without a cache folder."""
        return None if self.root is None else self.root / key / name

    def fetch(self, key: str, name: str, compute: Callable[[], T], save: Callable[[T, str], None],
              load: Callable[[str], T]) -> T:
        """Load the entry if it exists; otherwise compute it, write it atomically and return it."""
        path = self.path(key, name)
        if path is not None and path.exists():
            try:
                value = load(str(path))
            except Exception:  # a damaged entry (disk full, foreign file) or one just evicted: compute it again
                path.unlink(missing_ok=True)
            else:
                _mark_used(path.parent)
                return value
        value = compute()
        self.computed += 1
        if path is not None:
            suffix = "".join(Path(name).suffixes)
            atomic_write(path, lambda tmp: save(value, tmp), suffix=suffix, private=True)
            _mark_used(path.parent)
            if self.max_bytes is not None:
                evict_least_recent(self.root, self.max_bytes, keep=path.parent)
        return value


def _mark_used(entry: Path) -> None:
    """Record that the entry folder ``entry`` was used now."""
    try:
        (entry / _USED).touch(mode=0o600)
    except OSError:  # evicted meanwhile
        pass


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def evict_least_recent(root: str | os.PathLike, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries (``root/<key>`` folders) until the entries of ``root`` take at most
    ``max_bytes``; ``keep`` (the entry just written) stays. Other folders under ``root`` (job records, other
    users' caches) are neither counted nor removed. Returns the removed entries."""
    entries = []
    for folder in Path(root).iterdir():
        if folder.is_dir() and KEY_NAME.fullmatch(folder.name):
            used = folder / _USED
            entries.append((used.stat().st_mtime if used.exists() else folder.stat().st_mtime, folder, _size(folder)))
    total = sum(size for _, _, size in entries)
    removed = []
    for _, folder, size in sorted(entries, key=lambda entry: entry[0]):
        if total <= max_bytes:
            break
        if keep is not None and folder == keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= size
        removed.append(folder)
    return removed
