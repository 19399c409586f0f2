"""AppTest for the Search & transfer page on the demo: similar cells, label transfer, mapping, and bad input."""

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sccore.pp import default_params, preprocess
from tests.conftest import ROOT, rendered

pytestmark = pytest.mark.usefixtures("app_folders")


def search_page() -> AppTest:
    app = AppTest.from_file(str(ROOT / "pages/search.py"), default_timeout=300).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def column_help(app: AppTest, column: str) -> str:
    """The help (tooltip) of ``column`` in the first table shown that has it."""
    frame = next(frame for frame in app.dataframe if column in frame.value.columns)
    return json.loads(frame.proto.columns or "{}").get(column, {}).get("help", "")


def table(app: AppTest, *columns: str):
    """The first table shown that has all ``columns``."""
    return next(frame.value for frame in app.dataframe if set(columns) <= set(frame.value.columns))


def marks(app: AppTest) -> dict[str, dict]:
    """The groups of cells marked on the page's layout viewer (dashboard/viewer.py), by their legend label."""
    viewers = app.get("bidi_component")
    assert len(viewers) == 1, "one layout viewer on the page"
    return {group["label"]: group for group in json.loads(viewers[0].proto.json)["marks"]}


def test_similar_cells_of_a_cell_and_of_a_group_with_their_composition():
    app = search_page()
    assert not app.error, [e.value for e in app.error]
    neighbours = table(app, "cosine_similarity")
    assert len(neighbours) == 15 and neighbours["euclidean_distance"].is_monotonic_increasing
    assert "cosine" in column_help(app, "cosine_similarity") and "alike" in column_help(app, "euclidean_distance")
    assert table(app, "cell_type", "percent")["n_cells"].sum() == 15
    marked = marks(app)
    assert set(marked) == {"query (1)", "neighbours (15)"} and marked["neighbours (15)"]["shape"] == "ring"
    assert len(marked["neighbours (15)"]["x"]) == 15 and len(marked["query (1)"]["y"]) == 1
    app.radio(key="search_how").set_value("A group").run()
    app.selectbox(key="search_group_column").set_value("cell_type").run()
    app.selectbox(key="search_group_value").set_value("CD19+ B").run()
    app.radio(key="search_metric").set_value("cosine").run()
    assert not app.exception and not app.error
    neighbours = table(app, "cosine_similarity")
    assert (neighbours["cell_type"] != "CD19+ B").all()  # the group itself is left out
    assert neighbours["cosine_similarity"].is_monotonic_decreasing
    app.radio(key="search_how").set_value("Selection on the plot").run()
    assert not app.exception and not app.error
    assert any("Draw a box or lasso" in c.value for c in app.caption) and marks(app) == {}
    whole = json.loads(app.get("bidi_component")[0].proto.json)["view"]  # x0, x1, y0, y1
    middle_x = (whole[0] + whole[1]) / 2
    app.session_state["selection_X_umap"] = {"box": [{"x": [whole[0], middle_x], "y": whole[2:]}], "lasso": []}
    app.run()  # what the viewer's callback stores for a box drawn over the left half of the layout
    assert not app.exception and not app.error
    marked = marks(app)
    query = next(group for label, group in marked.items() if label.startswith("query ("))
    assert query["x"] and max(query["x"]) <= middle_x and len(marked["neighbours (15)"]["x"]) == 15
    assert table(app, "cosine_similarity")["cosine_similarity"].is_monotonic_decreasing  # the metric chosen above


def test_unknown_cell_id_shows_a_suggestion_and_the_page_stays_up():
    app = search_page()
    app.text_input(key="search_cell").set_value("AAAGCCTGGCTAAC-1x").run()
    assert not app.exception
    assert "Did you mean AAAGCCTGGCTAAC-1" in rendered(app.error[0].value)
    assert app.get("bidi_component")  # the UMAP is still drawn


def test_label_transfer_within_the_demo_scores_it_and_refuses_a_bad_label_key():
    app = search_page()
    assert app.radio(key="tr_split").value.startswith("A random half")  # the demo has no donors
    app.button(key="tr_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    accuracy = next(float(m.value) for m in app.metric if m.label == "Accuracy")
    assert 0.6 < accuracy <= 1.0
    assert all(m.proto.help for m in app.metric)  # plain-language help beside every number
    assert len(table(app, "recall")) == 10 and "share" in column_help(app, "recall")
    by_embedding = table(app, "embedding", "accuracy")
    assert set(by_embedding["embedding"]) == {"X_pca", "X_encoder"} and column_help(app, "macro_f1")
    assert any("label-transfer accuracy" in info.value for info in app.info)  # the honest note
    app.slider(key="tr_threshold").set_value(0.95).run()  # a stricter threshold: more unassigned, no recomputation
    assert int(next(m.value for m in app.metric if m.label == "Unassigned").replace(",", "")) > 0
    app.selectbox(key="tr_label").set_value("full_total_umis").run()
    app.button(key="tr_run").click().run()
    assert not app.exception
    assert "identifier or a measurement" in rendered(app.error[0].value)


def test_label_transfer_with_another_dataset_both_ways_and_one_without_shared_genes(demo):
    kept = preprocess(demo, default_params(demo))  # the demo after quality control: the page's reference
    folder = Path(os.environ["SCCORE_DATA_DIRS"])
    demo[::5].copy().write_h5ad(folder / "demo_subset.h5ad")
    renamed = demo[::5].copy()
    renamed.var_names = [f"ENSG{i:011d}" for i in range(renamed.n_vars)]
    renamed.write_h5ad(folder / "renamed.h5ad")
    app = search_page()
    app.selectbox(key="map_file").set_value(f"{folder.name}/demo_subset.h5ad").run()
    app.button(key="map_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    # the demo's own cells map exactly onto their embedding; the demo's labels overlap, so kNN gets ~0.8 of them
    assert float(next(m.value for m in app.metric if m.label == "Accuracy")) > 0.7
    genes = f"{kept.n_vars} of the {kept.n_vars} genes"
    assert any(genes in info.value and "full_total_umis" in info.value for info in app.info), [i.value for i in app.info]
    assert len(app.get("plotly_chart")) == 2 and app.get("bidi_component")  # confusion matrix, mapped cells; search
    app.selectbox(key="map_rep").set_value("X_encoder").run()  # the demo encoder embeds the mapped cells
    app.slider(key="tr_threshold").set_value(0.0)  # every cell assigned (the demo encoder's votes are less sure)
    app.button(key="map_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert float(next(m.value for m in app.metric if m.label == "Accuracy")) > 0.7
    app.selectbox(key="map_file").set_value(f"{folder.name}/renamed.h5ad").run()
    app.button(key="map_run").click().run()
    assert not app.exception
    assert "Only 0 of the dataset's 765 genes" in rendered(app.error[0].value)  # the encoder's vocabulary
    app.selectbox(key="map_rep").set_value("X_pca").run()
    app.button(key="map_run").click().run()
    assert not app.exception
    assert "shares no genes" in rendered(app.error[0].value)
    app.selectbox(key="map_file").set_value(f"{folder.name}/demo_subset.h5ad")
    app.radio(key="map_direction").set_value("The other dataset").run()  # label the whole demo from the subset
    app.selectbox(key="map_label").set_value("cell_type")
    app.button(key="map_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert next(m.value for m in app.metric if m.label == "Query cells") == f"{kept.n_obs:,}"
    assert float(next(m.value for m in app.metric if m.label == "Accuracy")) > 0.5


def test_a_fine_tuned_model_shows_its_classifier_beside_the_knn_vote(demo):
    from sccore.models import FinetuneConfig, finetune

    tuned = Path(os.environ["SCCORE_MODEL_DIR"]) / "demo-tuned"
    finetune(demo[::2].copy(), ROOT / "assets/demo_model", "cell_type", tuned, FinetuneConfig(epochs=2, device="cpu"))
    folder = Path(os.environ["SCCORE_DATA_DIRS"])
    demo[1::5].copy().write_h5ad(folder / "demo_tuned_query.h5ad")
    app = AppTest.from_file(str(ROOT / "pages/search.py"), default_timeout=600)
    app.session_state["encoder_model"] = str(tuned)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    app.selectbox(key="tr_label").set_value("cell_type")
    app.selectbox(key="tr_rep").set_value("X_encoder").run()
    app.button(key="tr_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    scores = table(app, "method", "accuracy", "macro_f1")
    assert list(scores["method"]) == ["classifier", "kNN vote"] and scores["accuracy"].between(0, 1).all()
    cells = table(app, "classifier", "classifier_probability", "knn_vote")
    assert cells["classifier_probability"].between(0, 1).all()
    assert scores["accuracy"][0] == pytest.approx((cells["classifier"] == cells["true"]).mean())
    assert scores["accuracy"][1] == pytest.approx((cells["knn_vote"] == cells["true"]).mean())
    assert any("fine-tuned to predict obs['cell_type']" in caption.value for caption in app.caption)
    app.selectbox(key="map_file").set_value(f"{folder.name}/demo_tuned_query.h5ad")
    app.selectbox(key="map_label").set_value("cell_type")
    app.selectbox(key="map_rep").set_value("X_encoder").run()  # the other dataset's cells, embedded by the model
    app.button(key="map_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    mapped = [frame.value for frame in app.dataframe if {"classifier", "knn_vote"} <= set(frame.value.columns)]
    assert len(mapped) == 2 and len(mapped[1]) == len(demo[1::5])  # the transfer within, then the mapped cells'
