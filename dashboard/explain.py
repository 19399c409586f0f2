"""Plain-language help beside the numbers the pages show: table column settings with ``sccore.glossary``'s
sentence as each column's tooltip."""

import pandas as pd
import streamlit as st

from sccore.glossary import help_for


def column_help(table: pd.DataFrame, formats: dict[str, str] | None = None) -> dict:
    """``column_config`` for ``table``: each column with a glossary sentence gets it as help, and each number column
    in ``formats`` its format (e.g. ``"%.3f"``)."""
    formats = formats or {}
    config = {}
    for name in table.columns:
        column, sentence = str(name), help_for(name)
        if pd.api.types.is_numeric_dtype(table[name]) and (sentence or column in formats):
            config[column] = st.column_config.NumberColumn(help=sentence, format=formats.get(column))
        elif sentence:
            config[column] = st.column_config.Column(help=sentence)
    return config
