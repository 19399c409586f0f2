"""Plotly figures shared by the dashboard and reports (no streamlit here)."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .render import EXPRESSION_CMAP, View, png_bytes

MAX_LEGEND_ENTRIES = 40
QC_RULE_COLORS = ("#009E73", "#D55E00", "#CC79A7")  # Okabe-Ito: the cut lines of each quality-control rule
MAX_SVG_MARKERS = 1000  # up to this many markers in one trace are drawn as SVG; more, with WebGL


def layout_figure(image: np.ndarray, view: View, legend: pd.DataFrame | None = None,
                  color_span: tuple[float, float] | None = None, color_title: str = "", title: str = "",
                  height: int = 560, legend_below: bool = False) -> go.Figure:
    """A datashaded image placed on axes in data units, for marks drawn over it (:func:`add_cells`,
    :func:`add_arrows`).

    ``legend`` (category, color, n_cells) adds one legend entry per category with its count, beside the
    plot or, with ``legend_below`` (narrow columns), under it so the cells keep the column's width;
    ``color_span`` adds a colour bar.
    """
    figure = go.Figure()
    encoded = base64.b64encode(png_bytes(image, background=None)).decode()
    (x0, x1), (y0, y1) = view.x_range, view.y_range
    figure.add_layout_image(source=f"data:image/png;base64,{encoded}", xref="x", yref="y", x=x0, y=y1,
                            sizex=x1 - x0, sizey=y1 - y0, sizing="stretch", layer="below")
    if legend is not None:
        for row in legend.head(MAX_LEGEND_ENTRIES).itertuples():
            figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{row.category} ({row.n_cells:,})",
                                        marker={"size": 10, "color": row.color}, hoverinfo="skip"))
    if color_span is not None:
        figure.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
            marker={"colorscale": [[i / (len(EXPRESSION_CMAP) - 1), c] for i, c in enumerate(EXPRESSION_CMAP)],
                    "cmin": color_span[0], "cmax": color_span[1], "showscale": True, "color": [color_span[0]],
                    "colorbar": {"title": {"text": color_title}, "thickness": 14}}))
    figure.update_xaxes(range=[x0, x1], showgrid=False, zeroline=False, showticklabels=False, title="")
    figure.update_yaxes(range=[y0, y1], showgrid=False, zeroline=False, showticklabels=False, title="",
                        scaleanchor="x", scaleratio=1)
    figure.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                         plot_bgcolor="white", dragmode="zoom", legend={"itemsizing": "constant"})
    if legend_below:
        figure.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0})
    return figure


def qc_histograms(qc: pd.DataFrame, cuts: dict[str, pd.DataFrame]) -> go.Figure:
    """Histograms of detected genes, total counts and mitochondrial percentage with each rule's cuts: ``cuts`` maps a
    rule's name (its legend entry) to its :func:`sccore.pp.qc_cuts` table, drawn as dashed lines in the rule's
    colour; skipped cuts are not drawn."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=3, subplot_titles=("Detected genes per cell", "Counts per cell",
                                                           "Mitochondrial counts (%)"))
    for column, metric in enumerate(("n_genes", "total_counts", "pct_mito"), start=1):
        figure.add_trace(go.Histogram(x=qc[metric], nbinsx=60, marker_color="#0072B2", showlegend=False),
                         row=1, col=column)
    for (rule, table), color, dash in zip(cuts.items(), QC_RULE_COLORS, ("dash", "dot", "dashdot")):
        applied = table[table["skipped"] == ""]
        for cut in applied.itertuples():
            column = ("n_genes", "total_counts", "pct_mito").index(cut.metric) + 1
            for value in (cut.low, cut.high):
                if np.isfinite(value):
                    figure.add_vline(x=value, line_color=color, line_dash=dash, row=1, col=column)
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=rule, line={"color": color, "dash": dash}))
    figure.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, bargap=0.02,
                         legend={"orientation": "h", "yanchor": "bottom", "y": -0.3, "x": 0})
    return figure


def loss_curve(history: dict) -> go.Figure:
    """Training and validation masked-gene loss against the optimisation step."""
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=history["step"], y=history["train_loss"], name="training", mode="lines",
                                line={"color": "#0072B2"}))
    figure.add_trace(go.Scatter(x=history["val_step"], y=history["val_loss"], name="validation", mode="lines+markers",
                                line={"color": "#D55E00"}))
    figure.update_layout(height=280, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title="Masked-gene loss",
                         xaxis_title="step", yaxis_title="cross-entropy")
    return figure


def confusion_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """A heatmap of a confusion table (true types as rows, predicted labels as columns, in the table's order):
    colour = share of the true type's cells, text = cell counts."""
    counts = table.to_numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    rows, columns = [str(v) for v in table.index], [str(v) for v in table.columns]
    figure = go.Figure(go.Heatmap(
        z=shares, x=columns, y=rows, zmin=0, zmax=1, colorscale="Blues", text=counts, texttemplate="%{text}",
        colorbar={"title": {"text": "share of<br>true type"}, "thickness": 14},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text} cells (%{z:.0%})<extra></extra>"))
    figure.update_yaxes(autorange="reversed", title="true")
    figure.update_xaxes(title="predicted", tickangle=-35)
    figure.update_layout(title=title, height=max(320, 40 + 32 * len(rows)), margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def metrics_figure(table: pd.DataFrame, groups: dict[str, tuple[str, ...]]) -> go.Figure:
    """Grouped bars of integration metrics: one colour per embedding (the table's rows), the metrics in ``groups``
    (a title -> column names, e.g. bio conservation, batch correction, aggregates) side by side on a 0-1 axis."""
    columns = [column for names in groups.values() for column in names if column in table.columns]
    figure = go.Figure()
    for embedding, row in table[columns].iterrows():
        figure.add_trace(go.Bar(x=columns, y=row.to_numpy(dtype=float), name=str(embedding),
                                hovertemplate="%{x}: %{y:.3f}<extra>" + str(embedding) + "</extra>"))
    start = 0
    for title, names in groups.items():
        width = sum(column in table.columns for column in names)
        if start:
            figure.add_vline(x=start - 0.5, line_color="#888", line_dash="dot")
        figure.add_annotation(x=start + (width - 1) / 2, y=1.06, text=f"<b>{title}</b>", showarrow=False,
                              yref="y")
        start += width
    figure.update_layout(barmode="group", height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         yaxis={"range": [0, 1.12], "title": "score (higher is better)"},
                         legend={"title": {"text": "embedding"}})
    return figure


def add_arrows(figure: go.Figure, start: np.ndarray, end: np.ndarray, hover: list[str], head_length: float,
               name: str = "perturbed") -> None:
    """Draw an arrow from each row of ``start`` to the same row of ``end`` (data units, on axes of equal scale) on
    ``figure``, its head two strokes ``head_length`` long, with a marker at each end that shows ``hover`` (e.g.
    ``sccore.shifts.umap_arrows``'s).

    All arrows, heads included, are one line trace (drawn by the browser as one SVG path), not an annotation or a
    marker each: hundreds of annotations take plotly a second to build, and a marker per head is a page element
    each for the browser to lay out and draw."""
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    length = np.linalg.norm(end - start, axis=1, keepdims=True)
    back = np.divide(start - end, length, out=np.zeros_like(start), where=length > 0) * head_length
    turn = np.deg2rad(25)
    rotate = lambda v, a: np.column_stack([v[:, 0] * np.cos(a) - v[:, 1] * np.sin(a),  # noqa: E731
                                           v[:, 0] * np.sin(a) + v[:, 1] * np.cos(a)])
    points = np.full((len(start), 7, 2), np.nan)  # the shaft, a gap, one stroke of the head to the tip and out again
    points[:, 0], points[:, 1], points[:, 3] = start, end, end + rotate(back, turn)
    points[:, 4], points[:, 5] = end, end + rotate(back, -turn)
    points = points.reshape(-1, 2)
    color = "rgba(20,20,20,0.55)"
    figure.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="lines", name=f"{name} arrows",
                                showlegend=False, hoverinfo="skip", connectgaps=False,
                                line={"width": 0.8, "color": color}))
    figure.add_trace(go.Scatter(x=end[:, 0], y=end[:, 1], mode="markers", name=name, showlegend=False,
                                marker={"size": 3, "color": "rgba(20,20,20,0.6)"}, text=hover,
                                hovertemplate="%{text}<extra>" + name + "</extra>"))
    figure.update_layout(dragmode="zoom", margin={"l": 10, "r": 10, "t": 40, "b": 10})


def group_shift_figure(tables: dict[str, pd.DataFrame], colors: dict[str, str]) -> go.Figure:
    """Bars of the mean shift (1 - cosine) per group with its standard error, one panel per table of ``tables`` (its
    title -> a ``sccore.shifts.group_shifts`` table, e.g. one per method: each panel its own y scale) in one figure
    (one plot for the browser to draw, not one each), each group in its colour from ``colors`` (grey when missing)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(tables), subplot_titles=list(tables), horizontal_spacing=0.08)
    for column, table in enumerate(tables.values(), start=1):
        figure.add_trace(go.Bar(x=table.index, y=table["mean"], error_y={"type": "data",
                                                                         "array": table["sem"].fillna(0)},
                                customdata=table["count"], marker_color=[colors.get(g, "#888888") for g in table.index],
                                hovertemplate="%{x}<br>mean shift %{y:.3g}<br>%{customdata} cells<extra></extra>",
                                showlegend=False), row=1, col=column)
    figure.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    figure.update_yaxes(tickformat=".2g")
    figure.update_yaxes(title_text="mean shift (1 − cosine)", row=1, col=1)
    return figure


def expression_change_figure(top: pd.DataFrame, title: str) -> go.Figure:
    """Horizontal bars of the genes' predicted change of log-expression after a knockout (``top``: rows of
    :func:`sccore.perturb.top_expression_changes`), increases in orange and decreases in blue, the largest on top."""
    change = top["predicted_log_change"].to_numpy(dtype=float)
    figure = go.Figure(go.Bar(x=change, y=top["gene"], orientation="h",
                              marker_color=np.where(change > 0, "#D55E00", "#0072B2").tolist(),
                              hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    figure.update_layout(title=title, height=max(240, 22 * len(top) + 90), margin={"l": 10, "r": 10, "t": 40, "b": 40},
                         xaxis_title="predicted change of log1p(expression)", showlegend=False)
    figure.update_yaxes(autorange="reversed", type="category")
    return figure


def add_cells(figure: go.Figure, coords: np.ndarray, name: str, marker: dict, hover: list[str] | None = None,
              hover_label: str = "") -> None:
    """Mark cells (rows of ``coords``, data units) on ``figure`` as one legend entry ``name``; ``hover`` gives each
    marker's text, shown beside ``hover_label`` (none: the markers show nothing on hover). Up to
    ``MAX_SVG_MARKERS`` markers are SVG, more are WebGL: a WebGL context costs a browser without a graphics card
    (software rendering) a tenth of a second or more per figure, and SVG stays quick for a thousand markers."""
    trace = go.Scatter if len(coords) <= MAX_SVG_MARKERS else go.Scattergl
    if hover is None:
        figure.add_trace(trace(x=coords[:, 0], y=coords[:, 1], mode="markers", name=name, marker=marker,
                               hoverinfo="skip"))
    else:
        figure.add_trace(trace(x=coords[:, 0], y=coords[:, 1], mode="markers", name=name, marker=marker, text=hover,
                               hovertemplate="%{text}<extra>" + hover_label + "</extra>"))


def _scaled_per_gene(values: np.ndarray) -> np.ndarray:
    """Each column of ``values`` scaled to 0-1 (its minimum to its maximum; 0 where a column is constant)."""
    low, high = values.min(axis=0, initial=np.inf), values.max(axis=0, initial=-np.inf)
    span = np.where(high > low, high - low, 1.0)
    return (values - low) / span


def dot_plot(means: pd.DataFrame, fractions: pd.DataFrame, title: str = "") -> go.Figure:
    """scanpy's dot plot of marker genes: one row per group, one column per gene (both tables groups x genes, e.g.
    :func:`sccore.markers.expression_by_group`'s); a dot's size is the share of the group's cells expressing the gene,
    its colour the group's mean expression scaled per gene (0: the gene's lowest group mean, 1: its highest)."""
    groups, genes = [str(group) for group in means.index], [str(gene) for gene in means.columns]
    scaled = _scaled_per_gene(means.to_numpy(dtype=float))
    shares = fractions.loc[means.index, means.columns].to_numpy(dtype=float)
    x, y = np.meshgrid(np.arange(len(genes)), np.arange(len(groups)))
    figure = go.Figure(go.Scatter(
        x=np.array(genes, dtype=object)[x.ravel()], y=np.array(groups, dtype=object)[y.ravel()], mode="markers",
        marker={"size": 4 + 18 * np.sqrt(shares.ravel()), "color": scaled.ravel(), "cmin": 0, "cmax": 1,
                "colorscale": [[i / (len(EXPRESSION_CMAP) - 1), c] for i, c in enumerate(EXPRESSION_CMAP)],
                "line": {"width": 0.5, "color": "#777"},
                "colorbar": {"title": {"text": "mean expression<br>(scaled per gene)"}, "thickness": 14}},
        customdata=np.column_stack([means.to_numpy(dtype=float).ravel(), shares.ravel()]),
        hovertemplate="%{x} in %{y}<br>mean log1p %{customdata[0]:.3f}<br>%{customdata[1]:.0%} of cells express it"
                      "<extra></extra>", showlegend=False))
    figure.update_xaxes(type="category", tickangle=-60, categoryorder="array", categoryarray=genes)
    figure.update_yaxes(type="category", autorange="reversed", categoryorder="array", categoryarray=groups)
    figure.update_layout(title=title, height=max(300, 120 + 26 * len(groups)), plot_bgcolor="white",
                         margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return figure


def marker_heatmap(values: np.ndarray, cell_groups: list[str], genes: list[str], title: str = "") -> go.Figure:
    """A heat map of cells (rows of ``values``, grouped as ``cell_groups`` says, in that order) by marker genes
    (columns), each gene's log expression scaled to 0-1 over the cells shown; the groups are labelled on the left."""
    labels = np.asarray(cell_groups, dtype=object)
    figure = go.Figure(go.Heatmap(
        z=_scaled_per_gene(np.asarray(values, dtype=float)), x=genes, y=np.arange(len(labels)), zmin=0, zmax=1,
        colorscale=[[i / (len(EXPRESSION_CMAP) - 1), c] for i, c in enumerate(EXPRESSION_CMAP)], text=labels,
        colorbar={"title": {"text": "expression<br>(scaled per gene)"}, "thickness": 14},
        hovertemplate="%{x} in a cell of %{text}: %{z:.2f}<extra></extra>"))
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(labels) else np.array([], dtype=int)
    ends = np.r_[starts[1:], len(labels)]
    for start in starts[1:]:
        figure.add_hline(y=start - 0.5, line_color="white", line_width=1)
    figure.update_yaxes(autorange="reversed", tickmode="array", tickvals=(starts + ends - 1) / 2,
                        ticktext=[str(labels[start]) for start in starts], title="")
    figure.update_xaxes(type="category", tickangle=-60)
    figure.update_layout(title=title, height=max(320, 120 + 30 * len(starts)),
                         margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return figure


def volcano_figure(table: pd.DataFrame, labelled: list[str] | tuple[str, ...] = (), max_fdr: float = 0.05,
                   max_fold_change: float = 10.0, title: str = "") -> go.Figure:
    """A volcano plot of a differential expression table (:data:`sccore.markers.COLUMNS`): log2 fold change
    against -log10 p-value, genes with FDR below ``max_fdr`` coloured by their direction (up in A orange, down
    blue), the genes in ``labelled`` named. Fold changes beyond ``max_fold_change`` (a gene detected on one side only
    gets about ±30 from the pseudo-count) are drawn at that edge as triangles; the hover gives the true value."""
    change = table["logfoldchange"].to_numpy(dtype=float)
    shown = np.clip(change, -max_fold_change, max_fold_change)
    symbols = np.where(change > max_fold_change, "triangle-right",
                       np.where(change < -max_fold_change, "triangle-left", "circle"))
    height = -np.log10(np.clip(table["pvalue"].to_numpy(dtype=float), 1e-300, 1.0))
    significant = table["fdr"].to_numpy(dtype=float) < max_fdr
    figure = go.Figure()
    for name, chosen, color in [(f"up in A (FDR < {max_fdr:g})", significant & (change > 0), "#D55E00"),
                                (f"down in A (FDR < {max_fdr:g})", significant & (change <= 0), "#0072B2"),
                                ("not significant", ~significant, "#B0B0B0")]:
        rows = table[chosen]
        figure.add_trace(go.Scattergl(
            x=shown[chosen], y=height[chosen], mode="markers", name=f"{name} ({int(chosen.sum()):,})",
            marker={"size": 6, "color": color, "opacity": 0.8, "symbol": symbols[chosen].tolist()},
            text=rows["gene"], customdata=np.column_stack([change[chosen], rows["fdr"]]),
            hovertemplate="%{text}<br>log2 fold change %{customdata[0]:.2f}<br>-log10 p %{y:.1f}"
                          "<br>FDR %{customdata[1]:.2g}<extra></extra>"))
    named = table["gene"].isin(list(labelled)).to_numpy()
    figure.add_trace(go.Scatter(x=shown[named], y=height[named], mode="text", text=table["gene"][named],
                                textposition="top center", textfont={"size": 11}, showlegend=False,
                                hoverinfo="skip"))
    figure.update_layout(title=title, height=420, xaxis_title="log2 fold change (A vs B)",
                         yaxis_title="-log10 p-value", plot_bgcolor="white",
                         margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return figure
