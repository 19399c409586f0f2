"""Open datasets: read `.h5ad` files safely, find the raw counts, and load the embedded demo.

Every function here returns an AnnData whose ``X`` holds raw counts (CSR, float32) and whose
``uns['input']`` records where the counts came from and what was assumed, so that the dashboard
and the CLI can say it to the user.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .settings import printable

DEMO_NAME = "Demo: 700 PBMCs (scanpy's pbmc68k_reduced)"
# A matrix is "integer" when every value lies this close to a whole number.
INTEGER_TOLERANCE = 1e-3
# Counts recovered from log-normalised values must round from at most this far.
RECOVERY_TOLERANCE = 0.25
# More values than this in an obs column are too many to colour cells by.
MAX_CATEGORIES = 500
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What a file that is not HDF5 is, from its first bytes.
OTHER_FORMATS = {b"PK\x03\x04": "a ZIP archive (unzip it first)", b"\x1f\x8b": "gzip-compressed (gunzip it first)",
                 b"\x80": "a Python pickle (never loaded here: pickles can run code)",
                 b"%PDF": "a PDF document", b"\x89PNG": "a PNG image"}


def read_h5ad(path: str | os.PathLike) -> ad.AnnData:
    """Read an ``.h5ad`` file fully into memory, turning every failure into an :class:`InputError`.

    Before AnnData reads it, the file's layout is checked (:func:`check_h5ad_layout`), so that a file
    declaring more than the machine can hold, or linking to other files, is refused without reading it.
    """
    path = Path(path)
    name = printable(path.name)
    if not path.is_file():
        raise InputError(f"File not found: {name}. Check the path or pick a file from the data folder.")
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes). Upload the complete .h5ad file again.")
    with open(path, "rb") as handle:
        signature = handle.read(8)
    if signature != HDF5_SIGNATURE:
        kind = next((kind for prefix, kind in OTHER_FORMATS.items() if signature.startswith(prefix)), None)
        raise InputError(
            f"{name} is not an HDF5 (.h5ad) file{f' but {kind}' if kind else ''}. Save your data with AnnData's "
            "`adata.write_h5ad(...)`; CSV, loom, mtx, text and pickle files are not read here."
        )
    check_h5ad_layout(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = ad.read_h5ad(path)
    except UnicodeDecodeError as error:
        raise InputError(f"{name} holds names that are not UTF-8 text (gene or cell names written in another "
                         "encoding). Decode them to text and write the file again with AnnData.") from error
    except MemoryError as error:
        raise InputError(f"{name} does not fit in this machine's memory. Open a subset of its cells.") from error
    except Exception as error:  # h5py and anndata raise many types for damaged files
        raise InputError(
            f"{name} could not be read as AnnData ({type(error).__name__}: {printable(str(error))[:200]}). "
            "The file may be truncated or corrupt: copy or upload it again."
        ) from error
    return adata


READ_COPIES = 3  # memory a dataset takes while it is read and prepared, in multiples of its declared arrays


def machine_memory_bytes() -> int:
    """The memory of this machine, or of its container when that is less."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 16 * 2**30
    try:
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text()))
    except (OSError, ValueError):  # no cgroup limit ("max"), or not Linux
        pass
    return total


def memory_budget_bytes() -> int:
    """The memory this process (a server: every dataset it holds) may use: the settings' ``memory_budget_mb``, by
    default :data:`sccore.settings.DEFAULT_MEMORY_SHARE` of the machine's memory."""
    from .settings import DEFAULT_MEMORY_SHARE, load_settings

    budget_mb = load_settings().memory_budget_mb
    return budget_mb * 2**20 if budget_mb else int(machine_memory_bytes() * DEFAULT_MEMORY_SHARE)


def memory_in_use_bytes() -> int:
    """The memory this process holds now (its resident set: the datasets, analyses and models already open)."""
    import psutil

    return psutil.Process().memory_info().rss


def check_h5ad_layout(path: str | os.PathLike, check_memory: bool = True) -> None:
    """Refuse an HDF5 file that AnnData should not read, without reading its arrays: one that is not
    AnnData, links to other files, holds matrices whose shapes disagree with its cells and genes, or
    (with ``check_memory``, for a file read whole) declares arrays that would not fit in what is left of
    :func:`memory_budget_bytes` (a tiny file can declare terabytes)."""
    import h5py

    name = printable(Path(path).name)
    try:
        with h5py.File(path, "r") as file:
            _check_links(file, name)
            _check_axes(file, name)
            if check_memory:
                _check_memory(file, name)
    except InputError:
        raise
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError... for damaged files
        raise InputError(
            f"{name} could not be read as HDF5 ({type(error).__name__}: {printable(str(error))[:200]}). "
            "The file may be truncated or corrupt: copy or upload it again."
        ) from error


def row_readable_counts(file, name: str) -> str:
    """Where an ``.h5ad`` open in h5py keeps raw counts that can be read a block of cells at a time:
    ``layers/counts`` when it has them, else ``X``, stored by cells (CSR) or dense; refuses a missing or a
    column-major (CSC) matrix, which would be read whole for every block, with the fix."""
    import h5py

    location = "layers/counts" if "layers/counts" in file else "X"
    if location not in file:
        raise InputError(f"{name} holds no matrix in X or layers['counts']. Write the raw counts into X.")
    node = file[location]
    encoding = node.attrs.get("encoding-type", "array")
    if isinstance(node, h5py.Group) and encoding != "csr_matrix":
        stored = "column-major (csc_matrix)" if encoding == "csc_matrix" else str(encoding)
        raise InputError(f"{location} in {name} is stored {stored}, so reading a block of cells reads the whole "
                         "matrix. Write it by cells (CSR): `adata.X = scipy.sparse.csr_matrix(adata.X); "
                         "adata.write_h5ad(...)`.")
    return location


def read_rows(node, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a matrix that :func:`row_readable_counts` located (CSR group or dense dataset)."""
    import h5py
    from anndata.io import sparse_dataset

    return sp.csr_matrix(node[start:stop]) if isinstance(node, h5py.Dataset) else sparse_dataset(node)[start:stop]


def read_var(file) -> pd.DataFrame:
    """The ``var`` table of an ``.h5ad`` open in h5py, gene names made unique (``-1``, ``-2``... appended) as
    :func:`standardise` makes them."""
    from anndata.io import read_elem
    from anndata.utils import make_index_unique

    var = read_elem(file["var"])
    var.index = make_index_unique(var.index.astype(str))
    return var


def _check_links(file, name: str) -> None:
    """Refuse soft and external links, virtual datasets and external storage: AnnData writes none, and they
    can make a file read other files on the server."""
    import h5py

    links = []
    file.visititems_links(lambda key, link: links.append(key) if not isinstance(link, h5py.HardLink) else None)
    linked = []
    file.visititems(lambda key, node: linked.append(key) if isinstance(node, h5py.Dataset) and (
        node.is_virtual or node.external) else None)
    if links or linked:
        raise InputError(f"{name} holds links to other places or files (/{(links + linked)[0]}), which AnnData "
                         "never writes. Write the data again with AnnData's write_h5ad.")


def _axis_length(node) -> int | None:
    """The number of rows an ``obs`` or ``var`` entry declares (a group with an index, or an old-style table)."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return node.shape[0] if node.shape else None
    index = node.attrs.get("_index", "_index")
    index = index.decode() if isinstance(index, bytes) else str(index)
    return node[index].shape[0] if isinstance(node.get(index), h5py.Dataset) else None


def _matrix_shape(node, where: str, name: str) -> tuple[int, ...] | None:
    """The shape a dense or sparse matrix declares, after checking a sparse one's arrays agree with it."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return node.shape
    attrs = node.attrs
    kind = attrs.get("encoding-type", attrs.get("h5sparse_format", ""))
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("csr_matrix", "csc_matrix", "csr", "csc") or not {"data", "indices", "indptr"} <= set(node):
        return None
    shape = tuple(int(n) for n in attrs.get("shape", attrs.get("h5sparse_shape", ())))
    n_pointers = node["indptr"].shape[0] if node["indptr"].shape else 0
    expected = (shape[0] if kind.startswith("csr") else shape[1]) + 1 if len(shape) == 2 else -1
    n_values = node["data"].shape[0] if node["data"].shape else 0
    if len(shape) != 2 or n_pointers != expected or node["indices"].shape != node["data"].shape or (
            n_pointers and int(node["indptr"][-1]) != n_values):
        raise InputError(f"{where} in {name} is a damaged sparse matrix: it declares shape "
                         f"{' x '.join(f'{n:,}' for n in shape) or 'none'} but holds {n_pointers:,} row pointers "
                         f"and {n_values:,} values. Write the data again with AnnData's write_h5ad.")
    return shape


def _check_axes(file, name: str) -> None:
    """Refuse a file without ``obs`` and ``var``, or whose matrices' shapes disagree with them."""
    if "obs" not in file or "var" not in file:
        held = ", ".join(sorted(file.keys())[:6]) or "nothing"
        hint = ("It looks like a 10x Genomics .h5: read it with scanpy.read_10x_h5 and write_h5ad. " if "matrix" in file
                else "It looks like a loom file: read it with anndata.read_loom and write_h5ad. "
                if "row_attrs" in file else "")
        raise InputError(f"{name} is an HDF5 file but not AnnData (it holds {held}, no obs and var). {hint}"
                         "Save your data with AnnData's `adata.write_h5ad(...)`.")
    n_obs, n_vars = _axis_length(file["obs"]), _axis_length(file["var"])
    n_raw_vars = _axis_length(file["raw/var"]) if "raw/var" in file else None
    checks = [("X", n_obs, n_vars), ("raw/X", n_obs, n_raw_vars)]
    checks += [(f"layers/{key}", n_obs, n_vars) for key in (file["layers"] if "layers" in file else [])]
    checks += [(f"obsm/{key}", n_obs, None) for key in (file["obsm"] if "obsm" in file else [])]
    checks += [(f"varm/{key}", n_vars, None) for key in (file["varm"] if "varm" in file else [])]
    for where, rows, columns in checks:
        shape = _matrix_shape(file[where], where, name) if where in file else None
        if shape is None or rows is None:
            continue
        if (shape[0] if shape else None) != rows or (columns is not None and shape[1:2] != (columns,)):
            raise InputError(
                f"{where} in {name} is {' x '.join(f'{n:,}' for n in shape)} but the file lists {rows:,} "
                f"{'genes' if where.startswith('varm') else 'cells'}{f' and {columns:,} genes' if columns else ''}: "
                "the file is inconsistent or damaged. Write the data again with AnnData's write_h5ad.")


def _check_memory(file, name: str) -> None:
    """Refuse a file whose arrays, read and prepared (:data:`READ_COPIES` times their declared size, however well
    they compress on disk), would take this process beyond :func:`memory_budget_bytes`, counting what it holds
    already (:func:`memory_in_use_bytes`)."""
    import h5py

    sizes = {}
    file.visititems(lambda key, node: sizes.__setitem__(key, node.size * node.dtype.itemsize)
                    if isinstance(node, h5py.Dataset) else None)
    declared, budget, held = sum(sizes.values()), memory_budget_bytes(), memory_in_use_bytes()
    if held + READ_COPIES * declared > budget:
        largest = max(sizes, key=sizes.get)
        raise InputError(
            f"{name} would take about {_bytes(READ_COPIES * declared)} of memory to open ({_bytes(declared)} of "
            f"arrays once read, {largest} alone {_bytes(sizes[largest])}), and this server holds {_bytes(held)} of "
            f"its {_bytes(budget)} budget already. Build a chunked atlas of it, which never holds the counts in "
            "memory (`python -m sccore atlas FILE -o FOLDER` in a data folder, or an atlas job on the Jobs page), "
            "or open a subset of its cells or genes.")


def _bytes(n: float) -> str:
    """``n`` bytes in a unit people read (``"1.2 TB"``)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def classify_matrix(matrix) -> str:
    """Say what a matrix holds: ``"counts"``, ``"log-normalised"``, ``"scaled"``, ``"invalid"`` or ``"not numbers"``.

    ``"invalid"`` means NaN or infinite values. Negative values mean ``"scaled"`` (z-scored)
    when most values are fractional, and ``"invalid"`` otherwise (negative counts).
    """
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
            or values.dtype == bool):
        return "not numbers"
    if values.size == 0:
        return "counts"
    if not np.all(np.isfinite(values)):
        return "invalid"
    fractional = np.abs(values - np.round(values)) > INTEGER_TOLERANCE
    if values.min() < 0:
        return "scaled" if fractional.mean() > 0.5 else "invalid"
    if not fractional.any():
        return "counts"
    return "log-normalised"


def _invalid_values(matrix) -> str:
    """How many NaN, infinite and negative values a matrix holds, e.g. ``"2 NaN, 1 negative"``."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    counts = {"NaN": int(np.isnan(values).sum()), "infinite": int(np.isinf(values).sum()),
              "negative": int((values < 0).sum())}
    return ", ".join(f"{n:,} {kind}" for kind, n in counts.items() if n)


def recover_counts(lognorm) -> sp.csr_matrix:
    """Recover integer counts from ``log1p(counts / total * scale)`` values; see :func:`recover_counts_checked`."""
    return recover_counts_checked(lognorm)[0]


def recover_counts_checked(lognorm) -> tuple[sp.csr_matrix, float]:
    """Recover integer counts from ``log1p(counts / total * scale)`` values, one scale per cell.

    Each cell's smallest non-zero value is taken as one count; the scale is then refined by
    least squares over all the cell's values. Raises :class:`InputError` when the result is not
    integer-valued within :data:`RECOVERY_TOLERANCE`, i.e. when the values were not made that way.
    Returns the counts and the largest distance from a whole number before rounding.
    """
    matrix = sp.csr_matrix(lognorm, dtype=np.float64, copy=True)
    matrix.eliminate_zeros()
    linear = np.expm1(matrix.data)
    starts = matrix.indptr[:-1]
    nonempty = np.diff(matrix.indptr) > 0
    if not nonempty.any():
        raise InputError("Every cell is empty: there are no counts to recover.")
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    smallest = np.ones(matrix.shape[0])
    smallest[nonempty] = np.minimum.reduceat(linear, starts[nonempty])
    first_guess = np.round(linear / smallest[rows])
    scale = np.bincount(rows, linear, matrix.shape[0]) / np.maximum(
        np.bincount(rows, first_guess, matrix.shape[0]), 1
    )
    counts = linear / scale[rows]
    deviation = float(np.abs(counts - np.round(counts)).max())
    if deviation > RECOVERY_TOLERANCE:
        raise InputError(
            f"The log-normalised values do not map back to whole counts (off by up to {deviation:.2f}). "
            "Provide raw counts in X, layers['counts'] or .raw."
        )
    matrix.data = np.round(counts)
    return matrix.astype(np.float32), deviation


def _matrix_candidates(adata: ad.AnnData):
    """Yield ``(where, matrix, var_names)`` for each place raw counts may live, best first."""
    if "counts" in adata.layers:
        yield "layers['counts']", adata.layers["counts"], adata.var_names
    yield "X", adata.X, adata.var_names
    if adata.raw is not None:
        yield ".raw.X", adata.raw.X, adata.raw.var_names


def standardise(adata: ad.AnnData, library_size_key: str | None = None) -> ad.AnnData:
    """Return a new AnnData with raw counts in ``X`` (CSR float32), validated, and notes in ``uns['input']``.

    Counts are taken from ``layers['counts']``, ``X`` or ``.raw`` (first that holds counts);
    log-normalised values are turned back into counts when that is exact, and otherwise refused.
    ``library_size_key`` names an ``obs`` column with whole-transcriptome totals, checked here.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"The dataset is empty ({adata.n_obs} cells x {adata.n_vars} genes). Choose a file with cells and genes."
        )
    if adata.n_obs < 3:
        raise InputError(
            f"The dataset has only {adata.n_obs} cell(s); embeddings and neighbours need at least 3. "
            "Choose a larger dataset."
        )
    notes: list[str] = []
    chosen = None
    seen: list[str] = []
    for where, matrix, var_names in _matrix_candidates(adata):
        if matrix is None:
            continue
        kind = classify_matrix(matrix)
        if kind == "counts":
            chosen = (where, sp.csr_matrix(matrix, dtype=np.float32), var_names)
            notes.append(f"Raw counts read from {where}.")
            break
        if kind == "log-normalised":
            try:
                counts = recover_counts(matrix)
            except InputError:
                seen.append(f"{where}: non-integer values that are not log-normalised counts")
                continue
            chosen = (where, counts, var_names)
            notes.append(f"{where} held log-normalised values; integer counts were recovered from them exactly.")
            break
        seen.append(f"{where}: {kind}" + (f" ({_invalid_values(matrix)})" if kind == "invalid" else "")
                    + (f" ({np.asarray(matrix).dtype})" if kind == "not numbers" else ""))
    if chosen is None:
        detail = "; ".join(seen) or "no matrix in X, layers['counts'] or .raw"
        if any("invalid" in s for s in seen):
            fix = "Remove NaN, infinite and negative values, or provide the raw counts in layers['counts']."
        elif any("scaled" in s for s in seen):
            fix = "The data look scaled (z-scored); provide the raw counts in layers['counts'] or .raw."
        else:
            fix = "Provide raw integer counts in X, layers['counts'] or .raw."
        raise InputError(f"No raw counts found ({detail}). {fix}")
    where, counts, var_names = chosen
    var = (adata.raw.var if where == ".raw.X" else adata.var).copy()
    var.index = pd.Index(var_names.astype(str), name=None)
    if var.index.has_duplicates:
        duplicated = var.index[var.index.duplicated()].unique()
        notes.append(
            f"{len(duplicated)} duplicate gene name(s) (e.g. {', '.join(map(str, duplicated[:3]))}) were made unique "
            "by appending -1, -2, ..."
        )
    obs = adata.obs.copy()
    obs.index = obs.index.astype(str)
    if obs.index.has_duplicates:
        notes.append("Duplicate cell names were made unique by appending -1, -2, ...")
    if counts.nnz == 0 or not counts.data.any():
        raise InputError(f"{where} holds no counts (every value is 0). Choose the file with the measured counts.")
    notes += _tidy_categories(obs)
    result = ad.AnnData(X=counts, obs=obs, var=var, obsm={k: np.asarray(v) for k, v in adata.obsm.items()
                                                          if k not in ("X_pca", "X_umap") and not sp.issparse(v)})
    result.var_names_make_unique()
    result.obs_names_make_unique()
    if library_size_key is not None:
        check_library_size_key(result, library_size_key)
        notes.append(f"Library size per cell read from obs['{library_size_key}'].")
    if not categorical_columns(result):
        notes.append("No categorical obs column (such as cell type or batch): colour cells by a gene instead.")
    result.uns["input"] = {"counts_from": where, "notes": notes, "library_size_key": library_size_key or ""}
    return result


def counts_matrix(adata: ad.AnnData) -> sp.csr_matrix:
    """The raw counts of a standardised or processed AnnData: ``layers['counts']``, else ``X`` if it holds counts."""
    if "counts" in adata.layers:
        return sp.csr_matrix(adata.layers["counts"], dtype=np.float32)
    if classify_matrix(adata.X) == "counts":
        return sp.csr_matrix(adata.X, dtype=np.float32)
    raise InputError("No raw counts in layers['counts'] or X; open the file with sccore.io.open_dataset first.")


def check_library_size_key(adata: ad.AnnData, key: str) -> None:
    """Raise :class:`InputError` unless ``obs[key]`` holds positive finite totals for every cell."""
    if key not in adata.obs.columns:
        raise InputError(
            f"obs has no column '{key}' for library sizes. Columns: {', '.join(map(str, adata.obs.columns[:20]))}."
        )
    values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(values)) or values.min() <= 0:
        raise InputError(f"obs['{key}'] must hold a positive number for every cell; choose another column.")


def _tidy_categories(obs: pd.DataFrame, max_categories: int = MAX_CATEGORIES) -> list[str]:
    """Drop unused categories of categorical ``obs`` columns (in place); notes on columns with too many values to
    colour by."""
    notes = []
    for name, column in obs.items():
        if isinstance(column.dtype, pd.CategoricalDtype):
            obs[name] = column.cat.remove_unused_categories()
        if (isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object) and \
                column.nunique(dropna=True) > max_categories:
            notes.append(f"obs['{printable(str(name))}'] has {column.nunique(dropna=True):,} different values, too "
                         f"many to colour cells by (at most {max_categories}); it is kept but not offered as a colour.")
    return notes


def categorical_columns(adata: ad.AnnData, max_categories: int = MAX_CATEGORIES) -> list[str]:
    """Names of ``obs`` columns that make sense as colours: categorical, string or boolean, 2 to ``max_categories`` values."""
    columns = []
    for name, column in adata.obs.items():
        if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object or column.dtype == bool:
            n_values = column.nunique(dropna=True)
            if 2 <= n_values <= max_categories:
                columns.append(str(name))
    return columns


def load_demo() -> ad.AnnData:
    """The embedded demo: scanpy's ``pbmc68k_reduced`` (700 PBMCs, 10 cell types) with integer counts.

    The counts are recovered from its ``.raw`` log-normalised values (765 genes) and checked to be
    whole numbers. Its 765 genes are a subset, so the whole-transcriptome totals are kept in
    ``obs['full_total_umis']``, ``obs['full_n_genes']`` and ``obs['full_pct_mito']`` (the names the CRISPR
    file in ``shared/data`` uses) and used for library sizes and quality control.
    """
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = sc.datasets.pbmc68k_reduced()
    counts, deviation = recover_counts_checked(source.raw.X)
    obs = pd.DataFrame(
        {
            "cell_type": source.obs["bulk_labels"].astype("category"),
            "louvain": source.obs["louvain"].astype("category"),
            "phase": source.obs["phase"].astype("category"),
            "full_total_umis": source.obs["n_counts"].astype(float),
            "full_n_genes": source.obs["n_genes"].astype(int),
            "full_pct_mito": source.obs["percent_mito"].astype(float) * 100,
        },
        index=source.obs_names,
    )
    var = pd.DataFrame(index=source.raw.var_names.astype(str))
    adata = standardise(ad.AnnData(X=counts, obs=obs, var=var), library_size_key="full_total_umis")
    adata.uns["input"]["counts_from"] = "pbmc68k_reduced .raw (log-normalised)"
    adata.uns["input"]["notes"][0] = (
        "Integer counts recovered exactly from pbmc68k_reduced's log-normalised .raw values "
        f"(every value within {deviation:.3f} of a whole number before rounding)."
    )
    adata.uns["dataset"] = {
        "name": DEMO_NAME,
        "description": (
            "700 real peripheral blood mononuclear cells from 10x Genomics' 68k PBMC data, as shipped with "
            "scanpy (a small teaching subset: 765 genes, 10 cell types). Counts were recovered exactly from "
            "its log-normalised values; library sizes are the whole-transcriptome totals in obs['full_total_umis']."
        ),
    }
    return adata


def open_dataset(path: str | os.PathLike, library_size_key: str | None = None) -> ad.AnnData:
    """Read and standardise an ``.h5ad`` file: raw counts in ``X``, notes in ``uns['input']``."""
    adata = standardise(read_h5ad(path), library_size_key=library_size_key)
    name = printable(Path(path).name)
    adata.uns["dataset"] = {"name": name, "description": f"Opened from {name}."}
    return adata
