"""The ``markers`` and ``de`` tasks and their subcommands on a small counts file."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sccore.errors import InputError
from sccore.markers import COLUMNS, differential_expression, rank_genes
from sccore.pp import log_normalise
from sccore.tasks import de, markers
from tests.conftest import ROOT, make_counts


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "sccore", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture
def counts(tmp_path):
    adata = make_counts(n_cells=120, n_genes=80)
    adata.obs["condition"] = np.where(np.arange(adata.n_obs) % 2, "stimulated", "control")
    adata.obs["one_group"] = "all"
    path = tmp_path / "counts.h5ad"
    adata.write_h5ad(path)
    return adata, path


def normalised(adata):
    counts = adata.X.tocsr()
    return log_normalise(counts, np.asarray(counts.sum(axis=1)).ravel())


def test_markers_cli_writes_rank_genes_on_the_normalised_counts(counts, tmp_path):
    adata, path = counts
    out = tmp_path / "markers.csv"
    result = run_cli("markers", path, "--groupby", "cell_type", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "3 groups" in result.stdout and str(out) in result.stdout
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS
    expected = rank_genes(normalised(adata), adata.var_names, adata.obs["cell_type"])
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, atol=1e-6)


def test_de_cli_prints_the_top_genes_up_in_a(counts, tmp_path):
    adata, path = counts
    out = tmp_path / "de.csv"
    result = run_cli("de", path, "--a", "cell_type=type_0", "--b", "cell_type=type_1", "-o", out,
                     "--method", "t-test")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS and len(table) == adata.n_vars and set(table["group"]) == {"A"}
    assert f"A: {', '.join(table['gene'].head(3))};" in result.stdout and str(out) in result.stdout


@pytest.mark.parametrize("command, flags, fix", [
    ("markers", ("--groupby", "cell_types"), "choose one of cell_type, batch"),
    ("markers", ("--groupby", "one_group"), "choose a column with two or more groups"),
    ("de", ("--a", "condition", "--b", "condition=control"), "write KEY=VALUE, e.g. condition=stimulated"),
    ("de", ("--a", "condition=treated", "--b", "condition=control"), "choose one of control, stimulated"),
    ("de", ("--a", "condition=control", "--b", "condition=control"), "are the same 60 cells: choose other cells"),
])
def test_bad_input_exits_2_with_one_line_naming_the_fix(counts, tmp_path, command, flags, fix):
    out = tmp_path / "out.csv"
    result = run_cli(command, counts[1], *flags, "-o", out)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fix in lines[0]
    assert not out.exists()


def test_the_tasks_run_without_the_command_line(counts, tmp_path):
    adata, path = counts
    params = markers.MarkersParams(input=str(path), groupby="condition", output=str(tmp_path / "m.csv"))
    table = markers.run(params)
    expected = rank_genes(normalised(adata), adata.var_names, adata.obs["condition"])
    pd.testing.assert_frame_equal(table, expected)
    pd.testing.assert_frame_equal(pd.read_csv(params.output), expected, check_dtype=False, atol=1e-6)
    params = de.DEParams.from_dict({"input": str(path), "a": "condition=stimulated", "b": "condition=control",
                                    "output": str(tmp_path / "de.csv")})
    stimulated = (adata.obs["condition"] == "stimulated").to_numpy()
    expected = differential_expression(normalised(adata), adata.var_names, stimulated, ~stimulated)
    pd.testing.assert_frame_equal(de.run(params), expected)


def test_the_markers_task_refuses_a_group_of_one_cell_naming_the_fix(counts, tmp_path):
    adata, _ = counts
    adata.obs["site"] = ["lonely"] + ["crowd"] * (adata.n_obs - 1)
    adata.write_h5ad(tmp_path / "lonely.h5ad")
    params = markers.MarkersParams(input=str(tmp_path / "lonely.h5ad"), groupby="site",
                                   output=str(tmp_path / "m.csv"))
    with pytest.raises(InputError, match="lonely have only one cell: merge them with another group"):
        markers.run(params)
    assert not (tmp_path / "m.csv").exists()


def test_params_are_checked():
    with pytest.raises(InputError, match="write KEY=VALUE"):
        de.DEParams(input="x.h5ad", a="condition=control", b="control")
    with pytest.raises(InputError, match="wilcoxon, t-test"):
        markers.MarkersParams(input="x.h5ad", groupby="cell_type", method="logreg")
    with pytest.raises(InputError, match="output path"):
        markers.run(markers.MarkersParams(input="x.h5ad", groupby="cell_type"))
