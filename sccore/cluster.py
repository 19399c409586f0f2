"""Leiden clustering of a stored kNN graph (igraph's Leiden, modularity), as ``scanpy.tl.leiden`` writes it, and
the agreement of clusters with known labels (ARI, NMI)."""

from __future__ import annotations

import math
import random

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .neighbors import graph_keys

METHOD = "igraph leiden, modularity"


def leiden(adata: ad.AnnData, resolution: float = 1.0, neighbors_key: str = "neighbors", key_added: str = "leiden",
           seed: int = 0, n_iterations: int = 2) -> int:
    """Cluster the kNN graph stored under ``neighbors_key`` (:func:`sccore.neighbors.neighbors`) with igraph's
    Leiden (modularity at ``resolution``, seeded by ``seed``; ``n_iterations`` passes, 2 as igraph's and scanpy's
    igraph flavour, ``-1`` until stable); writes
    ``obs[key_added]`` (categorical string ids, ``"0"`` the largest cluster, as scanpy) and ``uns[key_added]``
    (``params``, ``n_clusters``); returns the number of clusters."""
    import igraph

    if not resolution > 0:
        raise InputError(f"resolution must be above 0 (higher gives more clusters), not {resolution}.")
    _, connectivities_key = graph_keys(neighbors_key)
    if connectivities_key not in adata.obsp:
        raise InputError(f"No kNN graph is stored under '{neighbors_key}' (obsp['{connectivities_key}']). Compute it "
                         f"first: `python -m sccore neighbors IN.h5ad -o OUT.h5ad --use-rep KEY --key-added "
                         f"{neighbors_key}`, or give the cluster command --use-rep KEY, which computes it.")
    upper = sp.triu(sp.csr_matrix(adata.obsp[connectivities_key]), k=1).tocoo()
    graph = igraph.Graph(n=adata.n_obs, edges=np.column_stack([upper.row, upper.col]).tolist(), directed=False,
                         edge_attrs={"weight": upper.data.astype(float).tolist()})
    igraph.set_random_number_generator(random.Random(seed))
    try:
        partition = graph.community_leiden(objective_function="modularity", weights="weight",
                                           resolution=resolution, n_iterations=n_iterations)
    finally:
        igraph.set_random_number_generator(random)
    membership = np.asarray(partition.membership)
    sizes = np.bincount(membership)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    labels = rank[membership].astype(str)
    adata.obs[key_added] = pd.Categorical(labels, categories=[str(i) for i in range(len(sizes))])
    adata.uns[key_added] = {"params": {"resolution": float(resolution), "neighbors_key": neighbors_key,
                                       "seed": int(seed), "n_iterations": int(n_iterations), "method": METHOD},
                            "n_clusters": int(len(sizes))}
    return int(len(sizes))


def cluster_agreement(clusters, labels) -> dict[str, float]:
    """The adjusted Rand index (``ARI``) and normalised mutual information (``NMI``) of ``clusters`` against
    ``labels`` (same length), over the cells whose label is known (missing labels are dropped); NaN when none is."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters, labels = pd.Series(np.asarray(clusters)), pd.Series(np.asarray(labels, dtype=object))
    if len(clusters) != len(labels):
        raise InputError(f"{len(clusters)} cluster ids but {len(labels)} labels: give one label per cell.")
    known = labels.notna().to_numpy()
    if not known.any():
        return {"ARI": math.nan, "NMI": math.nan}
    kept_clusters, kept_labels = clusters[known].astype(str), labels[known].astype(str)
    return {"ARI": float(adjusted_rand_score(kept_labels, kept_clusters)),
            "NMI": float(normalized_mutual_info_score(kept_labels, kept_clusters))}
