"""AppTest of the Knockout page's screen and the Encoder page's training with "Run in the background" on: they run
as jobs on a local Dask cluster, the page shows their progress and then their result, also after a refresh; and
the Jobs page's Submit on that cluster."""

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import background, cached
from sccore import jobs
from tests.conftest import ROOT, certificate_settings, make_counts


@pytest.fixture(scope="module")
def scheduler():
    """A local cluster of one worker process; the settings name its scheduler, as a lab's would be, and Dask's
    settings its certificate."""
    client = jobs.connect()
    with certificate_settings(client):
        yield client.scheduler.address
    background.dask_client(client.scheduler.address).close()  # the app's client to it
    background._dask_client.clear()
    jobs.close(client)


@pytest.fixture(autouse=True)
def own_folders(app_folders, scheduler, tmp_path, monkeypatch):
    """The app's temporary folders, a cache folder of this test's own (no other test's jobs show) and the cluster;
    no screen remembered from another test."""
    monkeypatch.setenv("SCCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCCORE_SCHEDULER_ADDRESS", scheduler)
    cached._finished_results.clear()


def page(name: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=300).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def until(app: AppTest, done, timeout_s: float = 180) -> AppTest:
    """Rerun the page (as the progress fragment does every second) until ``done(app)``."""
    deadline = time.monotonic() + timeout_s
    while not done(app):
        assert time.monotonic() < deadline, "the background job did not end in time"
        time.sleep(0.5)
        app.run()
        assert not app.exception, [e.value for e in app.exception]
    return app


def screen_tables(app: AppTest) -> list[pd.DataFrame]:
    return [frame.value for frame in app.dataframe if "mean_shift" in frame.value.columns]


def small_screen(background: bool) -> AppTest:
    """The Knockout page with a small PCA screen of a sample of the cells toward a goal state chosen (not run)."""
    app = page("knockout.py")
    app.multiselect(key="sc_methods").set_value(["pca"])
    app.number_input(key="sc_top").set_value(8)
    app.number_input(key="sc_max_cells").set_value(30)
    app.toggle(key="sc_goal").set_value(True).run()
    app.selectbox(key="sc_goal_column").set_value("cell_type")
    app.toggle(key="sc_background").set_value(background)
    return app.run()


def test_background_screen_shows_progress_then_the_in_process_table_also_after_a_refresh(tmp_path):
    here = small_screen(background=False)
    here.button(key="sc_run").click().run()
    (expected,) = screen_tables(here)
    assert expected["goal_alignment"].notna().all()
    cached._finished_results.clear()  # forget it: the same settings compute again

    app = small_screen(background=True)
    app.button(key="sc_run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.exception or app.error]
    if not screen_tables(app):  # the page went on at once, with a progress bar (unless the job was quicker still)
        assert any("The screen runs in the background" in bar.proto.text for bar in app.get("progress"))
    until(app, screen_tables)
    pd.testing.assert_frame_equal(screen_tables(app)[0], expected, check_dtype=False, rtol=1e-5)
    (record,) = jobs.list_jobs(jobs.JobStore(tmp_path / "cache"), "local")
    assert record.kind == "screen" and record.status == "finished" and record.params["top"] == 8

    cached._finished_results.clear()
    refreshed = small_screen(background=False)  # a new session: the job is found again in the records
    assert not refreshed.error, [e.value for e in refreshed.error]
    pd.testing.assert_frame_equal(screen_tables(refreshed)[0], expected, check_dtype=False, rtol=1e-5)


def test_background_training_makes_the_model_selectable_also_after_a_refresh():
    app = page("encoder.py")
    app.number_input(key="train_epochs").set_value(0.2)
    app.text_input(key="train_name").set_value("background-run")
    app.toggle(key="train_background").set_value(True)
    next(button for button in app.button if button.label == "Train").click().run()
    assert not app.exception and not app.error, [e.value for e in app.exception or app.error]
    assert any("Training runs in the background" in bar.proto.text for bar in app.get("progress"))

    def finished(app: AppTest) -> bool:
        return any("background training on this dataset finished" in box.value for box in app.success)

    until(app, finished)
    assert "background-run" in app.selectbox(key="model_choice").options
    assert (Path(os.environ["SCCORE_MODEL_DIR"]) / "background-run" / "model.safetensors").is_file()
    refreshed = page("encoder.py")
    assert finished(refreshed) and "background-run" in refreshed.selectbox(key="model_choice").options


def test_background_training_is_cancelled_from_its_progress_bar(tmp_path):
    app = page("encoder.py")
    app.number_input(key="train_epochs").set_value(100.0)
    app.text_input(key="train_name").set_value("cancelled-run")
    app.toggle(key="train_background").set_value(True)
    next(button for button in app.button if button.label == "Train").click().run()
    app.button(key="train_job_cancel").click().run()
    until(app, lambda app: not app.get("progress"))
    (record,) = jobs.list_jobs(jobs.JobStore(tmp_path / "cache"), "local")
    assert record.status == "cancelled" and not any("background training" in box.value for box in app.success)


def test_jobs_page_submits_a_training_into_the_users_model_folder(tmp_path):
    make_counts(n_cells=100, n_genes=80).write_h5ad(Path(os.environ["SCCORE_DATA_DIRS"]) / "small.h5ad")
    app = page("jobs.py")
    app.selectbox(key="jobs_kind").set_value("train").run()
    app.text_area(key="jobs_params_train").set_value(json.dumps({"epochs": 0.5, "device": "cpu", "out": "from-jobs"}))
    app.button(key="jobs_submit").click().run()
    assert not app.exception and not app.error, [e.value for e in app.exception or app.error]
    assert "Submitted train job" in app.success[0].value
    store = jobs.JobStore(tmp_path / "cache")
    (record,) = jobs.list_jobs(store, "local")
    record = jobs.wait(store, "local", record.id, timeout_s=120)
    assert record.status == "finished", record.error
    assert record.result == str((Path(os.environ["SCCORE_MODEL_DIR"]) / "from-jobs").resolve())
    assert (Path(record.result) / "model.safetensors").is_file()
