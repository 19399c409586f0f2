"""The Knockout page's predicted expression changes: each method's predicted change of every gene's log-expression
after a one-gene knockout, the genes that go up and down most (a bar chart and a table) and the whole table as CSV.

The numbers come from ``sccore.perturb`` (:func:`~sccore.perturb.expression_change_of` on the knockout the page
already ran): the encoder through its model's expression decoder, PCA by reconstructing the expression from the
perturbed components, the linear model by its regressions.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cached
from dashboard.widgets import plain
from sccore import InputError
from sccore.export import csv_bytes
from sccore.perturb import KnockoutResult, expression_change_of, top_expression_changes
from sccore.plots import expression_change_figure
from sccore.workflow import Analysis

TOP = 10  # genes shown going up, and going down


@st.cache_data(show_spinner="Predicting every gene's expression change…", max_entries=48,
               hash_funcs=cached.EXACT_ARRAYS)
def expression_table(analysis_key: str, model_folder: str, gene: str, cells: np.ndarray, method: str, mode: str,
                     _result: KnockoutResult, _analysis: Analysis) -> pd.DataFrame:
    """The knockout's ``expression_table`` (gene, knocked_out, method, predicted_log_change; every gene) for the
    result the page shows (``_result``: the knockout of ``gene`` in ``cells`` by ``method``); :class:`InputError`
    for an encoder without an expression decoder."""
    model = cached.loaded_model(model_folder, _analysis.params.encoder_device) if method == "encoder" else None
    perturber = cached.linear_perturber(analysis_key, method, _analysis) if method != "encoder" else None
    change = expression_change_of(_analysis.adata, _result, model, perturber=perturber)
    return replace(_result, expression_change=change).expression_table()


def show_expression_changes(analysis: Analysis, gene: str, mode: str, results: dict[str, KnockoutResult],
                            labels: dict[str, str]) -> None:
    """The "Predicted expression changes" section for the knockout of ``gene`` (``results``: method -> its result;
    ``labels``: method -> its name on the page): one tab per method with the top genes up and down, their table and
    the CSV of every gene; a note instead for an encoder without an expression decoder."""
    st.markdown("**Predicted expression changes**")
    st.caption(f"Each method's predicted change of every gene's log-expression, averaged over the knocked-out cells: "
               f"the {TOP} genes predicted to go up most (orange) and down most (blue), {gene} itself left out. The "
               "encoder decodes its perturbed embedding through its expression decoder; PCA reconstructs the "
               "expression from the perturbed components; the linear model moves every gene by its regression on "
               f"{gene}. The CSV holds every gene, {gene} included.")
    # only the open tab is computed and drawn (a click on another reruns the page): one chart and table, not one each
    tabs = st.tabs([labels[method] for method in results], key="ko_expression_tab", on_change="rerun")
    for tab, (method, result) in zip(tabs, results.items()):
        if not tab.open:
            continue
        with tab:
            try:
                table = expression_table(analysis.key, analysis.params.encoder_model, gene, result.cells, method, mode,
                                         result, analysis)
            except InputError as error:  # a model without an expression decoder, e.g. a Geneformer checkpoint
                st.info(str(error))
                continue
            own = table.loc[table["gene"] == gene, "predicted_log_change"]
            top = top_expression_changes(table, TOP, leave_out=(gene,))
            st.plotly_chart(expression_change_figure(top, f"{labels[method]}: knock out {gene}"),
                            key=f"ko_expression_chart_{method}", width="stretch", config={"displaylogo": False})
            if len(own):
                st.caption(f"{plain(gene)} itself: predicted change {float(own.iloc[0]):+.4f}.")
            shown = top[["gene", "predicted_log_change"]]
            st.dataframe(shown, hide_index=True, width="stretch", key=f"ko_expression_table_{method}",
                         column_config={"predicted_log_change": st.column_config.NumberColumn(
                             help="The predicted change of log1p(expression), mean over the knocked-out cells "
                                  "(> 0: up, < 0: down).", format="%.4f")})
            st.download_button(f"Every gene's change ({labels[method]}, CSV)", lambda table=table: csv_bytes(table),
                               file_name=f"expression_change_{gene}_{method}.csv", mime="text/csv",
                               key=f"ko_expression_csv_{method}")
