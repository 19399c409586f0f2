"""The ``report`` task: the dashboard's analysis, knockouts and a screen by every method, as one offline HTML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .base import (Limits, Progress, QualityControl, ShouldStop, check_stop, never, open_counts,
                   quality_control_fields, quiet, require, stoppable)


@dataclass(frozen=True, kw_only=True)
class ReportParams(QualityControl):
    """Parameters of :func:`run`: the raw counts ``input``, the ``output`` HTML, the encoder (``model``, optional), the
    annotation to colour by, the genes to ``knockout`` in the ``where`` cells (at most ``max_cells``), whether to
    ``screen`` the ``top`` genes toward a ``goal``, and the ``rows`` shown of each ranked table."""

    task: ClassVar[str] = "report"
    limits: ClassVar[Limits] = {"top": (1, 50_000), "max_cells": (0, 10_000_000), "rows": (1, 10_000)}
    input: str
    output: str = ""
    model: str | None = None
    device: str = "auto"
    color_by: str | None = None
    knockout: tuple[str, ...] = ()
    where: dict[str, str] = field(default_factory=dict)
    screen: bool = False
    top: int = 100
    goal: dict[str, str] = field(default_factory=dict)
    max_cells: int = 0
    seed: int = 0
    rows: int = 20


@dataclass
class ReportOutcome:
    """What :func:`run` wrote: the file's size in bytes, the cells analysed, knockout rows and screens."""

    size: int
    n_cells: int
    n_knockouts: int
    n_screens: int


def _perturbation_fields(params: ReportParams, method: str) -> dict:
    """The fields that the knockout and screen tasks' parameters take from the report's for ``method``: the input, the
    model (the encoder's folder, or the baseline's name), the device and the quality-control filters."""
    return {"input": params.input, "model": params.model if method == "encoder" else method, "device": params.device,
            **quality_control_fields(params)}


def run(params: ReportParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ReportOutcome:
    """Run the dashboard's pipeline (:func:`sccore.workflow.analyse`), knock out each gene (the ``knockout`` task's
    core) and screen (the ``screen`` task's core) by the encoder (with ``model``) and both baselines, each goal in the
    analysis's embedding of the method, and write the report to ``params.output``."""
    import pandas as pd

    from ..device import resolve_device
    from ..models import load_model
    from ..perturb import goal_for, goal_scores
    from ..pp import qc_metrics
    from ..report import ScreenReport, describe_cells, main_annotation, write_report
    from ..workflow import PipelineParams, analyse
    from . import knockout, screen

    output = params.output_path
    raw = open_counts(params.input, params.library_size_key)
    main_annotation(raw, params.color_by)  # a bad colour_by fails before anything is computed
    pipeline = PipelineParams(preprocess=params.preprocess_params(raw), encoder_model=params.model or "",
                              encoder_device=params.device)
    report = stoppable(progress, should_stop)
    analysis = analyse(raw, pipeline, progress=lambda fraction, message: report(0.4 * fraction, message))
    adata, library_size_key = analysis.adata, pipeline.preprocess.library_size_key
    model = load_model(params.model, resolve_device(params.device)) if params.model else None
    methods = (["encoder"] if model is not None else []) + ["pca", "linear"]
    embeddings = {method: adata.obsm["X_encoder" if method == "encoder" else "X_pca"] for method in methods}
    screen_params = {method: screen.ScreenParams(where=params.where, goal=params.goal, top=params.top,
                                                 max_cells=params.max_cells, seed=params.seed,
                                                 **_perturbation_fields(params, method)) for method in methods}
    population, cells = screen.screened_cells(adata, screen_params["pca"])
    about = describe_cells(params.where, len(cells), len(population))
    rows_by_method = {}
    for position, method in enumerate(methods if params.knockout else []):
        def knockout_progress(fraction: float, message: str, position: int = position, method: str = method) -> None:
            report(0.4 + 0.1 * (position + fraction) / len(methods), f"{method}: {message}")

        goal = goal_for(adata, method, model, cells, params.goal, library_size_key, embeddings[method])
        knockout_params = knockout.KnockoutParams(genes=params.knockout, **_perturbation_fields(params, method))
        rows_by_method[method] = [
            {**result.summary(), "cells": about, "mode": "delete",
             **(goal_scores(result.original, result.perturbed, goal) if goal is not None else {})}
            for result in knockout.compute(adata, knockout_params, model, library_size_key, cells, knockout_progress,
                                           should_stop)]
    rows = [row for gene_rows in zip(*rows_by_method.values()) for row in gene_rows]  # gene by gene, every method
    screens = []
    if params.screen:
        tables = {}
        for position, method in enumerate(methods):
            def method_progress(fraction: float, message: str, position: int = position, method: str = method) -> None:
                report(0.5 + 0.45 * (position + fraction) / len(methods), f"screen, {method}: {message}")

            tables[method] = screen.compute(adata, screen_params[method], model, library_size_key, embeddings[method],
                                            method_progress)
        goal_text = ", ".join(f"{key} = {value}" for key, value in params.goal.items())
        screens.append(ScreenReport(about, tables, goal=goal_text))
    check_stop(should_stop)
    report(0.95, "writing the report")
    size = write_report(output, analysis, color_by=params.color_by, qc=qc_metrics(raw, pipeline.preprocess),
                        knockouts=pd.DataFrame(rows) if rows else None, screens=screens, top=params.rows)
    return ReportOutcome(size, adata.n_obs, len(rows), len(screens))
