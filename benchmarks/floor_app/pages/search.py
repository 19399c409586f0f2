"""The floor's Search & transfer page: the cell box; the result is its caption alone."""
import streamlit as st

st.title("Search & transfer")
cell = st.text_input("Cell id", key="search_cell").strip()
if cell:
    st.write(f"15 nearest cells to cell {cell} in PCA")
