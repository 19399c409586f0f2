"""Presentation mode: the logo, and a sidebar toggle for large fonts, no developer clutter and colour-blind-safe
category colours (``sccore.render.safe_category_colors``), readable on a 1280x720 projector.

Expression is always drawn with ``sccore.render.EXPRESSION_CMAP``, a perceptually uniform colormap, so the mode
changes nothing there.
"""

from pathlib import Path

import streamlit as st

ASSETS = Path(__file__).resolve().parents[1] / "assets"
KEY = "presentation_mode"  # kept apart from the toggle's own state, which reruns across pages do not keep
STYLE = """
<style>
html { font-size: 20px; }
[data-testid="stMainBlockContainer"] { padding-top: 2.5rem; padding-left: 2rem; padding-right: 2rem; max-width: 100%; }
[data-testid="stToolbar"], [data-testid="stDecoration"], [data-testid="stStatusWidget"],
[data-testid="stElementToolbar"] { display: none; }
[data-testid="stCaptionContainer"] { font-size: 0.95rem; color: #333333; }
h1 { font-size: 2.2rem; }
</style>
"""


def is_on() -> bool:
    """Whether presentation mode is on in this session."""
    return bool(st.session_state.get(KEY, False))


def _remember() -> None:
    st.session_state[KEY] = st.session_state["presentation_toggle"]


def show_frame() -> None:
    """The logo, the sidebar's *Presentation mode* toggle and, when it is on, the presentation style."""
    st.logo(str(ASSETS / "logo.svg"), size="large", icon_image=str(ASSETS / "logo_icon.svg"))
    st.sidebar.toggle("Presentation mode", value=is_on(), key="presentation_toggle", on_change=_remember,
                      help="Large fonts, no developer menus and colour-blind-safe colours, for a talk or a demo.")
    if is_on():
        st.markdown(STYLE, unsafe_allow_html=True)
