"""AppTest of the Jobs page: it renders with no jobs, lists the records the job store holds, and cancels."""

import json
import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sccore import jobs
from tests.conftest import ROOT, make_counts, rendered

def page() -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / "jobs.py"), default_timeout=60)


@pytest.fixture(autouse=True)
def own_cache(app_folders, tmp_path, monkeypatch):
    """The app's temporary folders, with a cache folder of this test's own so that no other test's jobs show."""
    monkeypatch.setenv("SCCORE_CACHE_DIR", str(tmp_path / "cache"))


def test_jobs_page_renders_with_no_jobs():
    app = page().run()
    assert not app.exception and not app.error
    assert any("No jobs yet" in info.value for info in app.info)


def test_jobs_page_lists_the_users_jobs_and_cancels_a_running_one(tmp_path):
    store = jobs.JobStore(tmp_path / "cache")
    store.write(jobs.JobRecord(id="20260101-000000-aaaaaa", user="local", kind="screen", params={},
                               status="finished", started=1.0, finished=3.5, progress=1.0, result="/x/screen.csv"))
    store.write(jobs.JobRecord(id="20260101-000001-bbbbbb", user="local", kind="train", params={},
                               status="running", started=2.0, progress=0.4, message="step 4/10",
                               heartbeat=time.time()))  # alive: not marked failed for a stale heartbeat
    store.write(jobs.JobRecord(id="20260101-000002-cccccc", user="someone", kind="umap", params={}))
    app = page().run()
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["id"]) == ["20260101-000001-bbbbbb", "20260101-000000-aaaaaa"]
    assert table.loc[1, "duration_s"] == 2.5 and table.loc[1, "result"] == "/x/screen.csv"
    app.button(key="jobs_cancel_20260101-000001-bbbbbb").click().run()
    assert not app.exception
    assert store.cancel_requested("local", "20260101-000001-bbbbbb")


def test_jobs_page_refuses_a_model_outside_the_model_folders(tmp_path):
    data = Path(os.environ["SCCORE_DATA_DIRS"])
    make_counts(n_cells=50).write_h5ad(data / "small.h5ad")
    app = page().run()
    app.selectbox(key="jobs_kind").set_value("embed").run()
    app.text_area(key="jobs_params_embed").set_value(json.dumps({"model": str(tmp_path)})).run()
    app.button(key="jobs_submit").click().run()
    assert not app.exception
    assert "outside the folders" in rendered(app.error[0].value)
    assert jobs.list_jobs(jobs.JobStore(tmp_path / "cache"), "local") == []


@pytest.mark.parametrize("kind", ["train", "finetune"])
def test_jobs_page_trains_only_into_the_users_model_folder(tmp_path, kind):
    make_counts(n_cells=50).write_h5ad(Path(os.environ["SCCORE_DATA_DIRS"]) / "small.h5ad")
    app = page().run()
    app.selectbox(key="jobs_kind").set_value(kind).run()
    app.text_area(key=f"jobs_params_{kind}").set_value(json.dumps({"out": str(tmp_path / "elsewhere")})).run()
    app.button(key="jobs_submit").click().run()
    assert not app.exception
    assert "is not a model name" in rendered(app.error[0].value)
    assert jobs.list_jobs(jobs.JobStore(tmp_path / "cache"), "local") == []


@pytest.mark.parametrize("kind, field", [("atlas", "out"), ("screen", "output"), ("markers", "output")])
def test_jobs_page_writes_no_job_s_result_outside_the_users_part_of_the_cache(tmp_path, kind, field):
    """An atlas job pointed at the service's state folder would delete every user's half-written files there."""
    make_counts(n_cells=50).write_h5ad(Path(os.environ["SCCORE_DATA_DIRS"]) / "small.h5ad")
    target = tmp_path / "cache" / "jobs"
    app = page().run()
    app.selectbox(key="jobs_kind").set_value(kind).run()
    params = {field: str(target), **({"groupby": "cell_type"} if kind == "markers" else {})}
    app.text_area(key=f"jobs_params_{kind}").set_value(json.dumps(params)).run()
    app.button(key="jobs_submit").click().run()
    assert not app.exception
    assert f"Leave {field} empty: a {kind} job's result goes to the cache" in rendered(app.error[0].value)
    assert jobs.list_jobs(jobs.JobStore(tmp_path / "cache"), "local") == []
