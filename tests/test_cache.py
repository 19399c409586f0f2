import os
import time

import numpy as np
import pytest

from sccore.cache import DiskCache, atomic_write, evict_least_recent, fingerprint, make_key
from sccore.jobs import JobRecord, JobStore
from sccore.pp import PreprocessParams


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "result.npy"

    def crash(path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda path: np.save(path, np.arange(3)), suffix=".npy")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert target.stat().st_mode & 0o044 == 0o044  # the umask's usual permissions, unlike mkstemp's private files


def test_fingerprint_follows_content(counts_adata):
    same = counts_adata.copy()
    assert fingerprint(same) == fingerprint(counts_adata)
    changed = counts_adata.copy()
    changed.X[0, 0] += 1
    assert fingerprint(changed) != fingerprint(counts_adata)
    relabelled = counts_adata.copy()
    relabelled.obs["cell_type"] = relabelled.obs["cell_type"].cat.rename_categories(lambda c: c + "x")
    assert fingerprint(relabelled) != fingerprint(counts_adata)


def test_make_key_depends_on_parameters():
    assert make_key("a", PreprocessParams()) == make_key("a", PreprocessParams())
    assert make_key("a", PreprocessParams()) != make_key("a", PreprocessParams(min_genes=100))


def test_disk_cache_computes_once_and_recovers_from_damaged_entries(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(4)

    def fetch(cache):
        return cache.fetch("k", "value.npy", compute, lambda v, p: np.save(p, v), np.load)

    first = DiskCache(tmp_path)
    fetch(first)
    second = DiskCache(tmp_path)
    np.testing.assert_array_equal(fetch(second), np.arange(4))
    assert (first.computed, second.computed, len(calls)) == (1, 0, 1)
    (tmp_path / "k" / "value.npy").write_bytes(b"garbage")
    np.testing.assert_array_equal(fetch(DiskCache(tmp_path)), np.arange(4))
    assert len(calls) == 2
    fetch(DiskCache(None))
    assert len(calls) == 3


def modes(root) -> dict[str, int]:
    """The permission bits of every file and folder under ``root`` (itself included)."""
    return {str(path.relative_to(root.parent)): path.stat().st_mode & 0o777 for path in [root, *root.rglob("*")]}


def test_cached_results_job_records_and_private_files_are_readable_by_their_account_only(tmp_path):
    cache = DiskCache(tmp_path / "cache" / "results")
    cache.fetch("a" * 24, "pca.npy", lambda: np.arange(3), lambda value, path: np.save(path, value), np.load)
    JobStore(tmp_path / "cache").write(JobRecord(id="j1", user="alice", kind="umap", params={}))
    atomic_write(tmp_path / "uploads" / "alice" / "mine.h5ad", lambda path: open(path, "w").close(), private=True)
    for root in (tmp_path / "cache", tmp_path / "uploads"):
        found = modes(root)
        assert len(found) >= 3 and all(mode in (0o700, 0o600) for mode in found.values()), found
    old = os.umask(0o027)  # a file that is not private follows the umask of the moment
    try:
        atomic_write(tmp_path / "out.csv", lambda path: open(path, "w").close())
    finally:
        os.umask(old)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o640


def test_the_cache_removes_its_least_recently_used_entries_beyond_its_size(tmp_path):
    def array(size: int):
        return lambda: np.zeros(size, dtype=np.uint8)

    def save(value, path):
        np.save(path, value)

    cache = DiskCache(tmp_path, max_bytes=25_000)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "record.json").write_bytes(b"x" * 50_000)  # not an entry: neither counted nor removed
    keys = [make_key("entry", number) for number in range(3)]
    for key in keys:
        cache.fetch(key, "value.npy", array(10_000), save, np.load)
        time.sleep(0.01)
    assert [(tmp_path / key).exists() for key in keys] == [False, True, True]  # the oldest went
    cache.fetch(keys[1], "value.npy", array(1), save, np.load)  # used again: now the most recent
    time.sleep(0.01)
    cache.fetch(make_key("entry", 3), "value.npy", array(10_000), save, np.load)
    assert [(tmp_path / key).exists() for key in keys] == [False, True, False]
    assert cache.computed == 4 and (tmp_path / "jobs" / "record.json").exists()
    again = cache.fetch(keys[0], "value.npy", array(10_000), save, np.load)  # an evicted entry is computed again
    assert len(again) == 10_000 and cache.computed == 5
    assert evict_least_recent(tmp_path, 0) and not any(path.name in keys for path in tmp_path.iterdir())
