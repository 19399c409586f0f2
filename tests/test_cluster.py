"""Leiden clustering (sccore.cluster), the cluster task and its subcommand."""

import math
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from sccore.cluster import cluster_agreement, leiden
from sccore.embed import pca
from sccore.errors import InputError
from sccore.neighbors import IndexParams, neighbors
from sccore.pp import default_params, preprocess
from sccore.tasks import cluster
from tests.conftest import ROOT, make_counts

KANG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kang_se.h5ad"


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "sccore", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def embedded(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` preprocessed as the project does, with its PCA and the default neighbours of it."""
    processed = preprocess(adata, default_params(adata, min_genes=0))
    pca(processed)
    neighbors(processed, "X_pca", cluster.ClusterParams.default("n_neighbors"), IndexParams())
    return processed


@pytest.fixture(scope="module")
def synthetic():
    return embedded(make_counts())


def test_leiden_recovers_the_cell_types(synthetic):
    adata = synthetic.copy()
    n_clusters = leiden(adata)
    scores = cluster_agreement(adata.obs["leiden"], adata.obs["cell_type"])
    assert n_clusters == 3 == adata.uns["leiden"]["n_clusters"]
    assert scores["ARI"] > 0.95 and scores["NMI"] > 0.95  # measured: 1.0 and 1.0
    assert adata.uns["leiden"]["params"] == {"resolution": 1.0, "neighbors_key": "neighbors", "seed": 0,
                                             "n_iterations": 2, "method": "igraph leiden, modularity"}


def test_same_seed_same_clusters_and_higher_resolution_more(synthetic):
    first, second, finer = synthetic.copy(), synthetic.copy(), synthetic.copy()
    leiden(first, resolution=1.0, seed=3)
    leiden(second, resolution=1.0, seed=3)
    assert list(first.obs["leiden"]) == list(second.obs["leiden"])
    assert leiden(finer, resolution=2.0, seed=3) > first.uns["leiden"]["n_clusters"]  # measured: 8 against 3


def test_cluster_ids_are_ordered_by_size(synthetic):
    adata = synthetic.copy()
    leiden(adata, resolution=2.0, key_added="fine")
    counts = adata.obs["fine"].value_counts(sort=False)
    assert list(counts.index) == [str(i) for i in range(len(counts))]
    assert list(counts) == sorted(counts, reverse=True)


def test_missing_graph_and_bad_resolution_name_the_fix(synthetic):
    with pytest.raises(InputError, match="python -m sccore neighbors"):
        leiden(synthetic.copy(), neighbors_key="neighbors_encoder")
    with pytest.raises(InputError, match="resolution must be above 0"):
        leiden(synthetic.copy(), resolution=0)
    with pytest.raises(InputError, match="resolution must lie between 0.001 and 100"):
        cluster.ClusterParams(input="in.h5ad", resolution=-1.0)


def test_agreement_drops_missing_labels():
    labels = np.array(["a", "a", "b", "b", None], dtype=object)
    assert cluster_agreement(["0", "0", "1", "1", "0"], labels) == {"ARI": 1.0, "NMI": 1.0}
    assert all(math.isnan(value) for value in cluster_agreement(["0"], [None]).values())


def test_cli_writes_clusters_and_scores(synthetic, tmp_path):
    source = synthetic.copy()
    for key in ("distances", "connectivities"):
        del source.obsp[key]
    del source.uns["neighbors"]
    path, out = tmp_path / "pca.h5ad", tmp_path / "clusters.h5ad"
    source.write_h5ad(path)
    result = run_cli("cluster", path, "--use-rep", "X_pca", "--labels-key", "cell_type", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "3 Leiden clusters" in result.stdout and "ARI 1.000" in result.stdout
    written = ad.read_h5ad(out)
    assert written.obs["leiden"].nunique() == 3 and "connectivities" in written.obsp
    assert written.uns["leiden"]["agreement"]["labels_key"] == "cell_type"
    assert written.uns["leiden"]["params"]["method"] == "igraph leiden, modularity"

    refused = run_cli("cluster", path, "--use-rep", "X_missing", "-o", tmp_path / "never.h5ad")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "X_missing" in refused.stderr
    assert not (tmp_path / "never.h5ad").exists()


@pytest.mark.slow
def test_leiden_on_kang_agrees_with_its_cell_types():
    if not KANG.is_file():
        pytest.skip(f"{KANG} not found (only CI and developers have ../shared/data)")
    from sccore.io import open_dataset

    adata = embedded(open_dataset(KANG))
    leiden(adata)
    scores = cluster_agreement(adata.obs["leiden"], adata.obs["cell_type"])
    assert scores["ARI"] > 0.45 and scores["NMI"] > 0.62  # measured: ARI 0.511, NMI 0.693
