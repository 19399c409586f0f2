"""A self-contained HTML report of an analysis, for a lab notebook or a colleague.

One file holds the dataset and its quality control, every parameter and the model's identity, the
datashaded layouts, knockout and screen tables, the encoder beside its PCA and linear baselines (with
a plain note where a baseline does as well), integration metrics and label transfer when given, and
the software versions. Figures are PNG images inside the file (``data:`` URIs); the file loads
nothing from the network and runs no script (its Content-Security-Policy forbids both), so it opens
offline in any browser. Every string that comes from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable

import anndata as ad
import numpy as np
import pandas as pd

from .cache import atomic_write
from .errors import InputError
from .glossary import agreement_note, baseline_note, help_for
from .annotations import annotation_columns
from .neighbors import Neighbors, knn
from .render import category_colors, fit_view, legend_table, png_bytes, render_categories
from .settings import printable
from .workflow import Analysis

SECTIONS = {"dataset": "Dataset and quality control", "parameters": "Parameters", "layouts": "Layouts",
            "knockouts": "Knockouts", "screens": "Knockout screens", "baselines": "The encoder beside its baselines",
            "metrics": "Integration metrics", "transfer": "Label transfer", "versions": "Software"}
METHOD_LABELS = {"encoder": "Encoder", "pca": "PCA baseline", "linear": "Linear baseline"}
EMBEDDING_LABELS = {"X_encoder": "Encoder", "X_pca": "PCA baseline"}
TOP_ROWS = 20
TOP_OVERLAP = 10  # screens: how many of each method's best genes are compared
MIN_RANKED = 5  # knockouts: fewer genes give no useful rank correlation
FDR_LEVEL = 0.05
SCREEN_COLUMNS = ["gene", "n_cells", "mean_cosine", "mean_shift", "mean_shift_norm", "p_value", "fdr",
                  "goal_alignment", "goal_cosine_gain", "estimate"]
KNOCKOUT_COLUMNS = ["gene", "cells", "mode", "method", "n_cells", "n_not_expressed", "mean_cosine", "mean_shift",
                    "mean_shift_norm", "goal_alignment", "goal_cosine_gain"]
FORMATS = {"mean_cosine": "{:.6f}", "cosine": "{:.6f}"}
PACKAGES = {"numpy": ["numpy"], "pandas": ["pandas"], "scipy": ["scipy"], "scanpy": ["scanpy"],
            "anndata": ["anndata"], "torch": ["torch"], "faiss": ["faiss-cpu", "faiss-gpu", "faiss"],
            "umap-learn": ["umap-learn"], "datashader": ["datashader"], "scikit-learn": ["scikit-learn"],
            "matplotlib": ["matplotlib"], "streamlit": ["streamlit"]}
CAVEAT = ("Published benchmarks of perturbation prediction often find that simple linear baselines do as well as "
          "single-cell foundation models (e.g. Ahlmann-Eltze, Huber & Anders, Nature Methods 2025). Read the "
          "encoder's numbers with the baselines beside them: a gene the encoder ranks high but the baselines do not "
          "is a hypothesis to test, not a finding.")
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5rem;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
th[title]{text-decoration:underline dotted;cursor:help}
.meta,.help{color:#555;font-size:.85rem}.help{margin:.2rem 0 1rem}.help li{margin:.1rem 0}
.note{background:#fff7e0;border-left:4px solid #e69f00;padding:.5rem .8rem;margin:.8rem 0}
.figures{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}figcaption{font-size:.85rem;color:#444}
.legend{font-size:.85rem;columns:2;max-width:700px;list-style:none;padding-left:0}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:50%;margin-right:.35rem;vertical-align:middle}
img{max-width:100%;height:auto;border:1px solid #eee}.scroll{overflow-x:auto}nav li{display:inline;margin-right:1rem}
"""


@dataclass
class ScreenReport:
    """One knockout screen: which cells (and goal state), each method's table from :func:`sccore.perturb.screen`
    (method -> table), and whether it was cancelled part-way (``partial``)."""

    cells: str
    tables: dict[str, pd.DataFrame]
    goal: str = ""
    partial: bool = False


def _text(value) -> str:
    """``value`` as HTML text: undecodable characters escaped, then HTML-escaped."""
    return html.escape(printable(str(value)))


def _format(column: str, value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–"
        if float(value).is_integer() and abs(value) >= 1 and column.startswith("n_"):
            return f"{int(value):,}"
        return FORMATS.get(column, "{:.3g}").format(float(value))
    return _text(value)


def _help_list(columns: Iterable[str]) -> str:
    """One line of plain-language help per kind of number in ``columns`` (each sentence once)."""
    seen, items = set(), []
    for column in columns:
        sentence = help_for(column)
        if sentence and sentence not in seen:
            seen.add(sentence)
            items.append(f"<li>{_text(sentence)}</li>")
    return f'<ul class="help">{"".join(items)}</ul>' if items else ""


def _table(frame: pd.DataFrame, max_rows: int | None = None, index: bool = False, help_text: bool = True) -> str:
    """An HTML table of ``frame`` (every value escaped), headers with their help as a tooltip, and the help of each
    kind of number below it."""
    if index:
        frame = frame.reset_index()
    shown = frame.head(max_rows) if max_rows else frame
    columns = [str(c) for c in frame.columns]
    head = "".join(f'<th title="{_text(help_for(c))}">{_text(c)}</th>' if help_for(c) else f"<th>{_text(c)}</th>"
                   for c in columns)
    rows = []
    for values in shown.itertuples(index=False):
        cells = []
        for column, value in zip(columns, values):
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            cells.append(f'<td{" class=n" if numeric else ""}>{_format(column, value)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = f'<p class="meta">The first {len(shown):,} of {len(frame):,} rows.</p>' if len(shown) < len(frame) else ""
    table = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    return table + more + (_help_list(columns) if help_text else "")


def _image(png: bytes, alt: str, caption: str = "") -> str:
    """A figure with the PNG inside the page as a ``data:`` URI."""
    encoded = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_text(alt)}">'
            f"<figcaption>{_text(caption)}</figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{_text(text)}</p>' if text else ""


def _matplotlib_png(draw, size: tuple[float, float]) -> bytes:
    """PNG bytes of a matplotlib figure drawn by ``draw(figure)`` (no pyplot, so no global state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    draw(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# --- What the report computes -------------------------------------------------------------------------------------


def describe_cells(where: dict[str, str] | None, n_cells: int, n_population: int) -> str:
    """How a report names a population and its sample, e.g. 'cell_type = B, a random sample of 100 of its 350
    cells'."""
    name = ", ".join(f"{key} = {value}" for key, value in (where or {}).items()) or "all cells"
    if n_cells < n_population:
        return f"{name}, a random sample of {n_cells:,} of its {n_population:,} cells"
    return f"{name}, {n_cells:,} cells"


def software_versions() -> dict[str, str]:
    """Python, sccore (with its git commit when it runs from a checkout) and the main libraries' versions."""
    from . import __version__

    versions = {"python": platform.python_version(), "platform": platform.platform(terse=True),
                "sccore": __version__}
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            described = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                                       capture_output=True, text=True, timeout=5)
            if described.returncode == 0 and described.stdout.strip():
                versions["sccore commit"] = described.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    for name, distributions in PACKAGES.items():
        for distribution in distributions:
            try:
                versions[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            versions[name] = "not installed"
    return versions


def main_annotation(adata: ad.AnnData, color_by: str | None = None) -> str | None:
    """The ``obs`` column the report colours and scores by: ``color_by``, else the most useful annotation."""
    columns = annotation_columns(adata)
    if color_by is None:
        return columns[0] if columns else None
    if color_by not in adata.obs.columns:
        raise InputError(f"obs has no column '{printable(color_by)}' to colour by; choose one of: "
                         f"{', '.join(map(printable, columns)) or '(none: omit the option)'}.")
    if color_by not in columns:
        raise InputError(f"obs['{printable(color_by)}'] is not an annotation with 2 to 500 values; choose one of: "
                         f"{', '.join(map(printable, columns)) or '(none: omit the option)'}.")
    return color_by


def neighbour_agreement(neighbors: Neighbors, labels) -> float:
    """The mean share of each cell's neighbours (itself excluded) that carry its label."""
    codes = pd.Series(np.asarray(labels)).astype("category").cat.codes.to_numpy()
    others = neighbors.indices[:, 1:]
    valid = others >= 0
    same = (codes[np.where(valid, others, 0)] == codes[:, None]) & valid
    return float(np.mean(same.sum(1) / np.maximum(valid.sum(1), 1)))


def _embeddings(adata: ad.AnnData) -> list[str]:
    """``obsm`` keys of embeddings (numeric, more than two dimensions), the encoder first, then PCA."""
    values = {key: np.asarray(adata.obsm[key]) for key in adata.obsm}
    keys = [key for key, value in values.items()
            if value.ndim == 2 and value.shape[1] > 2 and np.issubdtype(value.dtype, np.number)]
    return sorted(keys, key=lambda key: (key != "X_encoder", key != "X_pca", key))


def embedding_agreement(adata: ad.AnnData, column: str, neighbors: dict[str, Neighbors] | None = None,
                        n_neighbors: int = 15) -> pd.DataFrame:
    """For each embedding: the mean share of a cell's ``n_neighbors`` nearest neighbours that share its
    ``obs[column]`` value (``knn_agreement``); neighbours are reused from ``neighbors`` where given."""
    labels = adata.obs[column].astype(str).to_numpy()
    rows = []
    for key in _embeddings(adata):
        found = (neighbors or {}).get(key)
        if found is None:
            found = knn(np.asarray(adata.obsm[key], dtype=np.float32), n_neighbors + 1)
        rows.append({"embedding": key, "knn_agreement": neighbour_agreement(found, labels)})
    return pd.DataFrame(rows, columns=["embedding", "knn_agreement"])


def method_agreement(tables: dict[str, pd.DataFrame], score: str, top: int = TOP_OVERLAP) -> pd.DataFrame:
    """For each pair of methods' screen tables: the genes both screened, the Spearman correlation of their
    ``score`` and how many of one's ``top`` best genes the other also ranks in its ``top`` (``top`` is cut to a third
    of the shared genes, so that the overlap means something)."""
    from scipy import stats

    rows = []
    names = list(tables)
    for position, first in enumerate(names):
        for second in names[position + 1:]:
            both = tables[first][["gene", score]].merge(tables[second][["gene", score]], on="gene").dropna()
            rho = float(stats.spearmanr(both[f"{score}_x"], both[f"{score}_y"])[0]) if len(both) >= 3 else np.nan
            n_best = max(1, min(top, len(both) // 3))
            best_first = set(both.nlargest(n_best, f"{score}_x")["gene"])
            best_second = set(both.nlargest(n_best, f"{score}_y")["gene"])
            rows.append({"methods": f"{METHOD_LABELS.get(first, first)} vs {METHOD_LABELS.get(second, second)}",
                         "shared_genes": len(both), "spearman_rho": rho,
                         "top_overlap": f"{len(best_first & best_second)} of {n_best}"})
    return pd.DataFrame(rows, columns=["methods", "shared_genes", "spearman_rho", "top_overlap"])


# --- Sections -----------------------------------------------------------------------------------------------------


def _qc_png(qc: pd.DataFrame, criteria: pd.DataFrame) -> bytes:
    """The QC histograms with the applied rule's cuts (``criteria``: ``uns['preprocess']['criteria']``; skipped
    criteria are not drawn)."""
    def draw(figure) -> None:
        panels = [("n_genes", "Detected genes per cell"), ("total_counts", "Counts per cell"),
                  ("pct_mito", "Mitochondrial counts (%)")]
        for axis, (column, title) in zip(figure.subplots(1, 3), panels):
            values = pd.to_numeric(qc[column], errors="coerce").dropna()
            axis.hist(values, bins=60, color="#0072B2")
            for cut in criteria.itertuples():
                for value in (cut.low, cut.high) if cut.metric == column and not cut.skipped else ():
                    if np.isfinite(value):
                        axis.axvline(float(value), color="#D55E00", linestyle="--")
            axis.set_title(title, fontsize=10)
            axis.tick_params(labelsize=8)

    return _matplotlib_png(draw, (10, 2.8))


def _variance_png(ratio: np.ndarray) -> bytes:
    def draw(figure) -> None:
        axis = figure.subplots()
        axis.plot(np.arange(1, len(ratio) + 1), ratio, marker="o", markersize=3, color="#0072B2")
        axis.set_xlabel("principal component")
        axis.set_ylabel("fraction of variance")

    return _matplotlib_png(draw, (5, 2.8))


def _dataset_section(adata: ad.AnnData, qc: pd.DataFrame | None) -> str:
    dataset, source = adata.uns.get("dataset", {}), adata.uns.get("input", {})
    steps = pd.DataFrame(adata.uns["preprocess"]["steps"]) if "preprocess" in adata.uns else pd.DataFrame()
    parts = [f"<p><b>{_text(dataset.get('name', 'Dataset'))}</b>. {_text(dataset.get('description', ''))}</p>"]
    if source.get("counts_from"):
        parts.append(f"<p>Counts read from: {_text(source['counts_from'])}.</p>")
    notes = list(source.get("notes", []))
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_text(note)}</li>" for note in notes) + "</ul>")
    if len(steps):
        first = steps.iloc[0]
        n_genes_in = int(steps["genes_left"].iloc[0] + steps["genes_removed"].iloc[0])
        parts.append(f"<p>{int(first['cells_left'] + first['cells_removed']):,} cells × {n_genes_in:,} genes in the "
                     f"file; <b>{adata.n_obs:,} cells × {adata.n_vars:,} genes</b> after quality control"
                     + (f", {int(adata.uns['preprocess']['n_highly_variable']):,} highly variable genes feed PCA"
                        if "n_highly_variable" in adata.uns.get("preprocess", {}) else "") + ".</p>")
        parts.append("<h3>What each filter removed</h3>" + _table(steps, help_text=False))
    else:
        parts.append(f"<p><b>{adata.n_obs:,} cells × {adata.n_vars:,} genes</b>.</p>")
    preprocess = adata.uns.get("preprocess", {})
    parts.extend(f"<p><b>Warning:</b> {_text(str(warning))}</p>" for warning in preprocess.get("warnings", []))
    criteria = pd.DataFrame(preprocess.get("criteria", {}))
    if qc is None and {"qc_n_genes", "qc_total_counts", "qc_pct_mito"} <= set(adata.obs.columns):
        qc = adata.obs[["qc_n_genes", "qc_total_counts", "qc_pct_mito"]].rename(columns=lambda c: c[3:])
        caption = "Quality control of the cells kept (the dashed lines are the filters)."
    else:
        caption = "Quality control of every cell in the file, before filtering (the dashed lines are the filters)."
    figures = [_image(_qc_png(qc, criteria), "Quality-control histograms", caption)] if qc is not None else []
    ratio = adata.uns.get("X_pca", {}).get("variance_ratio")
    if ratio is not None and len(ratio):
        figures.append(_image(_variance_png(np.asarray(ratio)), "Variance explained per principal component",
                              "Variance explained by each principal component."))
    if figures:
        parts.append(f'<div class="figures">{"".join(figures)}</div>' + _help_list(["variance_ratio"]))
    return "".join(parts)


def _model_rows(info: dict) -> list[tuple[str, str, object]]:
    """The encoder's identity: folder name, kind, architecture (``config.json``) and a fingerprint of its files."""
    from .models.store import model_fingerprint

    folder = Path(str(info.get("model", "")))
    rows = [("encoder", "model folder", folder.name or str(folder))]
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError):
            config = {}
        for key in ("name", "model_type", "n_layers", "d_model", "n_heads", "d_ff", "max_length", "n_bins",
                    "vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads"):
            if key in config:
                rows.append(("encoder", key, config[key]))
        try:
            rows.append(("encoder", "fingerprint (hash of the model files)", model_fingerprint(folder)))
        except OSError:
            pass
    for key in ("model_kind", "model_name", "pooling", "layer", "genes_matched", "genes_in_dataset", "device"):
        if key in info:
            rows.append(("encoder", key, info[key]))
    return rows


def _parameters_section(adata: ad.AnnData, params) -> str:
    rows = [("quality control", key, value) for key, value in adata.uns.get("preprocess", {}).get("params", {}).items()]
    pca_info = adata.uns.get("X_pca", {})
    if pca_info:
        rows += [("PCA", "n_comps", pca_info.get("n_comps")),
                 ("PCA", "use_highly_variable", pca_info.get("params", {}).get("use_highly_variable"))]
    if params is not None:
        rows += [("neighbours", "n_neighbors", params.n_neighbors)]
        rows += [("FAISS index", key, value) for key, value in asdict(params.index).items()]
        rows += [("UMAP", key, value) for key, value in asdict(params.umap).items()]
    else:
        for key in (k for k in adata.uns if str(k).startswith("X_umap")):
            rows += [(f"UMAP ({key})", name, value) for name, value in adata.uns[key].items()
                     if not isinstance(value, dict)]
    if "X_encoder" in adata.uns:
        rows += _model_rows(adata.uns["X_encoder"])
    if not rows:
        return ""
    frame = pd.DataFrame(rows, columns=["step", "parameter", "value"])
    frame["value"] = frame["value"].map(lambda value: "(none)" if value in ("", None) else str(value))
    return _table(frame, help_text=False)


def _layouts(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """The UMAPs to draw; PC1 vs PC2 when there is none."""
    views = {key: np.asarray(adata.obsm[key]) for key in adata.obsm if str(key).startswith("X_umap")}
    if not views and "X_pca" in adata.obsm and adata.obsm["X_pca"].shape[1] >= 2:
        views["PC1 vs PC2"] = np.asarray(adata.obsm["X_pca"])[:, :2]
    return views


def _layouts_section(adata: ad.AnnData, column: str | None) -> str:
    views = _layouts(adata)
    if not views:
        return ""
    if column is not None:
        values = adata.obs[column].astype("category")
        codes, categories = values.cat.codes.to_numpy(), [str(v) for v in values.cat.categories]
    else:
        codes, categories = np.zeros(adata.n_obs, dtype=np.int32), ["all cells"]
    colors = category_colors(len(categories)) if column is not None else ["#9A9A9A"]
    legend = legend_table(codes, categories, colors)
    items = "".join(f'<li><span class="swatch" style="background:{_text(row.color)}"></span>{_text(row.category)} '
                    f"({row.n_cells:,})</li>" for row in legend.itertuples())
    figures = []
    for key, coords in views.items():
        source = adata.uns.get(key, {}).get("use_rep", "")
        caption = f"{key}" + (f" (UMAP of {source})" if source else "") + (f", coloured by {column}" if column else "")
        image = render_categories(coords, codes, colors, fit_view(coords, 500, 380))
        figures.append(_image(png_bytes(image), caption, caption))
    about = (f"<p>Cells coloured by <b>{_text(column)}</b> (datashader: where cells overlap, colours blend by "
             f"count).</p>" if column else "<p>This dataset has no categorical annotation to colour by.</p>")
    return f'{about}<div class="figures">{"".join(figures)}</div><ul class="legend">{items}</ul>'


def _knockouts_section(knockouts: pd.DataFrame) -> str:
    frame = knockouts.copy()
    frame["method"] = frame["method"].map(lambda m: METHOD_LABELS.get(m, m))
    shown = frame[[c for c in KNOCKOUT_COLUMNS if c in frame.columns]]
    same = [c for c in ("cells", "mode") if c in shown.columns and shown[c].nunique() == 1]
    common = "; ".join(f"{c}: {shown[c].iloc[0]}" for c in same)
    return ("<p>Each row: one gene knocked out in the chosen cells by one method"
            + (f" ({_text(common)})" if common else "") + ". Sizes differ between embeddings, so compare methods by "
            "how they rank genes, not by the raw numbers.</p>" + _table(shown.drop(columns=same)))


def _screens_section(screens: list[ScreenReport], top: int) -> str:
    parts = []
    for screen in screens:
        title = f"Screen of {screen.cells}" + (f"; goal: {screen.goal}" if screen.goal else "")
        parts.append(f"<h3>{_text(title)}</h3>")
        if screen.partial:
            parts.append(_note("Partial result: the screen was cancelled, so each gene's numbers cover only the cells "
                               "screened so far."))
        summary = []
        for method, table in screen.tables.items():
            significant = int((table["fdr"] < FDR_LEVEL).sum()) if "fdr" in table else "–"
            summary.append({"method": METHOD_LABELS.get(method, method), "genes screened": len(table),
                            f"genes with FDR < {FDR_LEVEL}": significant,
                            "top gene": str(table["gene"].iloc[0]) if len(table) else "–"})
        parts.append(_table(pd.DataFrame(summary), help_text=False))
        for method, table in screen.tables.items():
            parts.append(f"<h4>{_text(METHOD_LABELS.get(method, method))}: the top {min(top, len(table))} genes</h4>")
            parts.append(_table(table[[c for c in SCREEN_COLUMNS if c in table.columns]], max_rows=top,
                                help_text=False))
        columns = {c for table in screen.tables.values() for c in table.columns}
        parts.append(_help_list([c for c in SCREEN_COLUMNS if c in columns]))
    return "".join(parts)


def _rank_png(tables: dict[str, pd.DataFrame], first: str, second: str, score: str) -> bytes:
    both = tables[first][["gene", score]].merge(tables[second][["gene", score]], on="gene").dropna()

    def draw(figure) -> None:
        axis = figure.subplots()
        axis.scatter(both[f"{score}_x"].rank(ascending=False), both[f"{score}_y"].rank(ascending=False), s=8,
                     color="#0072B2", alpha=0.7)
        axis.set_xlabel(f"rank by the {METHOD_LABELS.get(first, first)}")
        axis.set_ylabel(f"rank by the {METHOD_LABELS.get(second, second)}")
        axis.invert_xaxis()
        axis.invert_yaxis()

    return _matplotlib_png(draw, (4.2, 3.6))


def metrics_note(metrics: pd.DataFrame) -> str:
    """The honest sentence on the scIB total score of ``X_encoder`` beside ``X_pca`` (rows of a
    :func:`sccore.metrics.benchmark_embeddings` table); '' unless both are scored."""
    if not {"X_encoder", "X_pca"} <= set(map(str, metrics.index)) or "total" not in metrics:
        return ""
    return baseline_note("the scIB total score", float(metrics.loc["X_encoder", "total"]),
                         {"PCA baseline": float(metrics.loc["X_pca", "total"])})


def transfer_note(transfer: pd.DataFrame) -> str:
    """The honest sentence on the best label-transfer accuracy in ``X_encoder`` beside ``X_pca`` (rows with
    ``embedding`` and ``accuracy``); '' unless both embeddings were used."""
    if not {"embedding", "accuracy"} <= set(transfer.columns):
        return ""
    by_embedding = transfer.groupby(transfer["embedding"].astype(str))["accuracy"].max()
    if not {"X_encoder", "X_pca"} <= set(by_embedding.index):
        return ""
    return baseline_note("label-transfer accuracy", float(by_embedding["X_encoder"]),
                         {"PCA baseline": float(by_embedding["X_pca"])})


def _embedding_comparison(adata: ad.AnnData, column: str | None, neighbors: dict, metrics: pd.DataFrame | None,
                          transfer: pd.DataFrame | None) -> str:
    if "X_encoder" not in adata.obsm:
        return ("<p>No encoder embeds this dataset, so the embeddings cannot be compared with it; every number here "
                "is a baseline's.</p>")
    parts, notes = [], []
    if column is not None:
        agreement = embedding_agreement(adata, column, neighbors)
        scores = dict(zip(agreement["embedding"], agreement["knn_agreement"]))
        agreement.insert(1, "method", agreement["embedding"].map(lambda key: EMBEDDING_LABELS.get(key, key)))
        parts.append(f"<p>How well each embedding keeps cells with the same <b>{_text(column)}</b> together "
                     f"(each cell's nearest neighbours, as the UMAP uses them):</p>" + _table(agreement))
        if "X_pca" in scores:
            notes.append(baseline_note(f"neighbour agreement by {column}", scores["X_encoder"],
                                       {"PCA baseline": scores["X_pca"]}))
    if metrics is not None:
        notes.append(metrics_note(metrics))
    if transfer is not None:
        notes.append(transfer_note(transfer))
    return "".join(parts) + "".join(_note(note) for note in notes if note)


def knockout_shifts(knockouts: pd.DataFrame) -> pd.DataFrame:
    """The mean shift of each deletion knockout (rows: gene and cells) by each method (columns, encoder first)."""
    deletions = knockouts[knockouts["mode"] == "delete"] if "mode" in knockouts else knockouts
    keys = [c for c in ("gene", "cells") if c in deletions.columns]
    side = deletions.pivot_table(index=keys, columns="method", values="mean_shift", aggfunc="first")
    return side[[m for m in METHOD_LABELS if m in side.columns]]


def knockout_note(knockouts: pd.DataFrame) -> str:
    """One honest sentence on whether the encoder and the linear baseline rank these knockouts alike ('' without
    both methods); with fewer than ``MIN_RANKED`` genes it says that more are needed to tell."""
    from scipy import stats

    side = knockout_shifts(knockouts)
    if not {"encoder", "linear"} <= set(side.columns):
        return ""
    both = side[["encoder", "linear"]].dropna()
    if len(both) < MIN_RANKED:
        return (f"{len(both)} knockout(s) cannot say whether the encoder beats the baselines: knock out "
                f"{MIN_RANKED} or more genes, or run a screen, to compare how the methods rank them.")
    return agreement_note(float(stats.spearmanr(both["encoder"], both["linear"])[0]), len(both), "these knockouts")


def _knockout_comparison(knockouts: pd.DataFrame) -> str:
    side = knockout_shifts(knockouts)
    if len(side.columns) < 2:
        return ""
    text = ("<p>The mean shift (1 − cosine) of each knockout by each method, side by side. Each method's shifts are "
            "in its own embedding, so read down a column (which genes move cells most) rather than across.</p>")
    note = knockout_note(knockouts)
    side.columns = [f"{METHOD_LABELS[m]} shift" for m in side.columns]
    return text + _table(side, index=True, help_text=False) + _help_list(["mean_shift"]) + _note(note)


def _screen_comparison(screens: list[ScreenReport]) -> str:
    parts = []
    for screen in screens:
        if len(screen.tables) < 2:
            continue
        score = "goal_alignment" if all("goal_alignment" in t for t in screen.tables.values()) else "mean_shift"
        agreement = method_agreement(screen.tables, score)
        parts.append(f"<h4>{_text(f'Screen of {screen.cells}')}: do the methods rank genes alike (by {score})?</h4>"
                     + _table(agreement))
        pair = agreement[agreement["methods"] == f"{METHOD_LABELS['encoder']} vs {METHOD_LABELS['linear']}"]
        if len(pair):
            parts.append(_note(agreement_note(float(pair["spearman_rho"].iloc[0]), int(pair["shared_genes"].iloc[0]),
                                              "the screened genes")))
            if int(pair["shared_genes"].iloc[0]) >= 3:
                parts.append(_image(_rank_png(screen.tables, "encoder", "linear", score),
                                    "Ranks of the screened genes by the encoder and the linear baseline",
                                    "Each dot is a gene; on the diagonal, both methods rank it alike."))
    return "".join(parts)


def _baselines_section(adata, column, neighbors, knockouts, screens, metrics, transfer) -> str:
    parts = ["<p>The encoder's results are always read beside two baselines: <b>PCA</b> (the gene's log-expression "
             "set to zero and the cell re-projected on the PCA loadings) and a <b>linear</b> co-expression model "
             "(every gene moved by its regression on the knocked-out one, then projected).</p>",
             "<h3>Embeddings</h3>", _embedding_comparison(adata, column, neighbors, metrics, transfer)]
    if knockouts is not None and len(knockouts):
        parts += ["<h3>Knockouts</h3>", _knockout_comparison(knockouts)]
    if screens:
        parts += ["<h3>Screens</h3>", _screen_comparison(screens)]
    parts.append(_note(CAVEAT))
    return "".join(parts)


def _metrics_section(metrics: pd.DataFrame, about: str) -> str:
    text = f"<p>{_text(about)}</p>" if about else ""
    notes = "".join(_note(note) for note in metrics.attrs.get("notes", []))
    table = metrics.copy()
    if table.index.name is None:
        table.index.name = "embedding"
    return text + notes + _table(table, index=True)


def _transfer_section(transfer: pd.DataFrame, top: int) -> str:
    return ("<p>Each row: one label transfer, where every query cell gets the weighted vote of its k nearest "
            "reference cells; below the confidence threshold it stays unassigned.</p>" + _table(transfer, max_rows=top))


def _versions_section(created: str) -> str:
    versions = software_versions()
    frame = pd.DataFrame({"software": list(versions), "version": list(versions.values())})
    return f"<p>Written {_text(created)}.</p>" + _table(frame, help_text=False)


# --- The report ----------------------------------------------------------------------------------------------------


def build_report(source: Analysis | ad.AnnData, sections: Iterable[str] = tuple(SECTIONS), color_by: str | None = None,
                 qc: pd.DataFrame | None = None, knockouts: pd.DataFrame | None = None,
                 screens: list[ScreenReport] | None = None, metrics: pd.DataFrame | None = None,
                 metrics_about: str = "", transfer: pd.DataFrame | None = None, top: int = TOP_ROWS,
                 title: str | None = None) -> str:
    """The report of an analysis (or a processed AnnData) as one self-contained HTML page.

    ``sections`` picks from :data:`SECTIONS` (sections without content are left out). ``color_by`` names the
    annotation the layouts are coloured and the embeddings scored by (default: the most useful one). ``qc`` is
    the per-cell QC table before filtering (:func:`sccore.pp.qc_metrics`; default: the kept cells'). ``knockouts``
    holds rows of :meth:`sccore.perturb.KnockoutResult.summary` (optionally with ``cells`` and ``mode`` columns),
    ``screens`` the screens, ``metrics`` a table of :func:`sccore.metrics.benchmark_embeddings` (one row per
    embedding; ``metrics_about`` says which labels and batches), ``transfer`` one row per label transfer (e.g.
    embedding, accuracy, macro_f1). Tables show their ``top`` rows.
    """
    chosen = list(sections)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise InputError(f"Unknown report section(s) {', '.join(map(printable, unknown))}; choose from "
                         f"{', '.join(SECTIONS)}.")
    adata = source.adata if isinstance(source, Analysis) else source
    params = source.params if isinstance(source, Analysis) else None
    neighbors = source.neighbors if isinstance(source, Analysis) else {}
    column = main_annotation(adata, color_by)
    screens = [screen for screen in screens or [] if screen.tables]
    created = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    builders = {
        "dataset": lambda: _dataset_section(adata, qc),
        "parameters": lambda: _parameters_section(adata, params),
        "layouts": lambda: _layouts_section(adata, column),
        "knockouts": lambda: _knockouts_section(knockouts) if knockouts is not None and len(knockouts) else "",
        "screens": lambda: _screens_section(screens, top) if screens else "",
        "baselines": lambda: _baselines_section(adata, column, neighbors, knockouts, screens, metrics, transfer),
        "metrics": lambda: _metrics_section(metrics, metrics_about) if metrics is not None and len(metrics) else "",
        "transfer": lambda: _transfer_section(transfer, top) if transfer is not None and len(transfer) else "",
        "versions": lambda: _versions_section(created),
    }
    filled = [(key, SECTIONS[key], builders[key]()) for key in SECTIONS if key in chosen]
    filled = [(key, label, content) for key, label, content in filled if content]
    name = adata.uns.get("dataset", {}).get("name", "dataset")
    heading = title or f"sccore report: {printable(str(name))}"
    contents = "".join(f'<li><a href="#{key}">{_text(label)}</a></li>' for key, label, _ in filled)
    body = "".join(f'<section id="{key}"><h2>{_text(label)}</h2>{content}</section>'
                   for key, label, content in filled)
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_text(heading)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_text(heading)}</h1><p class=\"meta\">{adata.n_obs:,} cells · written {_text(created)} by sccore. "
            "A self-contained file: it loads nothing from the network.</p>"
            f"<nav><ul>{contents}</ul></nav>{body}</body></html>\n")


def write_report(path: str | Path, source: Analysis | ad.AnnData, **options) -> int:
    """Write :func:`build_report` of ``source`` (``options`` as there) to ``path`` atomically; return its size in
    bytes."""
    document = build_report(source, **options).encode("utf-8")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(document), suffix=".html")
    return len(document)
