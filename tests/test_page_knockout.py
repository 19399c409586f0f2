"""AppTest for the Knockout page on the demo: a knockout beside both baselines, bad input, and a small goal screen."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from sccore.models import EncoderConfig
from tests.conftest import ROOT, rendered


pytestmark = pytest.mark.usefixtures("app_folders")


def tables(app: AppTest, column: str) -> list:
    """The tables shown that have ``column``, in page order."""
    return [frame.value for frame in app.dataframe if column in frame.value.columns]


def column_help(app: AppTest, column: str) -> str:
    """The help (tooltip) of ``column`` in the first table shown that has it."""
    frame = next(frame for frame in app.dataframe if column in frame.value.columns)
    return json.loads(frame.proto.columns or "{}").get(column, {}).get("help", "")


def knockout_page(gene: str = "", column: str = "cell_type", value: str = "CD14+ Monocyte") -> AppTest:
    """The page with a gene typed in and a population chosen (not run yet)."""
    app = AppTest.from_file(str(ROOT / "pages/knockout.py"), default_timeout=300).run()
    assert not app.exception, [e.value for e in app.exception]
    app.selectbox(key="ko_pop_column").set_value(column).run()
    app.selectbox(key="ko_pop_value").set_value(value)
    app.text_input(key="ko_gene_text").set_value(gene).run()
    return app


def test_knockout_of_a_marker_shows_encoder_and_both_baselines(monkeypatch):
    from sccore.perturb import LinearPerturber

    built = []
    prepare = LinearPerturber.__post_init__
    monkeypatch.setattr(LinearPerturber, "__post_init__", lambda self: built.append(self.method) or prepare(self))
    app = knockout_page("LYZ")
    assert not app.error, [e.value for e in app.error]
    app.button(key="ko_run").click().run()
    assert len(built) <= 2  # each baseline's perturber built once (or kept from another session), not per use
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    (summary,) = tables(app, "n_not_expressed")
    assert list(summary["method"]) == ["Encoder", "PCA baseline", "Linear baseline"]
    assert (summary["n_cells"] > 100).all() and (summary["n_not_expressed"] == summary["n_not_expressed"][0]).all()
    assert (summary["mean_shift"] > 0).all() and (summary["mean_cosine"] < 1).all()
    assert any("do not express LYZ" in m.value for m in app.markdown)
    assert "1 − cosine" in column_help(app, "mean_shift") and column_help(app, "mean_cosine")
    assert any("cannot say whether the encoder beats the baselines" in info.value for info in app.info)
    expression_tables = tables(app, "predicted_log_change")  # the predicted expression changes, one per method
    # one UMAP with arrows per method (one cell type: no bars), and each method's expression-change bars
    assert len(app.get("plotly_chart")) == 3 + len(expression_tables)
    app.run()  # a rerun shows the same result again (kept in session_state)
    assert tables(app, "n_not_expressed")[0].equals(summary)


def test_a_knockout_shows_each_methods_predicted_expression_changes():
    app = knockout_page("LYZ")
    app.button(key="ko_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    has_decoder = EncoderConfig.from_json(ROOT / "assets/demo_model/config.json").has_decoder
    assert len(tables(app, "predicted_log_change")) == int(has_decoder)  # only the open tab (the encoder's) is drawn
    expression_tables = []
    for tab in ("Encoder", "PCA baseline", "Linear baseline"):  # opening a tab reruns the page and draws its content
        app.session_state["ko_expression_tab"] = tab
        app.run()
        expression_tables += tables(app, "predicted_log_change")
    assert len(expression_tables) == (3 if has_decoder else 2)  # PCA and linear always, the encoder with a decoder
    for table in expression_tables:
        assert 0 < len(table) <= 20 and "LYZ" not in set(table["gene"])  # the knocked-out gene is left out
        assert table["predicted_log_change"].is_monotonic_decreasing and (table["predicted_log_change"] != 0).all()
    if not has_decoder:
        assert any("no expression decoder" in info.value and "shifts only" in info.value for info in app.info)
    downloads = [element for element in app.get("download_button") if "ko_expression_csv" in str(element.proto.id)]
    assert len(downloads) == 1  # the open tab's (the linear baseline's)
    assert any("LYZ itself: predicted change -" in caption.value for caption in app.caption)


def test_overexpression_runs_the_encoder_alone_and_says_why():
    app = knockout_page("LYZ")
    app.radio(key="ko_mode").set_value("overexpress").run()
    app.button(key="ko_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    (summary,) = tables(app, "n_not_expressed")
    assert list(summary["method"]) == ["Encoder"]
    assert any("model deletion only" in info.value for info in app.info)


def test_misspelt_gene_shows_a_suggestion_and_stays_up():
    app = knockout_page("LYZZ")
    assert not app.exception
    assert "Did you mean LYZ" in rendered(app.error[0].value)
    assert app.button(key="ko_run").disabled


def test_gene_not_expressed_in_the_population_shows_an_error():
    app = knockout_page("SPIB")  # a B-cell gene with no counts in the CD14+ monocytes
    app.button(key="ko_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.error) == 1 and "not expressed in any of the" in rendered(app.error[0].value)


def test_small_screen_with_a_goal_ranks_genes_by_goal_alignment():
    app = knockout_page()
    app.selectbox(key="sc_pop_column").set_value("cell_type").run()
    app.selectbox(key="sc_pop_value").set_value("CD14+ Monocyte")
    app.number_input(key="sc_top").set_value(10)
    app.number_input(key="sc_max_cells").set_value(20)
    app.toggle(key="sc_goal").set_value(True).run()
    app.selectbox(key="sc_goal_column").set_value("cell_type").run()
    assert app.selectbox(key="sc_goal_value").value != "CD14+ Monocyte"  # the default goal differs from the start
    app.selectbox(key="sc_goal_value").set_value("Dendritic")
    app.button(key="sc_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    ranked = tables(app, "goal_alignment")
    assert len(ranked) == 3  # encoder, pca, linear
    for table in ranked:
        assert 0 < len(table) <= 10 and "goal_alignment" in table and "goal_cosine_gain" in table
        assert table["goal_alignment"].is_monotonic_decreasing
    assert len(tables(app, "spearman_rho")[0]) == 3
    assert "rankings" in column_help(app, "spearman_rho") and "FDR" in column_help(app, "fdr")
    assert any("the screened genes" in m.value for m in app.markdown)  # the honest note on the encoder vs linear
    assert not app.warning  # complete, not partial
    app.selectbox(key="sc_goal_value").set_value("CD14+ Monocyte").run()
    app.button(key="sc_run").click().run()  # the goal equals the start
    assert not app.exception
    assert "same as the start" in rendered(app.error[0].value)


def test_first_order_screen_marks_which_rows_are_exact():
    app = knockout_page()
    app.multiselect(key="sc_methods").set_value(["encoder"])
    app.number_input(key="sc_top").set_value(60)
    app.number_input(key="sc_max_cells").set_value(5).run()
    app.radio(key="sc_estimate").set_value("first-order")
    app.button(key="sc_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    (ranked,) = tables(app, "estimate")
    assert len(ranked) == 60 and (ranked["estimate"] == "exact").sum() == 50
