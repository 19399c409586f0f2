"""Groupings of the cells for the pages: the categorical annotations and the Leiden clustering chosen on the Clusters &
markers page, which this session keeps (:func:`remember`) so that the Explore page colours by it, lists its make-up
and compares its clusters like any annotation. The shared AnnData is never changed: a clustering's labels come from
the cache (:func:`dashboard.cached.leiden_clusters`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from sccore.render import View
from sccore.workflow import Analysis

from dashboard import cached, state

CLUSTERING = "chosen_clustering"  # session_state: the Clustering last chosen on the Clusters & markers page


@dataclass(frozen=True)
class Clustering:
    """Leiden clusters of the kNN graph of ``obsm[rep]`` in one analysis, at ``resolution``, seeded by ``seed``;
    ``model`` is the encoder the analysis embedded with (its key does not say), so that its graph's clusters are
    never taken for another model's."""

    analysis_key: str
    model: str
    rep: str
    resolution: float
    seed: int

    @classmethod
    def of(cls, analysis: Analysis, rep: str, resolution: float, seed: int) -> "Clustering":
        """The clustering of ``obsm[rep]``'s graph in ``analysis``."""
        return cls(analysis.key, analysis.params.encoder_model, rep, float(resolution), int(seed))

    @property
    def name(self) -> str:
        """How the pages list it beside the annotation columns."""
        return f"leiden ({self.rep}, resolution {self.resolution:g})"

    @property
    def cache_key(self) -> tuple:
        """What keys the results computed over its groups."""
        return ("leiden", self.model, self.rep, self.resolution, self.seed)

    def labels(self, analysis: Analysis) -> pd.Series:
        """Each cell's cluster (:func:`dashboard.cached.leiden_clusters`)."""
        return cached.leiden_clusters(analysis.key, self.model, self.rep, self.resolution, self.seed, analysis)


def graph_embeddings(analysis: Analysis) -> list[str]:
    """The embeddings whose kNN graph the analysis holds (``analysis.neighbors``, or stored in the AnnData as an
    atlas stores it), ``X_pca`` first."""
    from sccore.workflow import graph_key

    stored = {rep for rep in analysis.adata.obsm if graph_key(rep) in analysis.adata.uns}
    return sorted(set(analysis.neighbors) | stored, key=lambda rep: (rep != "X_pca", rep))


def remember(clustering: Clustering) -> None:
    """Keep ``clustering`` as this session's chosen clustering (one at a time)."""
    st.session_state[CLUSTERING] = clustering


def remembered(analysis: Analysis) -> Clustering | None:
    """The clustering this session chose for ``analysis``, or None."""
    clustering = st.session_state.get(CLUSTERING)
    current = isinstance(clustering, Clustering) and (clustering.analysis_key, clustering.model) == (
        analysis.key, analysis.params.encoder_model)
    return clustering if current else None


def groupings(analysis: Analysis) -> list[str]:
    """The names of what the cells can be grouped by: the categorical annotations (:func:`state.color_options`), then
    the clustering this session chose (:func:`remembered`)."""
    clustering = remembered(analysis)
    return state.color_options(analysis) + ([clustering.name] if clustering else [])


def _grouping(analysis: Analysis, name: str) -> tuple[tuple, pd.Series]:
    """The cache key and the labels of the grouping ``name`` (one of :func:`groupings`)."""
    clustering = remembered(analysis)
    if clustering is not None and name == clustering.name:
        return clustering.cache_key, clustering.labels(analysis)
    return ("obs", name), analysis.adata.obs[name]


def labels_of(analysis: Analysis, name: str) -> pd.Series:
    """Each cell's group in the grouping ``name`` (an ``obs`` column or the chosen clustering)."""
    return _grouping(analysis, name)[1]


def grouping_image(analysis: Analysis, layout: str, name: str, view: View):
    """The layout coloured by the grouping ``name`` (:func:`dashboard.cached.grouping_image`): image and legend."""
    key, labels = _grouping(analysis, name)
    return cached.grouping_image(analysis, layout, key, labels, view)


def groupings_table(analysis: Analysis, names: list[str]) -> pd.DataFrame:
    """The groupings ``names`` as the columns of one table (a row per cell, in the analysis's order), e.g. for
    ``sccore.select.composition``."""
    return pd.DataFrame({name: labels_of(analysis, name).array for name in names})


def marker_genes(analysis: Analysis, name: str, method: str) -> pd.DataFrame:
    """The marker genes of every group of the grouping ``name`` (:func:`dashboard.cached.marker_genes`)."""
    key, labels = _grouping(analysis, name)
    return cached.marker_genes(analysis.key, key, method, labels, analysis)


def marker_views(analysis: Analysis, name: str, genes: tuple[str, ...], per_group: int):
    """What the dot plot and the heat map of ``genes`` over the grouping ``name`` draw: each group's mean expression
    and share of expressing cells, and the expression of a sample of each group's cells with their groups."""
    key, labels = _grouping(analysis, name)
    return (cached.marker_expression(analysis.key, key, genes, labels, analysis),
            cached.marker_cells(analysis.key, key, genes, per_group, labels, analysis))
