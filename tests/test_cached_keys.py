"""Cache keys of the dashboard's cached functions: an array argument is hashed by every value (Streamlit's own hash
of an array of 500,000 values or more samples 100,000 of them, so two knockouts or selections that differ elsewhere
would share a cached result)."""

import importlib
import inspect
import pkgutil

import numpy as np

import dashboard
from dashboard.cached import EXACT_ARRAYS, array_digest


def test_array_digest_sees_every_value_the_dtype_and_the_shape():
    values = np.zeros(600_000, dtype=np.float32)
    changed = values.copy()
    changed[-1] = 1e-6
    assert array_digest(values) != array_digest(changed)
    assert array_digest(values) == array_digest(values.copy())
    assert array_digest(values) != array_digest(values.astype(np.float64))
    assert array_digest(values) != array_digest(values.reshape(1000, 600))


def test_every_cached_function_with_an_array_argument_hashes_it_by_every_value():
    checked = []
    for module_info in pkgutil.iter_modules(dashboard.__path__):
        module = importlib.import_module(f"dashboard.{module_info.name}")
        for name, member in vars(module).items():
            info = getattr(member, "_info", None)  # streamlit's CachedFunc
            if info is None or not hasattr(info, "hash_funcs") or info.func.__module__ != module.__name__:
                continue
            arrays = [parameter for parameter, annotation in inspect.get_annotations(info.func).items()
                      if "np.ndarray" in str(annotation) and parameter != "return" and not parameter.startswith("_")]
            if arrays:
                checked.append(name)
                assert (info.hash_funcs or {}).get(np.ndarray) is EXACT_ARRAYS[np.ndarray], (name, arrays)
    assert {"knockout_result", "placed_in_umap", "transfer_within", "expression_table", "png_data_url"} <= set(checked)
