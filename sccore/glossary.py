"""Plain-language help for every kind of number the dashboard and the reports show, one short sentence each.

``HELP`` holds the sentences by concept; :func:`help_for` finds the sentence for a table column
(``mean_cosine``, ``kmeans_ari``, ``predicted_cell_type_confidence``...). :func:`baseline_note` and
:func:`agreement_note` write the honest sentence shown wherever the encoder sits beside a baseline.
"""

from __future__ import annotations

import numpy as np

AS_GOOD = 0.01  # a baseline within this of the encoder's score (on a 0-1 scale) does as well

HELP = {
    "cosine": "Cosine similarity compares a cell's embedding before and after a change: 1 means it points the same "
              "way, lower means the change turned it.",
    "shift": "Shift is 1 − cosine similarity: 0 means the knockout leaves the cell where it was, larger means it "
             "moves the cell more.",
    "shift_norm": "Shift norm is how far the cell's embedding moves, in that embedding's own units, so compare it "
                  "within one method, not between methods.",
    "p_value": "The p-value is the chance of shifts this large if deleting this gene did no more than deleting a "
               "random expressed gene.",
    "fdr": "FDR (false discovery rate) is the p-value corrected for testing many genes: below 0.05, fewer than 1 in "
           "20 of the genes called would be flukes.",
    "goal_alignment": "Goal alignment is the cosine between a gene's mean shift and the direction from the cells "
                      "toward the goal state: 1 points straight at it, 0 sideways, −1 away.",
    "goal_cosine_gain": "Goal cosine gain is how much closer (in cosine similarity) the knockout brings the cells "
                        "to the goal state's average cell.",
    "spearman": "Spearman's ρ compares two rankings: 1 means the same order, 0 unrelated, −1 reversed.",
    "top_overlap": "Top overlap is how many of one method's best-ranked genes are also among the other's.",
    "knn_agreement": "Neighbour agreement is the share of each cell's nearest neighbours that carry its own label: "
                     "higher means the embedding keeps the labelled groups together.",
    "ari": "ARI (adjusted Rand index) says how well clusters of the embedding match the labels: 1 is a perfect "
           "match, 0 is what chance gives.",
    "nmi": "NMI (normalised mutual information) says how much the clusters tell about the labels: 1 is everything, "
           "0 is nothing.",
    "resolution": "Resolution sets how finely Leiden splits the neighbour graph: higher gives more, smaller "
                  "clusters.",
    "n_clusters": "Clusters is how many groups Leiden found in the embedding's neighbour graph.",
    "marker_score": "Score is the test statistic of a gene in the group against the other cells (Wilcoxon's z or "
                    "Welch's t): the larger, the more surely higher in the group.",
    "logfoldchange": "Log fold change is log2 of the gene's mean expression in the group (or A) over that in the "
                     "other cells (or B): 1 means twice as high, −1 half.",
    "de_pvalue": "The p-value is the chance of a difference this large between the two sets of cells if the gene's "
                 "expression did not differ.",
    "pct_in": "Pct in is the share of the group's (or A's) cells in which the gene is detected.",
    "pct_out": "Pct out is the share of the other cells (or B's) in which the gene is detected.",
    "lisi": "LISI counts how many different labels (cLISI, scaled so higher keeps cell types apart) or batches "
            "(iLISI, higher mixes batches) a cell's neighbourhood holds.",
    "silhouette": "Silhouette says whether cells sit closer to their own group than to the next one, scaled here to "
                  "0-1 (higher is better).",
    "isolated_labels": "Isolated labels scores how well the cell types found in the fewest batches stay apart "
                       "(higher is better).",
    "kbet": "kBET is the share of neighbourhoods whose batch mix matches the whole dataset's (higher mixes batches "
            "better).",
    "graph_connectivity": "Graph connectivity is the share of each cell type that stays connected in the neighbour "
                          "graph (higher is better).",
    "pcr_comparison": "PCR comparison is how much less of the embedding's variance the batches explain than in "
                      "the unintegrated PCA (higher removes more batch effect).",
    "bio_conservation": "Bio conservation is the mean of the cell-type metrics: how well the embedding keeps cell "
                        "types apart.",
    "batch_correction": "Batch correction is the mean of the batch metrics: how well the embedding mixes batches.",
    "total": "Total is 0.6 × bio conservation + 0.4 × batch correction, the scIB summary score.",
    "confidence": "Confidence is the winning label's share of the neighbours' weighted vote: 1 means every "
                  "neighbour agreed.",
    "accuracy": "Accuracy is the share of cells given their true label (unassigned cells count as wrong).",
    "macro_f1": "Macro F1 averages, over the true cell types, the balance of finding a type's cells and not "
                "mislabelling others as it, so rare types weigh as much as common ones.",
    "n_unassigned": "Unassigned cells are those whose confidence fell below the threshold, so they got no label.",
    "n_cells": "Cells is the number of cells a number is computed over.",
    "n_not_expressed": "Cells without the gene had no counts of it, so they are left out of every number rather "
                       "than counted as unaffected.",
    "variance_ratio": "Variance explained is the share of the data's variation each principal component captures.",
    "n_genes": "Genes is the number of genes measured in each cell.",
    "annotations": "Annotations are the columns that describe each cell (cell type, batch, donor…).",
    "euclidean_distance": "Distance is how far a neighbour lies from the query in the embedding: smaller is more "
                          "alike.",
    "cosine_similarity": "Similarity is the cosine between a neighbour's embedding and the query's: 1 points the "
                         "same way, 0 is unrelated.",
    "rank": "Rank orders the neighbours from the most similar (1) down.",
    "recall": "Recall is the share of a type's cells that got that label.",
    "precision": "Precision is the share of the cells given a label that truly are that type.",
    "f1": "F1 balances recall and precision for one type: 1 is perfect, 0 is none right.",
    "shared_genes": "Shared genes is how many genes both methods screened, the genes a comparison is made over.",
    "loss": "Loss is the model's error at guessing hidden genes: lower is better, and the validation loss (on cells "
            "held out of training) is the one to trust.",
    "cells_left": "Cells left is how many cells remain after each quality-control step.",
    "genes_left": "Genes left is how many genes remain after each quality-control step.",
    "estimate": "Estimate says whether a row is an exact deletion or a faster first-order estimate.",
}

COLUMN_HELP = {
    "mean_cosine": "cosine", "cosine": "cosine", "mean_shift": "shift", "mean_shift_norm": "shift_norm",
    "p_value": "p_value", "fdr": "fdr", "goal_alignment": "goal_alignment", "goal_cosine_gain": "goal_cosine_gain",
    "spearman_rho": "spearman", "top_overlap": "top_overlap", "knn_agreement": "knn_agreement",
    "kmeans_ari": "ari", "ari": "ari", "kmeans_nmi": "nmi", "nmi": "nmi", "clisi": "lisi", "ilisi": "lisi",
    "lisi": "lisi", "silhouette_label": "silhouette", "silhouette_batch": "silhouette",
    "isolated_labels": "isolated_labels", "kbet": "kbet", "graph_connectivity": "graph_connectivity",
    "pcr_comparison": "pcr_comparison", "bio_conservation": "bio_conservation",
    "batch_correction": "batch_correction", "total": "total", "confidence": "confidence",
    "mean_confidence": "confidence", "accuracy": "accuracy", "accuracy_assigned": "accuracy",
    "macro_f1": "macro_f1", "n_unassigned": "n_unassigned", "n_cells": "n_cells",
    "n_not_expressed": "n_not_expressed", "variance_ratio": "variance_ratio", "shared genes": "shared_genes",
    "score": "marker_score", "logfoldchange": "logfoldchange", "pvalue": "de_pvalue", "pct_in": "pct_in",
    "pct_out": "pct_out", "ARI": "ari", "NMI": "nmi",
}


def help_for(column: str) -> str | None:
    """The help sentence for a table column or a concept (``mean_shift``, ``kmeans_ari``, ``fdr``...), or None."""
    name = str(column)
    if name in HELP:
        return HELP[name]
    if name in COLUMN_HELP:
        return HELP[COLUMN_HELP[name]]
    if name.endswith("_confidence"):
        return HELP["confidence"]
    return None


def baseline_note(measure: str, encoder: float, baselines: dict[str, float]) -> str:
    """One honest sentence comparing the encoder's score on ``measure`` with the best baseline's (higher is
    better); '' when a score is missing."""
    finite = {name: float(value) for name, value in baselines.items() if np.isfinite(value)}
    if not finite or not np.isfinite(encoder):
        return ""
    name, best = max(finite.items(), key=lambda item: item[1])
    if best > encoder + AS_GOOD:
        return (f"The {name} does better than the encoder on {measure} ({best:.3f} vs {encoder:.3f}): on this data "
                "the encoder's embedding is not the better one.")
    if best >= encoder - AS_GOOD:
        return (f"The {name} does as well as the encoder on {measure} ({best:.3f} vs {encoder:.3f}): on this "
                "measure the encoder adds nothing over the baseline.")
    return f"The encoder does better than the {name} on {measure} ({encoder:.3f} vs {best:.3f})."


def agreement_note(rho: float, n_genes: int, what: str = "these genes") -> str:
    """One honest sentence on how far the linear baseline's ranking agrees with the encoder's."""
    if not np.isfinite(rho):
        return ""
    rough = "; few genes, so a rough estimate" if n_genes < 30 else ""
    if rho >= 0.7:
        return (f"The linear baseline ranks {what} much like the encoder (Spearman ρ = {rho:.2f} over {n_genes} genes"
                f"{rough}): for this ranking the encoder adds little beyond co-expression.")
    if rho >= 0.3:
        return (f"The encoder and the linear baseline partly agree on {what} (ρ = {rho:.2f} over {n_genes} genes"
                f"{rough}); where they differ, the baselines are the reference to beat.")
    return (f"The encoder and the linear baseline hardly agree on {what} (ρ = {rho:.2f} over {n_genes} genes{rough}): "
            "genes only the encoder ranks high are hypotheses to test, not findings.")
