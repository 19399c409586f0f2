"""The floor of bench_concurrent_users.py: the demo flow's pages, widgets and labels with no work behind any step.

The Explore page shows a fixed picture in the dashboard's own layout viewer; "Run knockout" and a cell id only print
their result's heading. What ten browser users cost here is what Streamlit, the viewer and Chromium cost on this
machine whatever the app computes. Served from the repository's root:
``streamlit run benchmarks/floor_app/app.py`` (``python benchmarks/bench_concurrent_users.py --floor`` does so).
"""

import streamlit as st

st.set_page_config(page_title="sccore · benchmark floor", layout="wide")
st.navigation([
    st.Page("pages/home.py", title="Home", url_path="home", default=True),
    st.Page("pages/explore.py", title="Explore", url_path="explore"),
    st.Page("pages/knockout.py", title="Knockout", url_path="knockout"),
    st.Page("pages/search.py", title="Search & transfer", url_path="search"),
]).run()
