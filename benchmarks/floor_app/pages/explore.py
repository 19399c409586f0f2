"""The floor's Explore page: a fixed 600 x 600 picture per annotation in the dashboard's layout viewer."""
import base64

import numpy as np
import streamlit as st

from dashboard.viewer import viewer_component
from sccore.render import png_bytes

SIZE = 600


@st.cache_data(show_spinner=False)
def picture(column: str) -> str:
    """A made-up RGBA picture (its colour depends on ``column``) as a PNG data URL, made once per server."""
    image = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    image[..., len(column) % 3] = 200
    image[::7, ::5, 3] = 255
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, background=None, compress_level=1)).decode()


@st.fragment
def plots() -> None:
    """The annotation box and the viewer, rerun alone as on the real page."""
    column = st.selectbox("Annotation", ["cell_type", "louvain"], key="color_column")
    viewer_component(key="plot_a", width="stretch", data={
        "image": picture(column), "view": [0.0, 1.0, 0.0, 1.0], "size": [SIZE, SIZE], "seq": 0,
        "title": f"X_umap · {column}", "legend_below": False, "selection": None, "hover": None})


st.title("Explore the cells")
plots()
