"""sccore: single-cell embeddings, neighbours, layouts and in-silico knockouts, as a library.

The dashboard (``app.py``, ``pages/``) and the command line (``python -m sccore``) are thin front
ends over these modules; nothing here imports streamlit.
"""

import os
from pathlib import Path

# Numba (UMAP, the pictures' kernels) compiles on first use; keep the compiled code between runs.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "sccore" / "numba"))

from .errors import InputError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["InputError", "__version__"]
