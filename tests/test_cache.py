import numpy as np
import pytest

from sccore.cache import DiskCache, atomic_write, fingerprint, make_key
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
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's private files


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
