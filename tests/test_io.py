import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sccore import InputError
from sccore.io import (categorical_columns, classify_matrix, open_dataset, read_h5ad, recover_counts,
                       standardise)


def test_demo_has_integer_counts_and_ten_cell_types(demo):
    assert demo.shape == (700, 765)
    values = demo.X.data
    assert np.all(values == np.round(values)) and values.min() >= 1
    assert demo.obs["cell_type"].nunique() == 10
    assert "700" in demo.uns["dataset"]["name"]
    assert demo.uns["input"]["library_size_key"] == "full_total_umis"
    # whole-transcriptome totals exceed the counts of the 765 genes held here
    assert np.all(demo.obs["full_total_umis"].to_numpy() >= np.asarray(demo.X.sum(1)).ravel())


def test_recover_counts_round_trips_lognormalised_values(counts_adata):
    counts = counts_adata.X.toarray()
    totals = counts.sum(1, keepdims=True)
    lognorm = np.log1p(counts / totals * 1e4)
    recovered = recover_counts(sp.csr_matrix(lognorm)).toarray()
    np.testing.assert_array_equal(recovered, counts)


def test_recover_counts_refuses_values_that_are_not_lognormalised_counts():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="whole counts"):
        recover_counts(sp.csr_matrix(rng.uniform(0.1, 3, (20, 30))))


@pytest.mark.parametrize("matrix, kind", [
    (np.array([[0, 1, 5], [2, 0, 3]]), "counts"),
    (np.log1p(np.array([[0, 1.5, 5], [2, 0, 3.2]])), "log-normalised"),
    (np.array([[-0.3, 1.2, 0.5], [0.7, -1.1, 0.25]]), "scaled"),
    (np.array([[0, np.nan, 5], [2, 0, 3]]), "invalid"),
    (np.array([[0, -1, 5], [2, 0, 3]]), "invalid"),
])
def test_classify_matrix(matrix, kind):
    assert classify_matrix(matrix) == kind


def test_standardise_prefers_counts_layer_and_uses_raw_when_x_is_scaled(counts_adata):
    layered = counts_adata.copy()
    layered.layers["counts"] = layered.X.copy()
    layered.X = sp.csr_matrix(np.log1p(layered.X.toarray()) + 0.01)
    assert standardise(layered).uns["input"]["counts_from"] == "layers['counts']"

    scaled = counts_adata.copy()
    scaled.raw = scaled
    dense = np.log1p(scaled.X.toarray())
    scaled.X = (dense - dense.mean(0)) / (dense.std(0) + 1e-6)
    result = standardise(scaled)
    assert result.uns["input"]["counts_from"] == ".raw.X"
    np.testing.assert_array_equal(result.X.toarray(), counts_adata.X.toarray())


def test_standardise_recovers_counts_from_lognormalised_x(counts_adata):
    lognormed = counts_adata.copy()
    counts = lognormed.X.toarray()
    lognormed.X = sp.csr_matrix(np.log1p(counts / counts.sum(1, keepdims=True) * 1e4))
    result = standardise(lognormed)
    assert any("recovered" in note for note in result.uns["input"]["notes"])
    np.testing.assert_array_equal(result.X.toarray(), counts)


def _write(adata, path):
    adata.write_h5ad(path)
    return path


def test_corrupt_and_truncated_files_give_clear_errors(tmp_path, counts_adata):
    good = _write(counts_adata, tmp_path / "good.h5ad")
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_h5ad(truncated)
    corrupt = tmp_path / "corrupt.h5ad"
    data = bytearray(good.read_bytes())
    data[2000:6000] = b"\x00" * 4000
    corrupt.write_bytes(bytes(data))
    with pytest.raises(InputError):
        open_dataset(corrupt)


def test_text_file_renamed_h5ad(tmp_path):
    path = tmp_path / "table.h5ad"
    path.write_text("gene,cell1\nCD3E,4\n")
    with pytest.raises(InputError, match="not an HDF5"):
        read_h5ad(path)


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.h5ad"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_h5ad(empty)
    with pytest.raises(InputError, match="not found"):
        read_h5ad(tmp_path / "nothing.h5ad")


def test_empty_matrix_and_single_cell(counts_adata):
    with pytest.raises(InputError, match="empty"):
        standardise(counts_adata[:0].copy())
    with pytest.raises(InputError, match="only 1 cell"):
        standardise(counts_adata[:1].copy())


def test_negative_and_nan_values(counts_adata):
    negative = counts_adata.copy()
    dense = negative.X.toarray()
    dense[0, 0] = -3
    negative.X = sp.csr_matrix(dense)
    with pytest.raises(InputError, match="negative"):
        standardise(negative)
    missing = counts_adata.copy()
    dense = missing.X.toarray()
    dense[1, 1] = np.nan
    missing.X = dense
    with pytest.raises(InputError, match="NaN"):
        standardise(missing)


def test_duplicate_gene_names_are_made_unique_with_a_note(counts_adata):
    duplicated = counts_adata.copy()
    names = list(duplicated.var_names)
    names[1] = names[0]
    duplicated.var_names = names
    result = standardise(duplicated)
    assert result.var_names.is_unique
    assert any("duplicate gene" in note for note in result.uns["input"]["notes"])


def test_no_categorical_column_is_reported(counts_adata):
    plain = counts_adata.copy()
    plain.obs = pd.DataFrame(index=plain.obs_names)
    result = standardise(plain)
    assert categorical_columns(result) == []
    assert any("No categorical obs column" in note for note in result.uns["input"]["notes"])


def test_library_size_key_is_checked(counts_adata):
    with pytest.raises(InputError, match="no column 'full_total_umis'"):
        standardise(counts_adata, library_size_key="full_total_umis")
    bad = counts_adata.copy()
    bad.obs["total"] = 0.0
    with pytest.raises(InputError, match="positive"):
        standardise(bad, library_size_key="total")


def test_open_dataset_reads_real_crispr_file(shared_data):
    adata = open_dataset(shared_data / "lowmoi_example_data.h5ad", library_size_key="full_total_umis")
    assert adata.n_vars == 299 and adata.uns["input"]["counts_from"] == "X"
    assert "perturbation" in categorical_columns(adata)


def test_a_file_is_refused_when_what_the_server_holds_leaves_no_room_for_it(counts_adata, tmp_path, monkeypatch):
    """The memory budget counts the datasets (and everything else) the process holds already, and each file at three
    times its declared arrays (the copies reading makes), however small it is on disk."""
    import h5py

    from sccore.io import memory_in_use_bytes

    path = tmp_path / "compressed.h5ad"
    counts_adata.write_h5ad(path)
    with h5py.File(path, "r+") as file:  # 50 MB of zeros once read, a few kB on disk
        file["obsm"].create_dataset("X_zeros", shape=(counts_adata.n_obs, 50 * 2**20 // 4 // counts_adata.n_obs),
                                    dtype="float32", chunks=True, compression="gzip")
    monkeypatch.setenv("SCCORE_SETTINGS", os.devnull)
    monkeypatch.setenv("SCCORE_MEMORY_BUDGET_MB", str((memory_in_use_bytes() + 400 * 2**20) // 2**20))
    assert open_dataset(path).n_obs == counts_adata.n_obs  # 3 x 50 MB fits in the 400 MB left
    another_dataset = np.ones(400 * 2**20 // 8)  # the server opens something else meanwhile
    with pytest.raises(InputError, match="this server holds .* of its .* budget already. Build a chunked atlas"):
        open_dataset(path)
    assert another_dataset.sum() > 0
    monkeypatch.setenv("SCCORE_MEMORY_BUDGET_MB", "-5")
    with pytest.raises(InputError, match="memory_budget_mb must be a whole number of megabytes"):
        open_dataset(path)
