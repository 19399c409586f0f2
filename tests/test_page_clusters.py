"""AppTest of the Clusters & markers page and of the Explore page's differential expression, on the demo: Leiden
clusters scored against the cell types, marker genes as a dot plot, a heat map, a table and a CSV, the clusters as a
colour on Explore, A against B by annotation values, and bad groups and selections answered with the fix."""

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sccore.markers import COLUMNS
from tests.conftest import ROOT, make_counts, rendered

pytestmark = pytest.mark.usefixtures("app_folders")


def run(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def table(app: AppTest, *columns: str):
    """The first table shown that has all ``columns``."""
    return next(frame.value for frame in app.dataframe if set(columns) <= set(frame.value.columns))


def element_keys(app: AppTest, kind: str) -> list[str]:
    """The ids of the ``kind`` elements shown (they end with the widget's key)."""
    return [str(element.proto.id) for element in app.get(kind)]


@pytest.fixture(scope="module")
def kept(demo):
    """The demo's cells that the default quality control keeps (the analysis every page shows)."""
    from sccore.pp import default_params, preprocess

    return preprocess(demo, default_params(demo)).obs


def test_clusters_of_the_demo_their_markers_and_their_colour_on_explore(kept):
    app = run(AppTest.from_file(str(ROOT / "app.py"), default_timeout=300))
    app.switch_page("pages/clusters.py")
    run(app)
    assert not app.error, [e.value for e in app.error]
    metrics = {metric.label: metric for metric in app.metric}
    n_clusters = int(metrics["Clusters"].value)
    assert n_clusters >= 2 and 0 < float(metrics["ARI vs cell_type"].value) <= 1
    assert "Rand" in metrics["ARI vs cell_type"].proto.help
    assert "mutual information" in metrics["NMI vs cell_type"].proto.help
    sizes = table(app, "cluster", "n_cells")
    assert sizes["n_cells"].sum() == len(kept) and len(sizes) == n_clusters
    markers = table(app, *COLUMNS)
    assert list(markers.columns) == COLUMNS and set(markers["group"]) == set(sizes["cluster"].astype(str))
    assert markers.groupby("group", observed=True).size().max() == app.slider(key="mk_top").value
    assert [key for key in ("cl_umap", "mk_dotplot", "mk_heatmap")
            if not any(element.endswith(key) for element in element_keys(app, "plotly_chart"))] == []
    assert [key for key in ("cl_csv", "mk_csv")
            if not any(element.endswith(key) for element in element_keys(app, "download_button"))] == []

    app.number_input(key="cl_resolution").set_value(2.5)
    run(app)
    assert int(next(m.value for m in app.metric if m.label == "Clusters")) > n_clusters
    app.selectbox(key="mk_grouping").set_value("cell_type")
    app.radio(key="mk_method").set_value("t-test")
    app.slider(key="mk_top").set_value(10)
    run(app)
    markers = table(app, *COLUMNS)
    assert markers["group"].nunique() == 10
    assert {"CD79A", "MS4A1", "CD79B"} & set(markers.loc[markers["group"] == "CD19+ B", "gene"])

    app.switch_page("pages/explore.py")
    run(app)
    clustering = "leiden (X_pca, resolution 2.5)"
    assert clustering in app.selectbox(key="color_column").options
    app.selectbox(key="color_column").set_value(clustering)
    run(app)
    assert not app.error
    viewers = [json.loads(viewer.proto.json) for viewer in app.get("bidi_component")]  # dashboard/viewer.py
    assert viewers and viewers[0]["title"].endswith(clustering) and viewers[0]["image"]


def test_a_group_of_one_cell_is_explained_and_the_page_stays_up():
    adata = make_counts()
    adata.obs["site"] = ["lonely"] + ["crowd"] * (adata.n_obs - 1)
    path = Path(os.environ["SCCORE_DATA_DIRS"]) / "lonely.h5ad"
    adata.write_h5ad(path)
    app = AppTest.from_file(str(ROOT / "pages/clusters.py"), default_timeout=300)
    app.session_state["source"] = str(path)
    app.session_state["preprocess_overrides"] = {"min_genes": 0, "max_pct_mito": 100}
    run(app)
    assert not app.error, [e.value for e in app.error]
    app.selectbox(key="mk_grouping").set_value("site")
    run(app)
    assert "lonely have only one cell: merge them with another group" in rendered(app.error[0].value)
    assert app.get("plotly_chart") and any(metric.label == "Clusters" for metric in app.metric)


def test_explore_compares_two_cell_types_and_refuses_empty_and_identical_sets(kept):
    app = run(AppTest.from_file(str(ROOT / "pages/explore.py"), default_timeout=300))
    app.button(key="de_run").click()
    run(app)
    assert "Set A is empty: select at least 2 cells" in rendered(app.error[0].value)
    n_plots = len(app.get("plotly_chart"))
    app.multiselect(key="de_A_values_cell_type").set_value(["CD14+ Monocyte"])
    app.multiselect(key="de_B_values_cell_type").set_value(["CD14+ Monocyte"])
    app.button(key="de_run").click()
    run(app)
    assert "A and B are the same" in rendered(app.error[0].value) and "choose other cells" in rendered(app.error[0].value)
    assert len(app.get("plotly_chart")) == n_plots  # the layouts stay

    app.multiselect(key="de_B_values_cell_type").set_value(["CD19+ B"])
    app.button(key="de_run").click()
    run(app)
    assert not app.error, [e.value for e in app.error]
    up, down = (frame.value for frame in app.dataframe if "logfoldchange" in frame.value.columns)
    assert len(up) == len(down) == 10 and (up["logfoldchange"] > 0).all() and (down["logfoldchange"] < 0).all()
    assert up["fdr"].max() < 0.05 and "CD79A" in set(down["gene"])  # B cells' marker is down in the monocytes
    assert len(app.get("plotly_chart")) == n_plots + 1  # the volcano
    assert any(element.endswith("de_csv") for element in element_keys(app, "download_button"))
    expected = kept["cell_type"].value_counts()
    assert [m.value for m in app.markdown if "cells** in" in m.value] == [
        f"**{expected['CD14+ Monocyte']} cells** in A", f"**{expected['CD19+ B']} cells** in B"]

    app.radio(key="de_A_source").set_value("Selection on the plot")
    run(app)
    assert app.button(key="de_A_use").disabled  # nothing selected on the plot yet
    assert "**0 cells** in A" in [m.value for m in app.markdown]
    app.selectbox(key="de_gene").set_value("CD79A")
    app.button(key="de_colour").click()
    run(app)
    assert app.radio(key="color_mode").value == "Gene" and app.selectbox(key="color_gene").value == "CD79A"
