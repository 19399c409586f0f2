"""The floor's Knockout page: the gene box and the button; the result is its heading alone."""
import streamlit as st

st.title("In-silico knockout")
gene = st.text_input("…or type a gene name", key="ko_gene")
if st.button("Run knockout", type="primary"):
    st.session_state["ko_done"] = gene
if st.session_state.get("ko_done"):
    st.header(f"Delete {st.session_state['ko_done']} in all cells")
