"""What every task shares: the parameters base class (plain JSON in and out, checked), the quality-control
parameters of the tasks that start from raw counts, progress with cancellation, and the atomic writers."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import warnings
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Callable, ClassVar

from ..cache import atomic_write
from ..errors import Cancelled, InputError
from ..pp import QC_RULES, PreprocessParams

if TYPE_CHECKING:
    import anndata as ad

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
Limits = dict[str, tuple[float, float]]  # a numeric parameter -> the lowest and highest values it may take


def quiet(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""


def never() -> bool:
    """A ``should_stop`` that never asks a task to stop."""
    return False


def check_stop(should_stop: ShouldStop) -> None:
    """Raise :class:`sccore.errors.Cancelled` when ``should_stop()`` says so (between two units of work)."""
    if should_stop():
        raise Cancelled("stopped on request")


def stoppable(progress: Progress, should_stop: ShouldStop) -> Progress:
    """``progress`` that first checks ``should_stop`` (:func:`check_stop`): handed to the library's long loops,
    which report between their units of work, it stops them there."""
    def report(fraction: float, message: str) -> None:
        check_stop(should_stop)
        progress(fraction, message)

    return report


def require(condition: bool, message: str) -> None:
    """:class:`InputError` with ``message`` (which names the fix) unless ``condition`` holds."""
    if not condition:
        raise InputError(message)


@dataclass(frozen=True, kw_only=True)
class TaskParams:
    """Base of every task's parameters: a frozen dataclass whose fields (and their defaults) are the task's
    parameters, checked in ``__post_init__``, written to and read from plain JSON dicts."""

    task: ClassVar[str] = "task"  # the task's name in messages (the job kind or subcommand)
    output_field: ClassVar[str] = "output"  # the field naming what the task writes
    limits: ClassVar[Limits] = {}  # numeric field -> (lowest, highest) value it may take: the upper bounds keep one
    # request from holding a shared server's workers for everyone

    def __post_init__(self) -> None:
        """Check the parameters: every numeric field within its bounds (:meth:`bounds`); subclasses add their own
        checks and call this first."""
        for name, (low, high) in self.bounds().items():
            value = getattr(self, name)
            require(value is None or low <= value <= high,
                    f"{name} must lie between {low:g} and {high:g} for the {self.task} task, not {value}.")

    @classmethod
    def bounds(cls) -> dict[str, tuple[float, float]]:
        """The bounds of every numeric field: :attr:`limits` of this class and the classes it extends (the nearest
        wins), shared by the CLI, the jobs and the pages because they all build this dataclass."""
        merged: dict[str, tuple[float, float]] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("limits", {}))
        names = {item.name for item in fields(cls)}
        return {name: bounds for name, bounds in merged.items() if name in names}

    def asdict(self) -> dict:
        """The parameters as a plain JSON dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "TaskParams":
        """The parameters from a plain dict (e.g. :meth:`asdict`'s, or a job's JSON); unknown keys are refused with
        the list of known ones, and so are missing (or empty) required ones and values of the wrong type."""
        known = [item.name for item in fields(cls)]
        unknown = sorted(set(data) - set(known))
        require(not unknown, f"The {cls.task} task takes no parameter {', '.join(map(str, unknown))}; it takes "
                             f"{', '.join(known)}.")
        missing = [item.name for item in fields(cls) if item.default is MISSING and item.default_factory is MISSING
                   and data.get(item.name) in (None, "")]
        require(not missing, f"The {cls.task} task needs {', '.join(missing)}.")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _coerced(name, hints[name], value) for name, value in data.items()})

    @classmethod
    def default(cls, name: str):
        """The default of the field ``name`` (what argparse offers as the flag's default)."""
        item = next(item for item in fields(cls) if item.name == name)
        return item.default if item.default is not MISSING else item.default_factory()

    @property
    def output_path(self) -> str:
        """Where the task writes its result; :class:`InputError` when it names nowhere."""
        path = getattr(self, self.output_field)
        require(bool(path), f"The {self.task} task needs an output path ({self.output_field}; the CLI's -o).")
        return str(path)


def _coerced(name: str, hint, value):
    """``value`` as the type ``hint`` wants: ints become floats where floats are wanted, a comma-separated text or a
    list becomes a tuple; anything else of the wrong type is refused."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    if value is None and type(None) in options:
        return None
    kinds = tuple(typing.get_origin(option) or option for option in options if option is not type(None))
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tuple in kinds and isinstance(value, (str, list)):
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) \
            else tuple(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise InputError(f"{name} takes {' or '.join(kind.__name__ for kind in kinds)}, not {value!r}.")
    return value


@dataclass(frozen=True, kw_only=True)
class QualityControl(TaskParams):
    """Quality control and normalisation of the tasks that start from raw counts (defaults:
    :class:`sccore.pp.PreprocessParams`'s, which explains both rules; whole-transcriptome ``obs`` columns are used
    where the file has them)."""

    min_genes: int = PreprocessParams.min_genes
    max_pct_mito: float = PreprocessParams.max_pct_mito
    min_cells: int = PreprocessParams.min_cells
    n_top_genes: int = PreprocessParams.n_top_genes
    library_size_key: str | None = None
    qc_rule: str = PreprocessParams.qc_rule
    n_mads: float = PreprocessParams.n_mads
    limits: ClassVar[Limits] = {"min_genes": (0, 100_000), "max_pct_mito": (0, 100), "min_cells": (0, 10_000_000),
                                "n_top_genes": (1, 100_000), "n_mads": (0.5, 100), "n_comps": (1, 500),
                                "seed": (0, 2**32 - 1)}

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.qc_rule in QC_RULES, f"qc_rule is one of {', '.join(QC_RULES)}, not '{self.qc_rule}'.")

    def preprocess_params(self, adata: ad.AnnData) -> PreprocessParams:
        """These filters for ``adata`` (:func:`sccore.pp.default_params`: its whole-transcriptome columns)."""
        from ..pp import default_params

        return default_params(adata, qc_rule=self.qc_rule, n_mads=self.n_mads, min_genes=self.min_genes,
                              max_pct_mito=self.max_pct_mito, min_cells=self.min_cells, n_top_genes=self.n_top_genes,
                              **({"library_size_key": self.library_size_key} if self.library_size_key else {}))


def quality_control_fields(source) -> dict:
    """The :class:`QualityControl` fields of ``source`` (a task's parameters or a
    :class:`sccore.pp.PreprocessParams`): what a task needs to reproduce the same quality control."""
    return {item.name: getattr(source, item.name) for item in fields(QualityControl)}


def open_counts(path: str, library_size_key: str | None = None) -> ad.AnnData:
    """The raw counts of the ``.h5ad`` at ``path``, validated like every file the app opens."""
    from ..io import open_dataset

    return open_dataset(path, library_size_key=library_size_key)


def write_h5ad(adata: ad.AnnData, path: str) -> None:
    """Write ``adata`` to ``path`` atomically."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(path, adata.write_h5ad, suffix=".h5ad")


def write_csv(table, path: str) -> None:
    """Write a table (without its index) to ``path`` atomically."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")
