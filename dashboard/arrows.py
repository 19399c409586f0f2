"""The Knockout page's arrows: where each method moves the knocked-out cells, drawn in the UMAP of its embedding.

Each arrow comes from ``sccore.shifts.umap_arrows`` with the placements of ``dashboard.cached`` (a cell's original
placed once per analysis and kept for every knockout and session; the perturbed embeddings placed per knockout). The
two baselines share one layout and, zoomed, one view: their arrows compare at one scale and one picture serves both.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import cached, screens, state
from sccore.integrate import corrected_knockout
from sccore.perturb import KnockoutResult
from sccore.plots import add_arrows, layout_figure
from sccore.render import View, fit_view
from sccore.report import METHOD_LABELS
from sccore.shifts import Arrows, umap_arrows
from sccore.workflow import Analysis, layout_key

SIZE = 600  # pixels of each picture, square


def placed_arrows(analysis: Analysis, method: str, result: KnockoutResult,
                  baseline_rep: str) -> tuple[tuple[str, Arrows] | None, str]:
    """The layout of the method's UMAP (the baselines': ``baseline_rep``'s, PCA or its Harmony integration) and the
    arrows of a sample of its knocked-out cells in it; None and why when there is no such UMAP."""
    rep, adata = screens.REP[method], analysis.adata
    if rep == "X_pca" and baseline_rep != rep:
        rep, result = baseline_rep, corrected_knockout(result, adata.obsm["X_pca"], adata.obsm[baseline_rep])
    layout = layout_key(rep)
    if rep not in analysis.umap_models or layout not in analysis.layouts():
        return None, f"No UMAP of {rep} to place the perturbed cells in."
    arrows = umap_arrows(result, analysis.layouts()[layout],
                         lambda rows: cached.placed_in_umap(analysis.key, rep, rows, analysis, optimize=False),
                         place_original=lambda cells, rows: cached.placed_originals(analysis, rep, cells, rows))
    return (layout, arrows), ""


def arrow_views(analysis: Analysis, placed: dict[str, tuple[str, Arrows]], zoom: bool) -> dict[str, View]:
    """One view per layout of ``placed`` (method -> its layout and arrows): zoomed to every arrow drawn in it, or the
    whole layout."""
    views = {}
    for layout in {layout for layout, _ in placed.values()}:
        ends = [np.vstack([arrows.start, arrows.end]) for drawn_in, arrows in placed.values() if drawn_in == layout]
        views[layout] = (fit_view(np.vstack(ends), SIZE, SIZE, padding=0.12) if zoom
                         else state.default_view(analysis, layout, SIZE, SIZE))
    return views


def arrow_figure(analysis: Analysis, method: str, layout: str, arrows: Arrows, view: View, group_column: str | None,
                 gene: str):
    """The UMAP ``layout`` in ``view``, coloured by ``group_column`` (else by ``gene``), with the method's
    ``arrows``; and its caption."""
    title = f"{METHOD_LABELS[method]} · {layout}"
    if group_column:
        image, _ = cached.category_image(analysis.key, layout, group_column, view, analysis)
        figure = layout_figure(image, view, title=title, height=380)  # legend: one, above
    else:
        image, span = cached.gene_image(analysis.key, layout, gene, view, analysis)
        figure = layout_figure(image, view, color_span=span, color_title=f"{gene}<br>log1p", title=title, height=380)
    names = analysis.adata.obs_names
    add_arrows(figure, arrows.start, arrows.end,
               [f"{names[c]}<br>cosine {v:.6f}" for c, v in zip(arrows.cells, arrows.cosine)],
               head_length=0.012 * (view.x_range[1] - view.x_range[0]))
    return figure, (f"{len(arrows.cells):,} of {arrows.n_moved:,} cells. Each arrow starts at the cell's UMAP position "
                    "and moves by the difference between where `sccore.umap.transform` places its perturbed and its "
                    "original embedding (neighbour-weighted placement, repeatable). Median arrow "
                    f"{arrows.median_length:.3f} UMAP units.")


def show_arrows(analysis: Analysis, results: dict[str, KnockoutResult], zoom: bool, baseline_rep: str,
                group_column: str | None, gene: str) -> None:
    """One column per method of ``results`` (the knockout of ``gene``): its UMAP with the arrows and their caption,
    or why there is none."""
    placed = {method: placed_arrows(analysis, method, result, baseline_rep) for method, result in results.items()}
    views = arrow_views(analysis, {method: found for method, (found, _) in placed.items() if found}, zoom)
    for area, (method, (found, why_not)) in zip(st.columns(len(results)), placed.items()):
        with area:
            if found:
                figure, note = arrow_figure(analysis, method, *found, views[found[0]], group_column, gene)
                st.plotly_chart(figure, key=f"ko_umap_{method}", width="stretch", config={"displaylogo": False})
            st.caption(note if found else why_not)
