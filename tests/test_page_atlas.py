"""An atlas (a dataset too large for memory, built by `python -m sccore atlas`) opens from Home, is explored on the
Explore page (with differential expression) and the Clusters & markers page, and the pages that need counts in
memory say so and stay up."""

import os
import warnings
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sccore import jobs
from sccore.atlas import AtlasParams, build_atlas
from sccore.settings import LOCAL_USER
from sccore.umap import UMAPParams
from tests.conftest import ROOT, rendered

pytestmark = pytest.mark.usefixtures("app_folders")


@pytest.fixture(scope="module")
def atlas_folder(tmp_path_factory, demo):
    path = tmp_path_factory.mktemp("atlas-input") / "demo.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo.write_h5ad(path)
    folder = tmp_path_factory.mktemp("atlas-data") / "pbmc_atlas"
    build_atlas(path, folder, AtlasParams(chunk_cells=300, umap=UMAPParams(n_neighbors=10), recall_queries=100))
    return folder


@pytest.fixture
def data_dir_with_atlas(atlas_folder, monkeypatch):
    monkeypatch.setenv("SCCORE_DATA_DIRS", str(atlas_folder.parent))
    return str(atlas_folder)


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / name), default_timeout=240)


def assert_clean(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]


def test_home_opens_an_atlas_from_the_data_folder(data_dir_with_atlas):
    app = page("pages/home.py").run()
    app.radio(key="home_choice").set_value("An atlas (large data)").run()
    assert app.selectbox[0].options == [f"{Path(data_dir_with_atlas).parent.name}/pbmc_atlas"]
    next(button for button in app.button if button.label == "Open atlas").click().run()
    assert_clean(app)
    assert app.session_state["source"] == data_dir_with_atlas
    assert any("An atlas: 700 cells after quality control, of 700" in info.value for info in app.info)
    assert app.metric[0].value == "700"


def test_explore_colours_an_atlas_by_annotation_and_gene(data_dir_with_atlas):
    app = page("pages/explore.py")
    app.session_state["source"] = data_dir_with_atlas
    app.run()
    assert_clean(app)
    assert app.selectbox(key="layout_a").options == ["X_umap", "X_pca (PC1 vs PC2)"]
    assert app.selectbox(key="color_column").value == "cell_type"
    app.radio(key="color_mode").set_value("Gene").run()
    app.selectbox(key="color_gene").set_value("LYZ").run()
    assert_clean(app)
    assert len(app.get("bidi_component")) == 1  # the layout viewer (dashboard/viewer.py)


def test_search_finds_similar_cells_in_an_atlas(data_dir_with_atlas):
    app = page("pages/search.py")
    app.session_state["source"] = data_dir_with_atlas
    app.run()
    assert_clean(app)
    assert any("15 nearest cells" in markdown.value for markdown in app.markdown)
    assert any("is an atlas" in info.value and "sccore transfer" in info.value for info in app.info)
    app.button(key="tr_run").click().run()
    assert_clean(app)


def test_clusters_markers_and_differential_expression_of_an_atlas(data_dir_with_atlas):
    """Leiden on the atlas's stored graph, marker genes and DE read from its gene store on disk."""
    app = page("pages/clusters.py")
    app.session_state["source"] = data_dir_with_atlas
    app.run()
    assert_clean(app)
    assert int(next(metric.value for metric in app.metric if metric.label == "Clusters")) >= 2
    markers = next(frame.value for frame in app.dataframe if "pct_in" in frame.value.columns)
    assert len(markers) and markers["fdr"].min() < 0.05
    explore = page("pages/explore.py")
    explore.session_state["source"] = data_dir_with_atlas
    explore.run()
    explore.multiselect(key="de_A_values_cell_type").set_value(["CD14+ Monocyte"])
    explore.multiselect(key="de_B_values_cell_type").set_value(["CD19+ B"])
    explore.button(key="de_run").click().run()
    assert_clean(explore)
    up, down = (frame.value for frame in explore.dataframe if "logfoldchange" in frame.value.columns)
    assert "CD79A" in set(down["gene"]) and (up["logfoldchange"] > 0).all()


@pytest.mark.parametrize("name", ["pages/knockout.py", "pages/data.py", "pages/metrics.py"])
def test_pages_that_need_counts_say_so_for_an_atlas(data_dir_with_atlas, name):
    app = page(name)
    app.session_state["source"] = data_dir_with_atlas
    app.run()
    assert_clean(app)
    assert any("is an atlas" in info.value and "Explore" in info.value for info in app.info)


def test_an_atlas_outside_the_data_folders_is_refused(atlas_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("SCCORE_DATA_DIRS", str(tmp_path))
    app = page("pages/explore.py")
    app.session_state["source"] = str(atlas_folder)
    app.run()
    assert not app.exception
    assert app.error and "data folder" in rendered(app.error[0].value)


def test_an_atlas_built_by_the_user_s_job_is_offered_and_opens(atlas_folder, tmp_path, monkeypatch):
    """A finished ``atlas`` job's folder (in the cache, outside the data folders) is offered on Home to its user,
    and to no one else."""
    monkeypatch.setenv("SCCORE_DATA_DIRS", str(tmp_path))
    store = jobs.JobStore(os.environ["SCCORE_CACHE_DIR"])
    store.write(jobs.JobRecord(id="20261121-000000-abcdef", user=LOCAL_USER, kind="atlas",
                               params={"input": "/data/big.h5ad"}, status="finished", result=str(atlas_folder)))
    store.write(jobs.JobRecord(id="20261121-000000-fedcba", user="someone-else", kind="atlas",
                               params={"input": "/data/theirs.h5ad"}, status="finished", result=str(atlas_folder)))
    app = page("pages/home.py").run()
    app.radio(key="home_choice").set_value("An atlas (large data)").run()
    assert app.selectbox[0].options == ["job 20261121-000000-abcdef: big.h5ad"]
    next(button for button in app.button if button.label == "Open atlas").click().run()
    assert_clean(app)
    assert any("An atlas: 700 cells" in info.value for info in app.info)
