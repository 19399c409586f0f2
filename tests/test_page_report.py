"""AppTest for the Report page on the demo: it lists what the report holds, includes this session's knockouts and
offers the HTML file for download."""

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("app_folders")


def report_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages/report.py"), default_timeout=300)


def assert_clean(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]


def test_report_page_renders_on_the_demo_and_offers_the_download():
    app = report_page().run()
    assert_clean(app)
    assert app.get("download_button")
    assert app.checkbox(key="rp_dataset").value and app.checkbox(key="rp_versions").value
    assert app.checkbox(key="rp_knockouts").disabled  # nothing knocked out yet this session
    assert app.selectbox(key="rp_color_by").value == "cell_type"
    assert any("KB" in caption.value for caption in app.caption)
    app.checkbox(key="rp_layouts").uncheck().run()
    assert_clean(app)
    for key in ("dataset", "parameters", "baselines", "versions"):
        app.checkbox(key=f"rp_{key}").uncheck()
    app.run()
    assert not app.exception and not app.get("download_button")
    assert any("at least one section" in info.value for info in app.info)


def test_report_page_includes_the_knockouts_and_label_transfer_of_this_session(demo):
    import numpy as np

    from dashboard import session
    from sccore.cache import DiskCache
    from sccore.perturb import choose_cells, knockout
    from sccore.pp import default_params
    from sccore.transfer import knn_transfer
    from sccore.workflow import PipelineParams, analyse

    model = str(ROOT / "assets" / "demo_model")
    analysis = analyse(demo, PipelineParams(preprocess=default_params(demo), encoder_model=model),
                       DiskCache(Path(os.environ["SCCORE_CACHE_DIR"])))  # the page's analysis, from the same cache
    cells = choose_cells(analysis.adata, {"cell_type": "CD14+ Monocyte"})
    results = {method: knockout(analysis.adata, ["LYZ"], cells, method) for method in ("pca", "linear")}
    app = report_page()
    app.session_state[session.KNOCKOUTS] = {
        session.KnockoutRequest(analysis.key, model, "LYZ", ("cell_type", "CD14+ Monocyte"), "delete", 1000):
            session.KnockoutRecord(results, n_population=len(cells), n_chosen=len(cells))}
    embedding, labels = analysis.adata.obsm["X_pca"], analysis.adata.obs["cell_type"].astype(str).to_numpy()
    reference, query = np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)
    app.session_state[session.TRANSFERS] = {
        session.TransferRequest(analysis.key, "X_pca", "cell_type", "a random half of the cells", 15):
            session.TransferRecord(knn_transfer(embedding[reference], labels[reference], embedding[query], 15), query)}
    app.run()
    assert_clean(app)
    for key, text in (("rp_knockouts", "1 gene(s)"), ("rp_transfer", "1 label transfer(s)")):
        box = app.checkbox(key=key)
        assert box.value and not box.disabled and text in box.label
    assert app.get("download_button")
