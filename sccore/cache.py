"""An on-disk cache keyed by content: the data's fingerprint plus the parameters of each step.

Every entry is written to a temporary name and renamed into place, so a crash or a killed job never
leaves half a result, and a restarted server or a reopened dataset recomputes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

T = TypeVar("T")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``, so no reader sees half a file.

    ``suffix`` keeps the extension some writers insist on (``np.savez`` adds ``.npz`` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; give them the usual permissions
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
    """Results stored as ``root/<key>/<name>``; ``root=None`` turns caching off.

    ``computed`` counts the entries computed (not loaded) by this object, for tests and logs.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None
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
                return load(str(path))
            except Exception:  # a damaged entry (disk full, foreign file): compute it again
                path.unlink(missing_ok=True)
        value = compute()
        self.computed += 1
        if path is not None:
            suffix = "".join(Path(name).suffixes)
            atomic_write(path, lambda tmp: save(value, tmp), suffix=suffix)
        return value
