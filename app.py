"""The dashboard: `streamlit run app.py` opens on the embedded demo data."""

from pathlib import Path

import streamlit as st

from dashboard import access, presentation, state, tour  # `streamlit run app.py` puts this folder on sys.path

# a local icon: a material-icon favicon is fetched from Google's font service, which a lab server may not reach
st.set_page_config(page_title="sccore · single-cell embeddings",
                   page_icon=str(Path(__file__).resolve().parent / "assets" / "logo_icon.svg"), layout="wide")
state.warm_up_in_background("pictures")  # loads what a first picture needs while the first user picks a dataset
access.gate()  # with login on (a server), only the login page until someone logs in
presentation.show_frame()  # the logo and the Presentation mode toggle
navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("pages/data.py", title="Data & QC", icon=":material/filter_alt:", url_path="data"),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:", url_path="explore"),
    st.Page("pages/clusters.py", title="Clusters & markers", icon=":material/bubble_chart:", url_path="clusters"),
    st.Page("pages/encoder.py", title="Encoder", icon=":material/neurology:", url_path="encoder"),
    st.Page("pages/knockout.py", title="Knockout", icon=":material/content_cut:", url_path="knockout"),
    st.Page("pages/search.py", title="Search & transfer", icon=":material/travel_explore:", url_path="search"),
    st.Page("pages/metrics.py", title="Metrics", icon=":material/leaderboard:", url_path="metrics"),
    st.Page("pages/report.py", title="Report", icon=":material/summarize:", url_path="report"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/work_history:", url_path="jobs"),
])
tour.show_panel()  # while the guided tour runs: its step, Back, Next and Leave tour
navigation.run()
