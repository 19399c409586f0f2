"""The chunked atlas pipeline gives what the in-memory one gives, resumes after an interruption and refuses bad
input with a message that names the fix."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import faiss
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sccore import InputError
from sccore.atlas import AtlasParams, build_atlas, open_atlas, tune_search
from sccore.embed import pca
from sccore.pp import default_params, preprocess
from sccore.umap import UMAPParams

SMALL = dict(chunk_cells=150, umap=UMAPParams(n_neighbors=10), recall_queries=200)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory, demo):
    path = tmp_path_factory.mktemp("atlas") / "demo.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def built(demo_file, tmp_path_factory):
    params = AtlasParams(preprocess=None, **SMALL)
    return build_atlas(demo_file, tmp_path_factory.mktemp("built") / "atlas", params)


def test_atlas_equals_the_in_memory_pipeline(demo, built):
    """Read in chunks of 150 cells, the QC (an atlas's: fixed thresholds), genes, PCA and expression are those of
    preprocess + pca on the whole."""
    assert built.manifest["params"]["preprocess"]["qc_rule"] == "thresholds"
    whole = preprocess(demo, default_params(demo, qc_rule="thresholds"))
    pca(whole)
    atlas = built.adata
    assert list(atlas.obs_names) == list(whole.obs_names)
    assert list(atlas.var_names) == list(whole.var_names)
    np.testing.assert_array_equal(atlas.var["highly_variable"], whole.var["highly_variable"])
    np.testing.assert_allclose(atlas.obsm["X_pca"], whole.obsm["X_pca"], atol=2e-3 * np.abs(whole.obsm["X_pca"]).max())
    for gene in ("LYZ", "CD3E", whole.var_names[-1]):
        np.testing.assert_allclose(built.expression(gene), whole[:, gene].X.toarray().ravel(), rtol=1e-6)
    assert atlas.obsm["X_umap"].shape == (whole.n_obs, 2) and np.isfinite(atlas.obsm["X_umap"]).all()
    assert (built.folder / "first_frame.png").read_bytes()[:4] == b"\x89PNG"
    assert built.manifest["params"]["preprocess"]["library_size_key"] == "full_total_umis"


def test_highly_variable_genes_chosen_in_chunks_match_scanpy(demo_file, demo, tmp_path):
    """With fewer top genes than the data has, the chunked moments pick scanpy's Seurat-flavour genes."""
    import scanpy as sc

    params = AtlasParams(preprocess=default_params(demo, n_top_genes=200, qc_rule="thresholds"), **SMALL)
    atlas = build_atlas(demo_file, tmp_path / "hvg", params)
    whole = preprocess(demo, params.preprocess)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sc.pp.highly_variable_genes(whole, n_top_genes=200, flavor="seurat", inplace=False)
    np.testing.assert_array_equal(atlas.adata.var["highly_variable"], expected["highly_variable"])
    assert atlas.adata.var["highly_variable"].sum() == 200


def test_an_atlas_refuses_the_outlier_rule_with_the_fix(demo_file, demo, tmp_path):
    with pytest.raises(InputError, match="qc_rule='thresholds'"):
        build_atlas(demo_file, tmp_path / "outliers", AtlasParams(preprocess=default_params(demo), **SMALL))


def test_an_interrupted_build_resumes_after_the_last_finished_stage(demo_file, tmp_path):
    folder = tmp_path / "resume"
    params = AtlasParams(preprocess=None, **SMALL)

    def stop_at_umap(fraction: float, message: str) -> None:
        if message.startswith("UMAP"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_atlas(demo_file, folder, params, progress=stop_at_umap)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["genes", "store", "pca", "index"]
    with pytest.raises(InputError, match="unfinished.*resumes"):
        open_atlas(folder)
    kept = {path: path.stat().st_mtime_ns for path in folder.rglob("*.npy")}
    messages = []
    atlas = build_atlas(demo_file, folder, params, progress=lambda f, m: messages.append(m))
    assert not any(m.startswith(("Quality control", "Normalising", "PCA", "FAISS")) for m in messages)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items())
    assert list(atlas.manifest["stages"]) == ["genes", "store", "pca", "index", "umap", "frame"]
    assert not list(folder.rglob(".*.tmp*"))


def test_a_folder_of_another_build_is_refused_unless_overwritten(demo_file, built):
    other = AtlasParams(preprocess=None, **{**SMALL, "k": 10})
    with pytest.raises(InputError, match="another input or other parameters.*overwrite"):
        build_atlas(demo_file, built.folder, other)


def test_row_major_raw_counts_are_required(demo, tmp_path):
    column_major = ad.AnnData(X=sp.csc_matrix(demo.X), obs=demo.obs[[]], var=demo.var[[]])
    column_major.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(InputError, match="column-major.*csr_matrix"):
        build_atlas(tmp_path / "csc.h5ad", tmp_path / "a")
    logged = ad.AnnData(X=sp.csr_matrix(np.log1p(demo.X.astype(np.float32))), obs=demo.obs[[]], var=demo.var[[]])
    logged.write_h5ad(tmp_path / "log.h5ad")
    with pytest.raises(InputError, match="raw counts"):
        build_atlas(tmp_path / "log.h5ad", tmp_path / "b")
    with pytest.raises(InputError, match="holds no atlas.*sccore atlas"):
        open_atlas(tmp_path)


def test_search_breadth_is_raised_until_the_recall_target(built):
    embedding = np.asarray(built.adata.obsm["X_pca"])
    index = faiss.IndexHNSWFlat(embedding.shape[1], 4)
    index.add(embedding)
    tuned = tune_search(index, embedding, k=15, target_recall=0.99, n_queries=200)
    assert tuned["kind"] == "hnsw" and tuned["recall"] >= 0.99
    assert [step["ef_search"] for step in tuned["tried"]] == sorted(step["ef_search"] for step in tuned["tried"])
    assert all(step["recall"] < 0.99 for step in tuned["tried"][:-1])
    flat = faiss.IndexFlatL2(embedding.shape[1])
    flat.add(embedding)
    assert tune_search(flat, embedding, n_queries=100)["recall"] == 1.0


def test_cli_builds_an_atlas_and_keeps_the_file_s_library_sizes(demo_file, tmp_path, capsys):
    from sccore.cli import main

    arguments = ["atlas", str(demo_file), "-o", str(tmp_path / "cli"), "--chunk-cells", "300", "--min-genes", "10"]
    assert main(arguments) == 0
    assert "Wrote the atlas of" in capsys.readouterr().out
    atlas = open_atlas(tmp_path / "cli")
    assert atlas.manifest["params"]["preprocess"]["min_genes"] == 10
    assert atlas.manifest["params"]["preprocess"]["library_size_key"] == "full_total_umis"
    assert main(["atlas", str(demo_file), "-o", str(tmp_path / "cli"), "--min-genes", "20"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_an_atlas_is_an_analysis_the_pages_can_show(built):
    analysis = built.analysis()
    assert {"X_umap", "X_pca (PC1 vs PC2)"} <= set(analysis.layouts())
    np.testing.assert_array_equal(analysis.expression("LYZ"), built.expression("LYZ"))
    assert analysis.indexes["X_pca"].ntotal == built.adata.n_obs
    assert analysis.params.preprocess.library_size_key == "full_total_umis"
    with pytest.raises(InputError, match="not in this dataset"):
        analysis.expression("NOT_A_GENE")


@pytest.fixture(scope="module")
def in_memory(demo):
    """The demo through the in-memory pipeline with an atlas's QC (fixed thresholds): what the atlas's store holds,
    in ``X``."""
    return preprocess(demo, default_params(demo, qc_rule="thresholds"))


@pytest.mark.parametrize("method", ["wilcoxon", "t-test"])
def test_markers_and_de_read_from_the_store_equal_the_in_memory_ones(built, in_memory, method, monkeypatch):
    """Marker genes of every cell type and A-vs-B tests, read from the gene-major store a few genes at a time (and
    only the blocks holding A or B), are those of the log-normalised matrix in memory."""
    from sccore import markers
    from sccore.markers import analysis_de, analysis_markers, differential_expression
    from sccore.workflow import Analysis

    monkeypatch.setattr(markers, "ENTRIES_PER_CHUNK", 5_000)
    memory = Analysis(adata=in_memory, key="demo", params=None)
    expected = analysis_markers(memory, "cell_type", method=method)
    pd.testing.assert_frame_equal(analysis_markers(built.analysis(), "cell_type", method=method), expected,
                                  rtol=1e-9)
    in_a, in_b = np.arange(10, 160), np.arange(200, 290)  # the store's blocks hold 150 cells: the last is not read
    expected = differential_expression(in_memory.X, in_memory.var_names, in_a, in_b, method=method)
    pd.testing.assert_frame_equal(analysis_de(built.analysis(), in_a, in_b, method=method), expected, rtol=1e-9)
    assert list(expected["gene"][:10]) == list(analysis_de(memory, in_a, in_b, method=method)["gene"][:10])
    with pytest.raises(InputError, match="choose one of"):
        analysis_markers(built.analysis(), "no_such_column")


def test_the_tasks_take_an_atlas_folder_and_clusters_are_kept_beside_it(built, tmp_path):
    """`cluster ATLAS` keeps Leiden's clusters in annotations/ (open_atlas reads them back), and `markers ATLAS
    --groupby leiden` and `de ATLAS` read the store."""
    import shutil

    from sccore.cli import main
    from sccore.markers import differential_expression, rank_genes

    folder = tmp_path / "atlas"
    shutil.copytree(built.folder, folder)
    assert main(["cluster", str(folder), "-o", str(tmp_path / "clustered.h5ad"), "--labels-key", "cell_type"]) == 0
    reopened = open_atlas(folder)
    written = ad.read_h5ad(tmp_path / "clustered.h5ad")
    assert list(reopened.adata.obs["leiden"]) == list(written.obs["leiden"])
    assert list(reopened.adata.obs["leiden"].cat.categories) == list(written.obs["leiden"].cat.categories)
    assert reopened.adata.uns["leiden"]["n_clusters"] == written.uns["leiden"]["n_clusters"] >= 3
    assert reopened.adata.uns["leiden"]["agreement"]["ARI"] > 0.3
    assert (folder / "annotations" / "leiden.csv").is_file() and not list(folder.rglob(".*.tmp*"))

    assert main(["markers", str(folder), "--groupby", "leiden", "-o", str(tmp_path / "markers.csv")]) == 0
    expected = rank_genes(reopened.store, reopened.adata.var_names, reopened.adata.obs["leiden"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "markers.csv", dtype={"group": str}), expected,
                                  check_dtype=False, atol=1e-6)
    assert main(["de", str(folder), "--a", "leiden=0", "--b", "leiden=1", "-o", str(tmp_path / "de.csv")]) == 0
    labels = reopened.adata.obs["leiden"].to_numpy()
    expected = differential_expression(reopened.store, reopened.adata.var_names, labels == "0", labels == "1")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "de.csv"), expected, check_dtype=False, atol=1e-6)
    assert main(["markers", str(folder), "--groupby", "leiden", "--library-size-key", "x", "-o",
                 str(tmp_path / "never.csv")]) == 2


def test_probed_lists_of_an_inverted_file_are_raised_until_the_recall_target():
    from sccore.neighbors import IndexParams, build_index

    rng = np.random.default_rng(0)
    embedding = (rng.normal(scale=4, size=(20, 12))[rng.integers(0, 20, 4000)]
                 + rng.normal(size=(4000, 12))).astype(np.float32)
    index = build_index(embedding, IndexParams(kind="ivf", ivf_list_factor=4))
    tuned = tune_search(index, embedding, k=15, target_recall=0.98, n_queries=300)
    assert tuned["kind"] == "ivf" and tuned["recall"] >= 0.98 and index.nprobe == tuned["nprobe"]
    assert len(tuned["tried"]) > 1 and all(step["recall"] < 0.98 for step in tuned["tried"][:-1])
