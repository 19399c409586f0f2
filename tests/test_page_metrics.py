"""AppTest of the Metrics page: it renders on the demo, computes the table, and explains bad choices."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sccore.metrics import AGGREGATES
from tests.conftest import ROOT, make_counts, rendered

pytestmark = pytest.mark.usefixtures("app_folders")


def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "metrics.py"), default_timeout=240)


def assert_clean(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]


def test_metrics_page_computes_a_table_on_the_demo():
    app = page().run()
    assert_clean(app)
    assert app.selectbox(key="mt_label").value == "cell_type"
    assert app.selectbox(key="mt_batch").value == "phase"  # the demo has no batch; the column with fewest values
    assert app.multiselect(key="mt_embeddings").value == ["X_pca", "X_encoder"]
    assert any("does not look like a batch column" in info.value for info in app.info)
    app.button(key="mt_run").click().run()
    assert_clean(app)
    table = app.dataframe[0].value
    assert set(table.index) == {"X_pca", "X_encoder"}
    assert all(name in table.columns for name in AGGREGATES)
    assert table["total"].is_monotonic_decreasing  # methods ranked as in the scEMB / scIB tables
    config = json.loads(app.dataframe[0].proto.columns)
    assert "0.6" in config["total"]["help"] and "Rand" in config["kmeans_ari"]["help"]
    assert any("the scIB total score" in info.value for info in app.info)  # the honest note, encoder vs PCA
    assert app.get("plotly_chart") and app.get("download_button")


def test_metrics_page_explains_one_batch_and_bad_labels():
    adata = make_counts()
    adata.obs["run"] = pd.Categorical(["run1"] * adata.n_obs)
    adata.obs["cell_id"] = pd.Categorical(adata.obs_names)
    path = Path(os.environ["SCCORE_DATA_DIRS"]) / "one_batch.h5ad"  # the app opens files in its data folders only
    adata.write_h5ad(path)
    app = page()
    app.session_state["source"] = str(path)
    app.session_state["preprocess_overrides"] = {"min_genes": 0}
    app.session_state["mt_label"] = "cell_type"
    app.session_state["mt_batch"] = "run"
    app.run()
    assert_clean(app)
    assert any("single value in every cell" in warning.value for warning in app.warning)
    assert app.button(key="mt_run").disabled and app.toggle(key="mt_harmony").disabled
    app.selectbox(key="mt_label").set_value("cell_id").run()
    app.selectbox(key="mt_batch").set_value("batch").run()
    app.button(key="mt_run").click().run()
    assert not app.exception
    assert "fewer than two labels" in rendered(app.error[0].value)


def test_metrics_page_forgets_a_column_the_dataset_lacks():
    app = page()
    app.session_state["mt_label"] = "donor_from_another_file"
    app.run()
    assert_clean(app)
    assert any("no annotation 'donor_from_another_file'" in rendered(warning.value) for warning in app.warning)
    assert app.selectbox(key="mt_label").value == "cell_type"


def test_harmony_switched_on_here_is_scored_and_offered_on_the_other_pages():
    path = Path(os.environ["SCCORE_DATA_DIRS"]) / "two_batches.h5ad"
    make_counts(n_cells=240).write_h5ad(path)
    chosen = {"source": str(path), "preprocess_overrides": {"min_genes": 0}}
    app = page()
    for key, value in chosen.items():
        app.session_state[key] = value
    app.run()
    assert_clean(app)
    assert app.selectbox(key="mt_batch").value == "batch" and not app.toggle(key="mt_harmony").value
    assert "X_pca_harmony" not in app.multiselect(key="mt_embeddings").options
    app.toggle(key="mt_harmony").set_value(True).run()
    assert_clean(app)
    assert app.session_state["batch_key"] == "batch"
    assert app.multiselect(key="mt_embeddings").value == ["X_pca", "X_pca_harmony"]
    app.button(key="mt_run").click().run()
    assert_clean(app)
    assert set(app.dataframe[0].value.index) == {"X_pca", "X_pca_harmony"}

    others = {name: AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=240)
              for name in ("explore", "search", "knockout")}
    for other in others.values():
        for key, value in {**chosen, "batch_key": "batch"}.items():
            other.session_state[key] = value
        assert_clean(other.run())
    assert "X_umap_pca_harmony" in others["explore"].selectbox(key="layout_a").options
    search = others["search"]
    assert "PCA + Harmony (X_pca_harmony)" in search.selectbox(key="search_rep").options
    assert "PCA + Harmony (X_pca_harmony)" in search.selectbox(key="tr_rep").options
    assert "PCA + Harmony (X_pca_harmony)" not in search.selectbox(key="map_rep").options  # it maps no new cells
    knockout = others["knockout"]
    knockout.button(key="ko_run").click().run()
    assert_clean(knockout)
    knockout.radio(key="ko_baseline_rep").set_value("X_pca_harmony").run()
    assert_clean(knockout)
    assert any("X_umap_pca_harmony" in chart.proto.spec for chart in knockout.get("plotly_chart"))
