"""AppTest for every page: it renders on the demo, reacts to its widgets, and stays up on bad input."""

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, make_counts, rendered

TIMEOUT = 240


pytestmark = pytest.mark.usefixtures("app_folders")


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / name), default_timeout=TIMEOUT)


def assert_clean(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]


def test_app_opens_on_the_demo_home_page():
    app = page("app.py").run()
    assert_clean(app)
    assert any("700 PBMCs" in s.value for s in app.subheader)
    assert app.metric[0].value == "700"


def test_home_page_switches_to_a_data_folder_file(tmp_path, monkeypatch):
    folder = tmp_path / "datasets"
    folder.mkdir()
    make_counts().write_h5ad(folder / "mine.h5ad")
    monkeypatch.setenv("SCCORE_DATA_DIRS", str(folder))
    app = page("pages/home.py").run()
    app.radio(key="home_choice").set_value("A file from the data folder").run()
    app.button[0].click().run()
    assert_clean(app)
    assert app.metric[0].value == "300"


def test_home_page_reports_a_bad_file_and_stays_up():
    bad = Path(os.environ["SCCORE_DATA_DIRS"]) / "bad.h5ad"
    bad.write_text("cell,gene\n")
    app = page("pages/home.py")
    app.session_state["source"] = str(bad)
    app.run()
    assert not app.exception
    assert "not an HDF5" in rendered(app.error[0].value)
    assert app.radio(key="home_choice").value.startswith("Demo")


def test_data_page_shows_qc_and_applies_new_filters():
    app = page("pages/data.py").run()
    assert_clean(app)
    comparison, steps = app.dataframe[0].value, app.dataframe[1].value
    assert comparison["rule"].tolist() == ["outliers (5 MADs)", "thresholds"]
    assert steps["cells_left"].iloc[-1] == 700 - comparison["cells removed"].iloc[0]  # the outlier rule applied
    app.radio(key="qc_rule").set_value("thresholds").run()
    app.number_input(key="min_genes").set_value(1200).run()  # minimum detected genes (whole transcriptome)
    comparison = app.dataframe[0].value
    assert comparison["detected genes"].iloc[1] == comparison["cells removed"].iloc[1] > 0  # before applying
    assert app.dataframe[1].value["cells_left"].iloc[-1] == 700 - comparison["cells removed"].iloc[0]
    app.button(key="apply_qc").click().run()
    assert_clean(app)
    assert app.dataframe[1].value["cells_left"].iloc[-1] == 700 - comparison["cells removed"].iloc[1]


def test_data_page_of_a_new_file_waits_for_qc_and_pca_only(monkeypatch):
    import sccore.workflow
    from dashboard import state

    path = Path(os.environ["SCCORE_DATA_DIRS"]) / "qc-only.h5ad"
    make_counts(seed=7).write_h5ad(path)

    def no_layout(*args, **kwargs):  # neighbours and UMAP: tens of seconds on a new server for what QC never shows
        raise AssertionError("the Data & QC page lays nothing out")

    monkeypatch.setattr(sccore.workflow, "add_neighbors_and_layout", no_layout)
    warm_ups = []
    monkeypatch.setattr(state, "warm_up_in_background", warm_ups.append)
    app = page("pages/data.py")
    app.session_state["source"] = str(path)
    app.run()
    assert_clean(app)
    assert app.dataframe[1].value["cells_left"].iloc[0] == 300
    assert warm_ups == ["layouts"]  # new data: its layouts will be computed, so numba compiles them meanwhile
    state._prepared.clear()  # as after a server restart: the results are on disk, so no compilation is in the way
    app.run()
    assert_clean(app)
    assert warm_ups == ["layouts"]


def test_data_page_warns_when_a_step_removes_more_than_half_of_the_cells():
    app = page("pages/data.py")
    app.session_state["preprocess_overrides"] = {"qc_rule": "thresholds", "max_pct_mito": 1.0}
    app.run()
    assert_clean(app)
    assert any("mitochondrial cut removed" in warning.value and "--qc-rule outliers" in warning.value
               for warning in app.warning)


def test_data_page_recovers_from_filters_that_remove_every_cell():
    app = page("pages/data.py")
    app.session_state["preprocess_overrides"] = {"qc_rule": "thresholds", "min_genes": 20000}
    app.run()
    assert not app.exception and "removed every cell" in rendered(app.error[0].value)
    app.button[0].click().run()  # "Reset the filters to their defaults"
    assert_clean(app)


def test_explore_page_colours_by_annotation_and_gene_and_compares_layouts():
    app = page("pages/explore.py").run()
    assert_clean(app)
    assert app.selectbox(key="color_column").value == "cell_type"
    app.radio(key="color_mode").set_value("Gene").run()
    app.selectbox(key="color_gene").set_value("CD79A").run()
    assert_clean(app)
    app.toggle(key="compare").set_value(True).run()
    assert_clean(app)
    assert app.selectbox(key="layout_b").value != app.selectbox(key="layout_a").value


def test_explore_page_without_categorical_annotations():
    adata = make_counts()
    adata.obs = adata.obs[[]]
    path = Path(os.environ["SCCORE_DATA_DIRS"]) / "plain.h5ad"
    adata.write_h5ad(path)
    app = page("pages/explore.py")
    app.session_state["source"] = str(path)
    app.session_state["preprocess_overrides"] = {"min_genes": 0}
    app.run()
    assert_clean(app)
    assert app.radio(key="color_mode").options == ["Gene"]


def test_encoder_page_shows_the_device_and_the_demo_model():
    app = page("pages/encoder.py").run()
    assert_clean(app)
    assert any("Computing on" in info.value for info in app.info)
    assert any("embedded with this model" in s.value for s in app.success)


def test_encoder_page_trains_a_model_and_embeds_with_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SCCORE_MODEL_DIR", str(tmp_path / "models"))
    app = page("pages/encoder.py").run()
    app.number_input(key="train_epochs").set_value(0.2)
    app.text_input(key="train_name").set_value("tiny-run")
    app.button[-1].click().run()  # the form's Train button
    assert_clean(app)
    assert (tmp_path / "models" / "tiny-run" / "model.safetensors").exists()
    assert app.session_state["encoder_model"] == str(tmp_path / "models" / "tiny-run")
    assert app.selectbox(key="model_choice").value == "tiny-run"


def test_explore_page_shows_encoder_umap_beside_pca_on_the_demo():
    app = page("pages/explore.py").run()
    assert_clean(app)
    assert app.toggle(key="compare").value is True
    assert app.selectbox(key="layout_b").value == "X_umap_encoder"
    assert any("neighbour agreement by cell_type" in info.value for info in app.info)  # encoder vs PCA, honestly


def viewer_data(app: AppTest, position: int = 0) -> dict:
    """What the page sent to its ``position``-th layout viewer (dashboard/viewer.py): image, view, legend..."""
    return json.loads(app.get("bidi_component")[position].proto.json)


def test_explore_page_draws_the_view_the_user_zoomed_or_panned_to():
    from sccore.render import View

    app = page("pages/explore.py").run()
    whole, other = viewer_data(app), viewer_data(app, 1)
    x0, x1, y0, y1 = whole["view"]
    assert whole["legend"] and whole["size"] == [800, 600] and whole["image"].startswith("data:image/png;base64,")
    zoomed = View((x0 + (x1 - x0) / 4, x0 + (x1 - x0) / 2), (y0 + (y1 - y0) / 4, y0 + (y1 - y0) / 2), 800, 600)
    app.session_state["view_X_umap"] = zoomed  # where the viewer's callback stores a wheel zoom or a drag
    app.run()
    assert_clean(app)
    shown = viewer_data(app)
    assert shown["view"] == [*zoomed.x_range, *zoomed.y_range] and shown["image"] != whole["image"]
    assert viewer_data(app, 1)["view"] == other["view"]  # the layout beside it keeps its own view
    app.button(key="reset_a").click().run()
    assert viewer_data(app)["view"] == whole["view"] and viewer_data(app)["image"] == whole["image"]


def test_presentation_mode_renders_the_app_and_explore():
    app = page("app.py").run()
    assert_clean(app)
    assert app.toggle(key="presentation_toggle").value is False
    assert not any("font-size: 20px" in m.value for m in app.markdown)
    app = page("app.py")
    app.session_state["presentation_mode"] = True  # AppTest drops app.py's sidebar on a rerun, so start with it on
    app.run()
    assert_clean(app)
    assert app.toggle(key="presentation_toggle").value is True
    assert any("font-size: 20px" in m.value for m in app.markdown)
    explore = page("pages/explore.py")
    explore.session_state["presentation_mode"] = True
    explore.run()
    assert_clean(explore)
    assert explore.get("bidi_component")  # the layout viewer (dashboard/viewer.py)
