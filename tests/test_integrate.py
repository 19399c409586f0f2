"""Batch integration (sccore.integrate: Harmony), the integrate task, its subcommand and job kind, and Harmony in the
dashboard's analysis (sccore.workflow)."""

import os
import subprocess
import sys
from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sccore import InputError, jobs
from sccore.cache import DiskCache
from sccore.cli import build_parser
from sccore.integrate import HarmonyParams, corrected_knockout, harmony
from sccore.metrics import kmeans_nmi_ari, silhouette_batch, silhouette_label
from sccore.perturb import KnockoutResult
from sccore.pp import PreprocessParams
from sccore.tasks import integrate
from sccore.workflow import PipelineParams, analyse
from tests.conftest import ROOT, make_counts


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "sccore", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def batched_embedding(n_cells: int = 600, seed: int = 0) -> ad.AnnData:
    """Three cell types (well apart) measured in three batches, each batch shifted by an offset that splits every
    type by batch, in a 20-dimensional 'PCA'."""
    rng = np.random.default_rng(seed)
    types, batches = rng.integers(0, 3, n_cells), rng.integers(0, 3, n_cells)
    centres, offsets = rng.normal(0, 4, (3, 20)), rng.normal(0, 3, (3, 20))
    embedding = centres[types] + offsets[batches] + rng.normal(0, 1, (n_cells, 20))
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type_{t}" for t in types]),
                        "donor": pd.Categorical([f"donor_{b}" for b in batches]),
                        "condition": pd.Categorical(["control"] * n_cells)},
                       index=[f"cell_{i}" for i in range(n_cells)])
    return ad.AnnData(obs=obs, obsm={"X_pca": embedding.astype(np.float32)})


def test_harmony_mixes_the_batches_and_keeps_the_cell_types_apart():
    adata = batched_embedding()
    assert harmony(adata, "donor") == "X_pca_harmony"
    labels, batches = adata.obs["cell_type"], adata.obs["donor"]
    before, after = adata.obsm["X_pca"], adata.obsm["X_pca_harmony"]
    assert after.shape == before.shape and after.dtype == np.float32
    assert silhouette_batch(before, labels, batches) < 0.5 < 0.8 < silhouette_batch(after, labels, batches)
    assert silhouette_label(after, labels) > silhouette_label(before, labels)  # the types stay apart
    assert kmeans_nmi_ari(after, labels)[1] > 0.95
    info = adata.uns["X_pca_harmony"]
    assert (info["method"], info["batch_key"], info["use_rep"], info["n_batches"]) == ("harmony", "donor", "X_pca", 3)
    assert info["params"] == {"theta": 2.0, "max_iter": 10, "seed": 0}


def test_harmony_is_repeatable_and_writes_under_key_added():
    first, second = batched_embedding(200), batched_embedding(200)
    harmony(first, "donor", key_added="X_corrected", params=HarmonyParams(seed=3))
    harmony(second, "donor", key_added="X_corrected", params=HarmonyParams(seed=3))
    np.testing.assert_array_equal(first.obsm["X_corrected"], second.obsm["X_corrected"])
    assert "X_pca_harmony" not in first.obsm and first.uns["X_corrected"]["params"]["seed"] == 3


def test_bad_batches_and_embeddings_are_refused_with_the_fix():
    adata = batched_embedding(60)
    with pytest.raises(InputError, match=r"'condition' has a single value \(control\).*several values: donor, "
                                         r"cell_type\. Give the one that names the batches"):
        harmony(adata, "condition")
    with pytest.raises(InputError, match="no column 'sample'.*donor, cell_type"):
        harmony(adata, "sample")
    with pytest.raises(InputError, match="obsm has no 'X_encoder'.*available: X_pca.*embed IN.h5ad --method pca"):
        harmony(adata, "donor", use_rep="X_encoder")
    adata.obs.loc[adata.obs_names[:4], "donor"] = np.nan
    with pytest.raises(InputError, match="'donor' has no value for 4 of 60 cells: give those cells a batch"):
        harmony(adata, "donor")
    assert "X_pca_harmony" not in adata.obsm
    with pytest.raises(InputError, match="theta"):
        HarmonyParams(theta=-1)
    with pytest.raises(InputError, match="method is one of harmony"):
        integrate.IntegrateParams(input="x", batch_key="donor", method="scvi")


def test_the_job_kind_and_the_flags_read_one_dataclass(tmp_path):
    assert jobs.JOB_KINDS["integrate"].run is integrate.run and "integrate" in jobs.KINDS
    args = build_parser().parse_args(["integrate", "in.h5ad", "--batch-key", "donor", "--method", "harmony",
                                      "-o", "out.h5ad"])
    for name in ("method", "use_rep", "key_added", "theta", "max_iter", "seed", "n_comps", "min_genes"):
        assert getattr(args, name) == integrate.IntegrateParams.default(name), name
    make_counts(n_cells=20).write_h5ad(tmp_path / "counts.h5ad")
    checked = jobs.checked_params("integrate", {"input": str(tmp_path / "counts.h5ad"), "batch_key": "batch",
                                                "theta": 1})
    params = integrate.IntegrateParams(input=str((tmp_path / "counts.h5ad").resolve()), batch_key="batch", theta=1.0)
    assert checked == params.asdict() and integrate.IntegrateParams.from_dict(checked) == params
    assert jobs.default_parameters("integrate")["batch_key"] == ""  # required: the Jobs page asks for it
    with pytest.raises(InputError, match="needs batch_key"):
        jobs.checked_params("integrate", {"input": str(tmp_path / "counts.h5ad")})


def test_cli_integrates_raw_counts_after_their_pca_and_refuses_one_batch(tmp_path):
    adata = make_counts(n_cells=200)
    adata.obs["run"] = pd.Categorical(["run1"] * adata.n_obs)
    path, out = tmp_path / "counts.h5ad", tmp_path / "integrated.h5ad"
    adata.write_h5ad(path)
    result = run_cli("integrate", path, "--batch-key", "batch", "--method", "harmony", "-o", out, "--min-genes", "0")
    assert result.returncode == 0, result.stderr
    assert "2 batches of obs['batch']" in result.stdout and "X_pca_harmony" in result.stdout
    written = ad.read_h5ad(out)
    assert written.obsm["X_pca_harmony"].shape == written.obsm["X_pca"].shape
    assert written.uns["X_pca_harmony"]["batch_key"] == "batch" and "preprocess" in written.uns

    refused = run_cli("integrate", path, "--batch-key", "run", "-o", tmp_path / "never.h5ad")
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "single value (run1)" in refused.stderr
    assert not (tmp_path / "never.h5ad").exists()


def test_analyse_adds_harmony_and_its_layout_cached_by_content(tmp_path):
    adata = make_counts(n_cells=200)
    plain_params = PipelineParams(preprocess=PreprocessParams(min_genes=0))
    params = replace(plain_params, batch_key="batch")
    plain = analyse(adata, plain_params, DiskCache(tmp_path))
    integrated = analyse(adata, params, DiskCache(tmp_path))
    assert "X_pca_harmony" in integrated.adata.obsm and "X_umap_pca_harmony" in integrated.layouts()
    assert "X_pca_harmony" in integrated.indexes and integrated.adata.uns["X_pca_harmony"]["batch_key"] == "batch"
    assert "X_pca_harmony" not in plain.adata.obsm and integrated.key != plain.key
    again = DiskCache(tmp_path)
    reopened = analyse(adata, params, again)
    assert again.computed == 0
    np.testing.assert_array_equal(reopened.adata.obsm["X_pca_harmony"], integrated.adata.obsm["X_pca_harmony"])
    adata.obs["run"] = pd.Categorical(["run1"] * adata.n_obs)
    with pytest.raises(InputError, match="'run' has a single value"):
        analyse(adata, replace(plain_params, batch_key="run"), DiskCache(tmp_path))


def test_a_pca_knockout_moved_into_harmony_keeps_its_moves():
    adata = batched_embedding(90)
    harmony(adata, "donor")
    cells = np.array([3, 7, 40])
    original = adata.obsm["X_pca"][cells].astype(np.float64)
    result = KnockoutResult(["G"], "pca", cells, np.array([], dtype=int), original, original + 0.5)
    moved = corrected_knockout(result, adata.obsm["X_pca"], adata.obsm["X_pca_harmony"])
    np.testing.assert_allclose(moved.original, adata.obsm["X_pca_harmony"][cells], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(moved.shift, result.shift)
