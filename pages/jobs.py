"""Jobs: the user's background jobs on Dask (status, duration, progress, result or error), cancel, and submit.

Everything shown is read from the job records (``sccore.jobs.JobStore``), so the list survives a browser
refresh and a server restart; the Dask client (``dashboard.background.dask_client``, one for the server, shared with
the Knockout and Encoder pages' background runs) is started only when a job is submitted.
"""

import json
import time

import pandas as pd
import streamlit as st

from dashboard import background, state
from dashboard.access import current_user
from dashboard.widgets import plain, show_error
from sccore import InputError, jobs


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def _table(records: list[jobs.JobRecord]) -> pd.DataFrame:
    return pd.DataFrame([{"id": r.id, "kind": r.kind, "status": r.status, "submitted": _when(r.submitted),
                          "duration_s": None if r.duration is None else round(r.duration, 1),
                          "progress": r.progress, "result": r.result + (" (cached)" if r.cached else ""),
                          "error": r.error} for r in records])


st.title("Jobs")
st.caption("Training, embedding, batch integration, UMAP, screens, metrics, atlases of large files, clusters, marker "
           "genes and differential expression as background jobs on Dask: a local cluster, or the lab's cluster when "
           "the settings name a scheduler. Results go to the cache under a key made from the input's content and the "
           "parameters; the same job again returns the cached result.")
user = current_user()
settings = state.settings()
store = state.job_store()

records = jobs.list_jobs(store, user)
st.button("Refresh", key="jobs_refresh", icon=":material/refresh:")
if not records:
    st.info("No jobs yet. Submit one below, or from the command line: `python -m sccore submit KIND IN.h5ad --wait`.")
else:
    st.dataframe(_table(records), hide_index=True, column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)})
    for record in records:
        if record.done:
            continue
        with st.container(border=True):
            st.markdown(f"**{record.kind}** `{record.id}` — {record.status}")
            st.progress(record.progress, text=record.message or record.status)
            if st.button("Cancel", key=f"jobs_cancel_{record.id}", icon=":material/cancel:"):
                jobs.cancel(store, user, record.id)
                st.rerun()
    for record in records:
        if record.status == "failed":
            st.error(f"{record.kind} `{record.id}`: {plain(record.error)}")

st.subheader("Submit a job")
files = dict(state.available_files())
source, _ = state.current_source()
if source != state.DEMO:
    files = {f"current dataset ({source.rsplit('/', 1)[-1]})": source, **files}
if not files:
    st.info("Jobs read a file: put .h5ad files in the data folder or open an upload on the Home page.")
    st.stop()
kind = st.selectbox("Kind", jobs.KINDS, key="jobs_kind")
dataset = st.selectbox("Dataset", list(files), key="jobs_dataset")
defaults = jobs.default_parameters(kind)
text = st.text_area("Parameters (JSON)", json.dumps(defaults, indent=1), height=220, key=f"jobs_params_{kind}",
                    help="Device cuda asks the cluster for a GPU worker (resource GPU=1). A training's out is a model "
                         "name: it trains into your model folder (the Encoder page lists it); empty: the cache.")
if st.button("Submit", key="jobs_submit", type="primary"):
    try:
        params = json.loads(text)
        if not isinstance(params, dict):
            raise InputError("The parameters must be a JSON object: {\"key\": value, ...}.")
        if params.get("model") not in (None, "", "pca", "linear"):
            params["model"] = state.checked_model(str(params["model"]))  # only the folders the app offers
        params = state.confined_output(kind, params)  # a model name in the user's folder, or the cache
        params = jobs.checked_params(kind, {**params, "input": files[dataset]})  # before a cluster is started
        jobs.check_quota(store, user)
        job_id = jobs.submit(background.dask_client(settings.scheduler_address), store, user, kind, params,
                             results_dir=settings.results_dir(files[dataset]))
        st.success(f"Submitted {kind} job `{job_id}`; press Refresh to follow it.")
    except json.JSONDecodeError as error:
        st.error(f"The parameters are not valid JSON ({plain(error)}); compare them with the defaults.")
    except InputError as error:
        show_error(error)
