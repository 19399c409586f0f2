"""The floor's Home page: the line the benchmark waits for."""
import streamlit as st

st.title("Home")
st.write("Categorical annotations: cell_type, louvain")
