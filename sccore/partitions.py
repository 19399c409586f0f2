"""Encoder embedding of a large ``.h5ad`` as Dask tasks over partitions of consecutive cells, resumable.

Each partition (``partition_cells`` consecutive cells) is one task: it opens the file itself and reads only
its rows (the file is never loaded whole), embeds them with :func:`sccore.encode.embed_cells` (the same gene
matching, library sizes and model medians, so the result equals embedding all the cells at once) and writes
``out_dir/part-<start>-<stop>.npy`` atomically. ``out_dir/manifest.json`` records what the parts are computed
from: the input file's identity, the model's fingerprint and the options. The file's identity is its size,
modification time and shape, not a hash of its bytes (too slow for files of several GB): a copy of the file
with a new modification time counts as another input. A run whose manifest matches skips the finished parts,
so an interrupted run resumes where it stopped; one whose manifest differs is refused. When every part is
there they are assembled through a memory map into ``out_dir/embedding.npy`` (cells x d_model, float32),
then removed. One run at a time per ``out_dir``.

The workers must share the file system with the caller (the input, the model folder and ``out_dir``): true for
a local cluster (:func:`sccore.jobs.connect`) and for a lab's cluster whose nodes mount the same storage. Each
worker process loads the model once (:data:`_MODELS`) and runs torch on ``torch_threads`` threads.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import atomic_write
from .errors import InputError
from .settings import printable

MANIFEST, EMBEDDING = "manifest.json", "embedding.npy"
PARTITION_CELLS = 10_000
# What a rerun must match to reuse the finished parts (the paths may differ: a moved file is the same input).
IDENTITY = ("input_size", "input_mtime_ns", "n_cells", "n_genes", "counts_from", "model_fingerprint", "pooling",
            "layer", "precision", "library_size_key", "gene_id_key", "partition_cells")
_MODELS: dict = {}  # (model folder, fingerprint, device) -> the model this worker process embeds with


@dataclass(frozen=True)
class PartitionedEmbedding:
    """The outcome of :func:`embed_partitions`: where the embedding is and what this call computed."""

    path: Path  # out_dir/embedding.npy, cells x d_model float32
    n_cells: int
    n_partitions: int
    computed: int  # partitions embedded by this call; the others were found finished


def embed_partitions(path: str | os.PathLike, model_folder: str | os.PathLike, out_dir: str | os.PathLike, client,
                     partition_cells: int = PARTITION_CELLS, pooling: str = "cell", layer: int = -1,
                     batch_size: int = 64, library_size_key: str | None = None, gene_id_key: str | None = None,
                     device: str = "auto", precision: str = "auto", torch_threads: int = 1, overwrite: bool = False,
                     progress: Callable[[float, str], None] = lambda f, m: None) -> PartitionedEmbedding:
    """Embed every cell of the ``.h5ad`` at ``path`` (raw counts in ``layers['counts']`` or ``X``, CSR or dense)
    with the model folder ``model_folder``, one Dask task per ``partition_cells`` consecutive cells on
    ``client``'s cluster; returns where ``out_dir/embedding.npy`` is (see the module's docstring).

    A rerun with the same inputs skips the partitions already written; one with other inputs raises
    :class:`InputError` unless ``overwrite`` (which discards them). ``progress(fraction, message)`` is called as
    partitions finish; an exception it raises (or an interrupt) cancels the tasks not yet started.
    """
    from distributed import KilledWorker, as_completed

    from .encode import check_options, embedding_width
    from .models.store import load_model, model_fingerprint
    from .tokenize import match_genes

    if partition_cells < 1:
        raise InputError(f"partition_cells must be at least 1, not {partition_cells}.")
    path, model_folder, out_dir = Path(path).resolve(), Path(model_folder).resolve(), Path(out_dir).resolve()
    counts_from, n_cells, var, sizes = _inspect(path, library_size_key)
    model = load_model(model_folder)
    check_options(model, pooling, layer)
    match_genes(var, model.vocabulary, gene_id_key)  # too few shared genes: refused before any task runs
    fingerprint = model_fingerprint(model_folder)
    stat = path.stat()
    manifest = {"input": str(path), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
                "n_cells": n_cells, "n_genes": len(var), "counts_from": counts_from, "model": str(model_folder),
                "model_fingerprint": fingerprint, "pooling": pooling, "layer": layer, "precision": precision,
                "library_size_key": library_size_key, "gene_id_key": gene_id_key, "partition_cells": partition_cells}
    _prepare(out_dir, manifest, overwrite)
    bounds = [(start, min(start + partition_cells, n_cells)) for start in range(0, n_cells, partition_cells)]
    target = out_dir / EMBEDDING
    if target.is_file():
        progress(1.0, f"{n_cells:,} cells already embedded")
        return PartitionedEmbedding(target, n_cells, len(bounds), 0)
    missing = [(start, stop) for start, stop in bounds if not _part_path(out_dir, start, stop).is_file()]
    options = {"model_folder": str(model_folder), "fingerprint": fingerprint, "pooling": pooling, "layer": layer,
               "batch_size": batch_size, "library_size_key": library_size_key, "gene_id_key": gene_id_key,
               "device": device, "precision": precision, "torch_threads": torch_threads}
    run = secrets.token_hex(3)
    futures = [client.submit(_embed_partition, str(path), counts_from, start, stop,
                             None if sizes is None else sizes[start:stop], str(_part_path(out_dir, start, stop)),
                             key=f"sccore-partition-{start}-{stop}-{run}", pure=False, **options)
               for start, stop in missing]
    done_cells = n_cells - sum(stop - start for start, stop in missing)
    done = len(bounds) - len(missing)
    progress(done_cells / n_cells, f"{done} of {len(bounds)} partitions found finished")
    try:
        for future in as_completed(futures):
            done_cells += future.result()
            done += 1
            progress(done_cells / n_cells, f"embedded {done_cells:,} of {n_cells:,} cells ({done} of {len(bounds)} "
                                           "partitions)")
    except BaseException as error:
        client.cancel(futures)
        if isinstance(error, KilledWorker):
            raise InputError(f"A worker died while embedding cells ({error}); the finished partitions are kept in "
                             f"{out_dir}: run again to resume. If workers run out of memory, give them more, or start "
                             "afresh in a new output folder with fewer cells per partition.") from error
        raise
    _assemble(out_dir, bounds, embedding_width(model, pooling), target)
    progress(1.0, f"wrote {target.name}")
    return PartitionedEmbedding(target, n_cells, len(bounds), len(missing))


def _part_path(out_dir: Path, start: int, stop: int) -> Path:
    return out_dir / f"part-{start}-{stop}.npy"


def _inspect(path: Path, library_size_key: str | None):
    """Check the file without reading its matrix; returns where the counts are, the number of cells, ``var``
    (names made unique as :func:`sccore.io.standardise` does) and the library sizes from ``obs`` (or None)."""
    import h5py

    from .io import HDF5_SIGNATURE, check_h5ad_layout, read_var, row_readable_counts

    name = printable(path.name)
    if not path.is_file():
        raise InputError(f"File not found: {name}. Check the path.")
    with open(path, "rb") as handle:
        if handle.read(8) != HDF5_SIGNATURE:
            raise InputError(f"{name} is not an HDF5 (.h5ad) file. Save your data with AnnData's "
                             "`adata.write_h5ad(...)`.")
    check_h5ad_layout(path, check_memory=False)  # links and shapes; the matrix is never read whole
    try:
        with h5py.File(path, "r", locking=False) as file:
            counts_from = row_readable_counts(file, name)
            node = file[counts_from]
            n_cells = int(node.attrs["shape"][0] if isinstance(node, h5py.Group) else node.shape[0])
            var = read_var(file)
            sizes = _library_sizes(file, library_size_key, name) if library_size_key else None
    except InputError:
        raise
    except Exception as error:  # h5py and anndata raise many types for damaged files
        raise InputError(f"{name} could not be read as AnnData ({type(error).__name__}: {printable(str(error))[:200]})."
                         " The file may be truncated or corrupt: copy it again.") from error
    if n_cells == 0:
        raise InputError(f"{name} holds no cells.")
    return counts_from, n_cells, var, sizes


def _library_sizes(file, key: str, name: str) -> np.ndarray:
    """``obs[key]`` as each cell's library size; :class:`InputError` unless it holds positive finite numbers."""
    import pandas as pd
    from anndata.io import read_elem

    obs = file["obs"]
    columns = [column for column in obs if column != obs.attrs.get("_index", "_index")]
    if key not in columns:
        raise InputError(f"obs of {name} has no column '{key}' for library sizes. Columns: {', '.join(columns[:20])}.")
    values = pd.to_numeric(pd.Series(np.asarray(read_elem(obs[key]))), errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or values.min() <= 0:
        raise InputError(f"obs['{key}'] must hold a positive number for every cell; choose another column.")
    return values


def _prepare(out_dir: Path, manifest: dict, overwrite: bool) -> None:
    """Make ``out_dir`` ready: temporaries of a killed run removed, the manifest written or checked against
    ``manifest`` (with ``overwrite``: earlier parts and embedding discarded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp*"):  # atomic_write's temporaries, left by a killed worker or run
        stale.unlink(missing_ok=True)
    manifest_path = out_dir / MANIFEST
    previous = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    fix = "Choose a new output folder, or overwrite=True (--overwrite) to discard them."
    if overwrite:
        for old in [*out_dir.glob("part-*.npy"), out_dir / EMBEDDING]:
            old.unlink(missing_ok=True)
    elif previous is None and any(out_dir.glob("part-*.npy")):
        raise InputError(f"{out_dir} holds partitions but no {MANIFEST} saying what they were computed from. {fix}")
    elif previous is not None:
        changed = [f"{key} {previous.get(key)!r} then, {manifest[key]!r} now" for key in IDENTITY
                   if previous.get(key) != manifest[key]]
        if changed:
            raise InputError(f"{out_dir} holds an embedding computed from other inputs ({'; '.join(changed)}). {fix}")
        return
    atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1), encoding="utf-8"))


def _assemble(out_dir: Path, bounds: list[tuple[int, int]], dim: int, target: Path) -> None:
    """Copy the parts into ``target`` (through a memory map, so memory holds one part at a time), then remove them."""
    def write(tmp: str) -> None:
        embedding = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(bounds[-1][1], dim))
        for start, stop in bounds:
            embedding[start:stop] = np.load(_part_path(out_dir, start, stop))
        embedding.flush()
        del embedding

    atomic_write(target, write, suffix=".npy")
    for start, stop in bounds:
        _part_path(out_dir, start, stop).unlink()


def _worker_model(folder: str, fingerprint: str, device: str):
    """The model this worker process embeds with, loaded once (only the latest model is kept)."""
    from .device import resolve_device
    from .models.store import load_model

    key = (folder, fingerprint, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(folder, resolve_device(device))
    return _MODELS[key]


def _embed_partition(path: str, counts_from: str, start: int, stop: int, sizes: np.ndarray | None, target: str, *,
                     model_folder: str, fingerprint: str, pooling: str, layer: int, batch_size: int,
                     library_size_key: str | None, gene_id_key: str | None, device: str, precision: str,
                     torch_threads: int) -> int:
    """One Dask task: embed cells ``start:stop`` of the file and write them to ``target`` atomically; returns the
    number of cells."""
    import anndata as ad
    import h5py
    import pandas as pd
    import torch

    from .encode import embed_cells
    from .io import classify_matrix, read_rows, read_var

    torch.set_num_threads(torch_threads)
    model = _worker_model(model_folder, fingerprint, device)
    with h5py.File(path, "r", locking=False) as file:  # no lock: read-only, and locks fail on some cluster file systems
        counts = read_rows(file[counts_from], start, stop)
        var = read_var(file)
    kind = classify_matrix(counts)
    if kind != "counts":
        raise InputError(f"Cells {start:,} to {stop:,} of {printable(Path(path).name)}: {counts_from} holds {kind} "
                         "values, not raw counts. Write the raw integer counts into X (or layers['counts']).")
    obs = pd.DataFrame({library_size_key: sizes}) if library_size_key else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AnnData turning the default index into strings
        adata = ad.AnnData(X=counts, obs=obs, var=var)
    embedding = embed_cells(adata, model, pooling, layer, batch_size, library_size_key, gene_id_key, precision)
    atomic_write(target, lambda tmp: np.save(tmp, embedding), suffix=".npy")
    return stop - start
