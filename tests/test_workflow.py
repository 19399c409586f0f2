import shutil

import numpy as np

from sccore.cache import DiskCache
from sccore.io import open_dataset, standardise
from sccore.neighbors import IndexParams
from sccore.pp import PreprocessParams, default_params, steps_table
from sccore.workflow import PipelineParams, analyse, layout_key, prepare


def test_analyse_demo_and_reopen_recomputes_nothing(demo, tmp_path, monkeypatch):
    params = PipelineParams(preprocess=default_params(demo))
    messages = []
    first_cache = DiskCache(tmp_path)
    analysis = analyse(demo, params, first_cache, progress=lambda f, m: messages.append((f, m)))
    adata = analysis.adata
    n_kept = 700 - sum(steps_table(adata)["cells_removed"])  # the outlier rule's 5-MAD cuts on the demo
    assert 650 < n_kept <= 700
    assert adata.obsm["X_pca"].shape == (n_kept, 50) and adata.obsm["X_umap"].shape == (n_kept, 2)
    assert first_cache.computed == 6  # preprocess, PCA, index, neighbours, their graph, UMAP
    assert messages[-1][0] == 1.0 and all(b[0] >= a[0] for a, b in zip(messages, messages[1:]))
    assert set(analysis.layouts()) >= {"X_umap", "X_pca (PC1 vs PC2)"}
    # cell types stay together: most UMAP neighbours share the cell type
    neighbors = analysis.neighbors["X_pca"]
    labels = adata.obs["cell_type"].to_numpy()
    assert np.mean(labels[neighbors.indices[:, 1:]] == labels[:, None]) > 0.6

    second_cache = DiskCache(tmp_path)
    import sccore.workflow

    def no_graph(found):  # umap-learn's connectivities: seconds of numba compilation in a new server process
        raise AssertionError("a reopened dataset's graph is read from the cache")

    monkeypatch.setattr(sccore.workflow, "knn_graph", no_graph)
    again = analyse(demo, params, second_cache)
    assert second_cache.computed == 0
    assert (again.adata.obsp["connectivities"] != adata.obsp["connectivities"]).nnz == 0
    np.testing.assert_array_equal(again.adata.obsm["X_umap"], adata.obsm["X_umap"])
    np.testing.assert_array_equal(again.neighbors["X_pca"].indices, neighbors.indices)
    assert again.expression("CD79A").shape == (n_kept,)


def test_changed_parameters_recompute_only_what_they_touch(counts_adata, tmp_path):
    adata = standardise(counts_adata)
    base = PipelineParams(preprocess=PreprocessParams(min_genes=0), index=IndexParams(kind="flat"))
    analyse(adata, base, DiskCache(tmp_path))
    cache = DiskCache(tmp_path)
    from dataclasses import replace

    analyse(adata, replace(base, umap=replace(base.umap, min_dist=0.1)), cache)
    assert cache.computed == 1


def test_analyse_builds_on_a_prepared_analysis_without_copying_or_changing_it(counts_adata):
    adata = standardise(counts_adata)
    params = PipelineParams(preprocess=PreprocessParams(min_genes=0), index=IndexParams(kind="flat"))
    prepared = prepare(adata, params)  # what the Data & QC page shows: QC and PCA, no layout
    assert "X_pca" in prepared.adata.obsm and "X_umap" not in prepared.adata.obsm
    analysis = analyse(adata, params, prepared=prepared)
    assert analysis.adata.X is prepared.adata.X and analysis.key == prepared.key
    assert "X_umap" in analysis.adata.obsm and "X_umap" not in prepared.adata.obsm
    assert "neighbors" in analysis.adata.uns and "neighbors" not in prepared.adata.uns


def test_layout_keys():
    assert layout_key("X_pca") == "X_umap"
    assert layout_key("X_encoder") == "X_umap_encoder"


def test_analyse_real_pbmcs_from_eight_donors(shared_data, tmp_path):
    adata = open_dataset(shared_data / "kang_se.h5ad")
    analysis = analyse(adata, PipelineParams(preprocess=default_params(adata)), DiskCache(tmp_path))
    result = analysis.adata
    assert result.n_obs > 11_000 and result.obsm["X_umap"].shape == (result.n_obs, 2)
    labels = result.obs["cell_type"].to_numpy()
    indices = analysis.neighbors["X_pca"].indices[:, 1:]
    assert np.mean(labels[indices] == labels[:, None]) > 0.8


def test_analyse_with_an_encoder_adds_its_embedding_and_layout(demo, tmp_path):
    from dataclasses import replace

    from safetensors.torch import load_file, save_file

    from sccore.models import EncoderConfig, TrainConfig, train

    tiny = EncoderConfig(vocab_size=3, n_layers=1, d_model=16, n_heads=2, d_ff=32, max_length=256)
    train(demo, tmp_path / "model", tiny, TrainConfig(epochs=0.5, eval_every=5), library_size_key="full_total_umis")
    params = replace(PipelineParams(preprocess=default_params(demo)), encoder_model=str(tmp_path / "model"))
    cache = DiskCache(tmp_path / "cache")
    analysis = analyse(demo, params, cache)
    n_kept = analysis.adata.n_obs
    assert analysis.adata.obsm["X_encoder"].shape == (n_kept, 16) and n_kept > 650
    assert analysis.adata.obsm["X_umap_encoder"].shape == (n_kept, 2)
    assert {"X_pca", "X_encoder"} <= set(analysis.indexes)
    again = DiskCache(tmp_path / "cache")
    assert analyse(demo, params, again).key == analysis.key and again.computed == 0
    # another model (other weights of the same size), or the same files in another user's folder: another key, so
    # no cached page result (downloads, indexes, tables keyed by the analysis) of one is served for the other
    shutil.copytree(tmp_path / "model", tmp_path / "copy")
    copied = analyse(demo, replace(params, encoder_model=str(tmp_path / "copy")), DiskCache(tmp_path / "cache"))
    shutil.copytree(tmp_path / "model", tmp_path / "other")
    weights = load_file(tmp_path / "other" / "model.safetensors")
    save_file({name: value + 0.1 for name, value in weights.items()}, tmp_path / "other" / "model.safetensors")
    other = analyse(demo, replace(params, encoder_model=str(tmp_path / "other")), DiskCache(tmp_path / "cache"))
    assert len({analysis.key, copied.key, other.key, analyse(demo, replace(params, encoder_model="")).key}) == 4
    np.testing.assert_array_equal(copied.adata.obsm["X_encoder"], analysis.adata.obsm["X_encoder"])
    assert not np.allclose(other.adata.obsm["X_encoder"], analysis.adata.obsm["X_encoder"])
