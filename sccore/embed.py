"""Cell embeddings. PCA is the baseline every other embedding is compared with."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .errors import InputError

ROWS_PER_CHUNK = 50_000


@dataclass(frozen=True)
class PCAParams:
    """Parameters of :func:`pca`."""

    n_comps: int = 50
    use_highly_variable: bool = True


def gram_and_sum(matrix) -> tuple[np.ndarray, np.ndarray]:
    """``X^T X`` and the column sums of ``X`` (float64), read in row blocks so a sparse ``X`` is never densified
    whole; a dataset read in chunks adds up the chunks' results.

    Each block is densified in float32 (about 64 MB) and multiplied by BLAS, its product summed in float64: ten
    times faster than a sparse ``X^T X`` on single-cell data (hundreds of genes detected per cell).
    """
    n_genes = matrix.shape[1]
    gram = np.zeros((n_genes, n_genes))
    column_sum = np.zeros(n_genes)
    block_rows = max(256, (1 << 24) // max(n_genes, 1))
    for start in range(0, matrix.shape[0], block_rows):
        block = matrix[start:start + block_rows]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        block = block.astype(np.float32, copy=False)
        gram += block.T @ block
        column_sum += block.sum(axis=0, dtype=np.float64)
    return gram, column_sum


def fit_pca(matrix, n_comps: int) -> dict[str, np.ndarray]:
    """Exact PCA of a (sparse or dense) cells x genes matrix through its gene-gene covariance.

    Returns ``mean`` (genes), ``components`` (genes x comps) and ``variance`` / ``variance_ratio``
    (comps). Signs are fixed so each component's largest loading is positive.
    """
    gram, column_sum = gram_and_sum(matrix)
    return pca_from_gram(gram, column_sum, matrix.shape[0], n_comps)


def pca_from_gram(gram: np.ndarray, column_sum: np.ndarray, n_cells: int, n_comps: int) -> dict[str, np.ndarray]:
    """:func:`fit_pca`'s result from ``X^T X`` and the column sums of ``X`` (see :func:`gram_and_sum`)."""
    n_genes = len(column_sum)
    n_comps = int(min(n_comps, n_genes, n_cells - 1))
    if n_comps < 1:
        raise InputError("PCA needs at least 2 cells and 1 gene.")
    mean = column_sum / n_cells
    covariance = (gram - n_cells * np.outer(mean, mean)) / max(n_cells - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:n_comps]
    variance = np.clip(eigenvalues[order], 0, None)
    components = eigenvectors[:, order]
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(n_comps)])
    components *= np.where(signs == 0, 1, signs)
    total = max(float(np.clip(eigenvalues, 0, None).sum()), np.finfo(float).tiny)
    return {"mean": mean, "components": components, "variance": variance, "variance_ratio": variance / total}


def project_pca(matrix, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project cells (rows of ``matrix``, same genes as the fit) onto PCA components: ``(X - mean) @ components``."""
    out = np.empty((matrix.shape[0], components.shape[1]), dtype=np.float32)
    shift = mean @ components
    for start in range(0, matrix.shape[0], ROWS_PER_CHUNK):
        chunk = matrix[start:start + ROWS_PER_CHUNK]
        out[start:start + ROWS_PER_CHUNK] = np.asarray(chunk @ components) - shift
    return out


def pca_arrays(adata: ad.AnnData, params: PCAParams = PCAParams()) -> dict[str, np.ndarray]:
    """PCA of log-normalised ``adata.X`` (highly variable genes by default), as arrays: ``embedding``,
    ``loadings`` and ``mean`` for every gene (zero for genes left out), ``variance``, ``variance_ratio``."""
    if "preprocess" not in adata.uns:
        raise InputError("PCA needs log-normalised data: run sccore.pp.preprocess first.")
    genes = (adata.var["highly_variable"].to_numpy(dtype=bool) if params.use_highly_variable
             else np.ones(adata.n_vars, dtype=bool))
    matrix = adata.X[:, np.flatnonzero(genes)]
    fit = fit_pca(matrix, params.n_comps)
    loadings = np.zeros((adata.n_vars, fit["components"].shape[1]), dtype=np.float32)
    loadings[genes] = fit["components"]
    mean = np.zeros(adata.n_vars, dtype=np.float32)
    mean[genes] = fit["mean"]
    return {"embedding": project_pca(matrix, fit["mean"], fit["components"]), "loadings": loadings, "mean": mean,
            "variance": fit["variance"].astype(np.float32), "variance_ratio": fit["variance_ratio"].astype(np.float32)}


def store_pca(adata: ad.AnnData, arrays: dict[str, np.ndarray], params: PCAParams = PCAParams(),
              key_added: str = "X_pca") -> None:
    """Write :func:`pca_arrays`' result into ``adata`` (see :func:`pca` for where)."""
    adata.obsm[key_added] = arrays["embedding"]
    adata.varm[f"{key_added}_loadings"] = arrays["loadings"]
    adata.var[f"{key_added}_mean"] = arrays["mean"]
    adata.uns[key_added] = {"method": "pca", "params": asdict(params), "n_comps": int(arrays["loadings"].shape[1]),
                            "variance": arrays["variance"], "variance_ratio": arrays["variance_ratio"]}


def pca(adata: ad.AnnData, params: PCAParams = PCAParams(), key_added: str = "X_pca") -> None:
    """PCA of log-normalised ``adata.X`` (highly variable genes by default), in place.

    Writes ``obsm[key_added]``, the loadings of every gene in ``varm[key_added + '_loadings']``
    (zero for genes left out), the gene means in ``var[key_added + '_mean']`` and the parameters and
    explained variance in ``uns[key_added]``, so new cells can be projected with :func:`project_pca`.
    """
    store_pca(adata, pca_arrays(adata, params), params, key_added)
