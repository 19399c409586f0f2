"""AppTest of the guided tour (``dashboard/tour.py``) on the demo: each step sets up its page and shows what its
text says, Back and Next move between steps, and leaving keeps every value and result."""

import re

import numpy as np
import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from dashboard import tour
from sccore.glossary import baseline_note
from tests.conftest import ROOT, make_counts

pytestmark = pytest.mark.usefixtures("app_folders")


@pytest.fixture(autouse=True)
def navigation_only(monkeypatch):
    """Every run goes through app.py's st.navigation, as on a server once app.py has run: AppTest otherwise resets
    Streamlit's legacy pages/ folder mode before each run and then runs a page's file without app.py."""
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        PagesManager.uses_pages_directory = False
        original(self, *args, **kwargs)

    monkeypatch.setattr(PagesManager, "__init__", init)


def app_test() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)


def clean(app: AppTest) -> AppTest:
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert not app.warning, [w.value for w in app.warning]  # e.g. a widget given a value twice
    return app


def on_step(app: AppTest, index: int, title: str) -> None:
    """The panel shows step ``index`` over the page titled ``title``."""
    assert app.session_state[tour.STEP] == index
    assert f"step {index + 1} of {len(tour.STEPS)}: {tour.STEPS[index].title}" in app.markdown[0].value
    assert app.title[0].value == title


def table_with(app: AppTest, column: str) -> list:
    return [frame.value for frame in app.dataframe if column in frame.value.columns]


def test_the_text_of_the_knockout_step_matches_the_demo(demo):
    expressing = np.asarray((demo[:, "FCGR3A"].X > 0).todense()).ravel()
    types = demo.obs["cell_type"].astype(str).to_numpy()
    assert round(100 * expressing[types == "CD14+ Monocyte"].mean()) == 96
    assert round(100 * expressing[types == "Dendritic"].mean()) == 22
    assert "96 %" in tour.STEPS[3].text and "22 %" in tour.STEPS[3].text
    assert demo.obs_names[0] == tour.SEARCH_CELL and types[0] == "CD14+ Monocyte"


def test_the_tour_walks_every_step_and_leaves_everything_as_it_is():
    app = clean(app_test().run())
    assert all("in place of" not in caption.value for caption in app.caption)  # the demo is open already
    app.session_state["selection_X_umap"] = {"box": [{"x": [0, 1], "y": [0, 1]}], "lasso": []}  # drawn before
    app.button(key="tour_start").click().run()
    clean(app)
    on_step(app, 0, "Explore the cells")
    assert "selection_X_umap" not in app.session_state  # every cell shown, none selected
    assert app.button(key="tour_back").disabled
    assert app.toggle(key="compare").value is False and app.selectbox(key="color_column").value == "cell_type"

    app.button(key="tour_next").click().run()
    clean(app)
    on_step(app, 1, "Explore the cells")
    assert app.toggle(key="compare").value is True and app.selectbox(key="layout_b").value == "X_umap_encoder"
    # the text points to the box, whose wording follows its own numbers (whichever embedding wins on this model)
    (note,) = [info.value for info in app.info if "neighbour agreement by cell_type" in info.value]
    first, second = (float(x) for x in re.search(r"\(([0-9.]+) vs ([0-9.]+)\)", note).groups())
    encoder, pca = (second, first) if note.startswith("The PCA baseline") else (first, second)
    assert note.startswith(baseline_note("neighbour agreement by cell_type", encoder, {"PCA baseline": pca}))

    app.button(key="tour_next").click().run()
    clean(app)
    on_step(app, 2, "Search & transfer")
    assert app.selectbox(key="search_rep").value == "X_encoder"
    (neighbours,) = table_with(app, "euclidean_distance")
    assert len(neighbours) == 15 and (neighbours["cell_type"] == "CD14+ Monocyte").sum() > 7  # "most of them"

    app.button(key="tour_next").click().run()  # the knockout runs without pressing Run
    clean(app)
    on_step(app, 3, "In-silico knockout")
    (summary,) = table_with(app, "n_not_expressed")
    shift = dict(zip(summary["method"], summary["mean_shift"]))
    assert set(shift) == {"Encoder", "PCA baseline", "Linear baseline"} and np.isfinite(list(shift.values())).all()
    # arrows in each method's UMAP, and the bars of each method's predicted expression changes
    assert len(app.get("plotly_chart")) == 3 + len(table_with(app, "predicted_log_change"))
    assert tour.RUN not in app.session_state  # the request is used up

    app.button(key="tour_next").click().run()  # the screen runs too, beside the knockout kept from the last step
    clean(app)
    on_step(app, 4, "In-silico knockout")
    assert app.multiselect(key="sc_methods").value == ["encoder", "pca", "linear"]
    ranked = table_with(app, "goal_alignment")
    assert len(ranked) == 3 and all(len(table) == 25 for table in ranked)
    assert ranked[1]["gene"].iloc[0] == "FCGR3A" and "FCGR3A" in list(ranked[2]["gene"].iloc[:2])  # PCA, linear
    assert table_with(app, "n_not_expressed")
    assert app.button(key="tour_leave").label == "End the tour"

    app.button(key="tour_back").click().run()
    clean(app)
    on_step(app, 3, "In-silico knockout")
    app.number_input(key="ko_max_cells").set_value(500).run()  # the user's own change during the tour

    app.button(key="tour_leave").click().run()
    clean(app)
    assert tour.STEP not in app.session_state
    assert app.title[0].value == "In-silico knockout"
    assert not any(b.key and b.key.startswith("tour_") for b in app.button)  # the panel is gone
    assert app.number_input(key="ko_max_cells").value == 500 and app.selectbox(key="ko_gene").value == "FCGR3A"
    assert table_with(app, "goal_alignment")  # the screen's result stays too


def test_starting_the_tour_says_it_opens_the_demo(tmp_path, monkeypatch):
    folder = tmp_path / "datasets"
    folder.mkdir()
    make_counts().write_h5ad(folder / "mine.h5ad")
    monkeypatch.setenv("SCCORE_DATA_DIRS", str(folder))
    app = app_test()
    app.session_state["source"] = str(folder / "mine.h5ad")
    clean(app.run())
    assert app.metric[0].value == "300"
    assert any("in place of what is open now" in caption.value for caption in app.caption)
    app.button(key="tour_start").click().run()
    clean(app)
    on_step(app, 0, "Explore the cells")
    assert app.session_state["source"] == "demo"


def test_leaving_at_the_first_step_keeps_the_page():
    app = clean(app_test().run())
    app.button(key="tour_start").click().run()
    app.radio(key="color_mode").set_value("Gene").run()
    app.button(key="tour_leave").click().run()
    clean(app)
    assert app.title[0].value == "Explore the cells" and app.radio(key="color_mode").value == "Gene"
    assert tour.STEP not in app.session_state
